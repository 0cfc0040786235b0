"""The forward model and its gradient chain on the compiled kernels (`cpu` and `cuda` backends).

One composition for both devices; only the arrays' namespace and the FFT library differ. Per
chunk of positions (MATH.md, backward chain):

    exitwave_fwd -> FFT -> [spectrum_fwd (H/n), IFFT] -> likelihood (I, loss rows, G_Psi in place)
    -> [FFT, spectrum_adj (conj H/n, dL/dz rows)] -> IFFT -> exitwave_adj (G_o, G_probe)
    -> patch_adj (G_obj) and patch_posgrad (dL/dpositions)

Brackets: transfer-function propagators only. The far field's fftshift is folded into the
likelihood's indexing, and every FFT is raw with its normalisation folded into the kernels.

On the CPU the positions are processed in chunks whose work buffer fits in cache (about
`CHUNK_BYTES`), so each pass of a kernel or an FFT reads what the previous one left in cache;
on a GPU one chunk holds the whole batch. The FFT plans and buffers are cached per shape and
reused across calls (not thread-safe: one model evaluation at a time per process).

Inputs are assumed valid (`cuptycho.api` checks them): obj (Mo, H, W), probe (K, Ny, Nx),
positions (J, 2) float64 C-contiguous, data (J, Ny, Nx) and mask (Ny, Nx) or (J, Ny, Nx) of the
field's real dtype, all in the namespace of the device.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time

import numpy as np

from . import backend as backends
from . import fft, geometry, reference
from .backend import array_module
from .launchers import exitwave, likelihood, propagate, sampling

CHUNK_BYTES = int(os.environ.get("CUPTYCHO_CHUNK_BYTES", 4 << 20))
# On a GPU one chunk held the whole batch: 15.7 GB of FFT buffer at 10k x 3 modes x 256^2, and a
# batched FFT of 1.97e9 elements, near the 2^31 the plan call counts in. Bounded now by bytes and by
# elements per plan.
GPU_CHUNK_BYTES = int(os.environ.get("CUPTYCHO_GPU_CHUNK_BYTES", 1 << 31))
FFT_PLAN_ELEMENTS = 2 ** 31 - 1


def chunk_size(device, n_pos, bytes_per_position, elements_per_position=1):
    """Positions per chunk: on a GPU as many as fit GPU_CHUNK_BYTES of work buffer and FFT_PLAN_ELEMENTS
    per batched plan; on the CPU about CHUNK_BYTES, rounded to a multiple of the thread count (kernels
    parallel over positions then split evenly)."""
    if device == "cuda":
        fit = min(GPU_CHUNK_BYTES // bytes_per_position, FFT_PLAN_ELEMENTS // elements_per_position)
        return int(min(n_pos, max(1, fit)))
    threads = fft.cpu_threads()
    fit = max(1, CHUNK_BYTES // bytes_per_position)
    return int(min(n_pos, max(threads, fit // threads * threads)))


def _transfer(xp, kind, buf_shape, z, wavelength, pixel_size, dtype, z_direction=(1.0, 0.0)):
    """`_device_transfer` for the current GPU (its cache is keyed by the device)."""
    return _device_transfer(xp, backends.device_id("numpy" if xp is np else "cuda"), kind, buf_shape, z, wavelength,
                            pixel_size, dtype, tuple(float(v) for v in z_direction))


@functools.lru_cache(maxsize=4)
def _device_transfer(xp, gpu, kind, buf_shape, z, wavelength, pixel_size, dtype, z_direction):
    """H_z / n (n = pixels of the padded grid, the raw-FFT normalisation) and the phase derivative along
    z_direction (kz for dL/dz) on the device.

    Cached (read-only results): an engine evaluates the model per minibatch, a sequential one per
    position, with the same geometry."""
    h, _ = geometry.transfer_function(kind, buf_shape, z, wavelength, pixel_size)
    kz = geometry.phase_derivative(kind, buf_shape, z, wavelength, pixel_size, z_direction)
    return xp.asarray((h / (buf_shape[0] * buf_shape[1])).astype(dtype)), xp.asarray(kz)


def _scratch(device, shape, dtype):
    """A reusable device array of `shape` (grad patches, spectra), one per shape, dtype and GPU."""
    return _device_scratch(device, backends.device_id(device), tuple(shape), np.dtype(dtype))


def _make_scratch(device, gpu, shape, dtype):
    xp = np if device == "cpu" else __import__("cupy")
    return xp.empty(shape, dtype)


_device_scratch = fft.BufferCache(_make_scratch, lambda a: a.nbytes, fft.CACHE_BYTES)


def release_buffers():
    """Free the cached FFT plans, scratch buffers and transfer functions (every device), and on a GPU return
    CuPy's pooled blocks to the driver: the engine calls it after its set-up (whose full-batch forward would
    otherwise pin its largest buffers for the whole run) and when a run ends. The next evaluation makes
    what it needs again (FFTW's plans from the stored wisdom)."""
    fft._plan.cache_clear()
    _device_scratch.cache_clear()
    _device_transfer.cache_clear()
    cupy = backends.cupy_module() if "cupy" in sys.modules else None      # a process that never used CuPy: none
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()


@functools.cache
def nvtx_module():
    """The `nvtx` package when installed (its ranges show cuptycho's stages in Nsight), else None."""
    try:
        import nvtx
    except ImportError:
        return None
    return nvtx


@contextlib.contextmanager
def stage(profile, name, device):
    """One named stage of a step: an NVTX range on the GPU (when `nvtx` is installed), and with a
    `profile` dict its wall time added to profile[name] (synchronising the GPU first and last;
    without one nothing synchronises)."""
    nv = nvtx_module() if device == "cuda" else None
    if nv is not None:
        nv.push_range(message=name, domain="cuptycho")
    try:
        if profile is None:
            yield
            return
        sync = __import__("cupy").cuda.get_current_stream().synchronize if device == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        yield
        sync()
        profile[name] = profile.get(name, 0.0) + time.perf_counter() - t0
    finally:
        if nv is not None:
            nv.pop_range(domain="cuptycho")


STAGES = ("exitwave", "fft", "propagate", "likelihood", "exitwave_adj", "scatter", "posgrad")


class _Run:
    """The per-call geometry shared by `forward` and `loss_and_grad`."""

    def __init__(self, device, obj, probe, positions, propagator, z, wavelength, pixel_size, padding,
                 z_direction=(1.0, 0.0)):
        self.device, self.xp = device, array_module(obj)
        self.dtype = obj.dtype
        self.n_obj, self.n_probe = obj.shape[0], probe.shape[0]
        self.patch = probe.shape[-2:]
        self.padding = tuple(padding)
        self.buf = (self.patch[0] + 2 * self.padding[0], self.patch[1] + 2 * self.padding[1])
        self.n = self.buf[0] * self.buf[1]
        self.farfield = propagator == "farfield"
        self.library = fft.cpu_library() if device == "cpu" else "cufft"
        if self.farfield:
            self.shift, self.intensity_scale = (self.patch[0] // 2, self.patch[1] // 2), 1.0 / self.n
        else:
            self.shift, self.intensity_scale = (0, 0), 1.0
            self.h, self.kz = _transfer(self.xp, propagator, self.buf, float(z), float(wavelength),
                                        geometry.pixel_pair(pixel_size), np.dtype(self.dtype), z_direction)
        n_pos = positions.shape[0]
        per_position = self.n_obj * self.n_probe * self.n * np.dtype(self.dtype).itemsize
        self.chunk = chunk_size(device, n_pos, per_position, self.n_obj * self.n_probe * self.n)
        self.chunks = [(j0, min(n_pos, j0 + self.chunk)) for j0 in range(0, n_pos, self.chunk)]

    def to_detector(self, obj, probe, positions, j0, j1, profile=None, keep_spectrum=False):
        """Exit waves of positions j0:j1, propagated to the detector: (buffer, plan, spectrum).

        The forward spectrum H F psi is kept (for dL/dz) only when `keep_spectrum`."""
        shape = (j1 - j0, self.n_obj, self.n_probe, *self.buf)
        plan = fft.plan(self.device, self.library, shape, self.dtype)
        with stage(profile, "exitwave", self.device):
            waves = exitwave.exitwave_fwd(obj, probe, positions[j0:j1], self.padding, out=plan.buffer)
        with stage(profile, "fft", self.device):
            waves = plan.forward(waves)
        spectrum = None
        if not self.farfield:
            spectrum = _scratch(self.device, shape, self.dtype) if keep_spectrum else None
            with stage(profile, "propagate", self.device):
                propagate.spectrum_fwd(waves, self.h, spectrum_out=spectrum)
            with stage(profile, "fft", self.device):
                waves = plan.inverse(waves)
        return waves, plan, spectrum


def forward(device, obj, probe, positions, *, propagator, z=None, wavelength=None, pixel_size=None,
            padding=(0, 0), scale=None, background=None):
    """Modelled intensities (J, Ny, Nx) in detector order: scale_j I_coh + background with a scale (J,)
    or a background (Ny, Nx) or (J, Ny, Nx) (`reference.detector_likelihood`'s model)."""
    run = _Run(device, obj, probe, positions, propagator, z, wavelength, pixel_size, padding)
    out = run.xp.empty((positions.shape[0], *run.patch), reference.real_dtype(run.dtype))
    for j0, j1 in run.chunks:
        waves, _, _ = run.to_detector(obj, probe, positions, j0, j1)
        likelihood.intensity(waves, out[j0:j1], padding=run.padding, shift=run.shift,
                             intensity_scale=run.intensity_scale)
    if scale is not None:
        out *= scale[:, None, None]
    if background is not None:
        out += background
    return out


GRADIENTS = frozenset({"object", "probe", "positions", "z", "scale", "background"})


def loss_and_grad(device, obj, probe, positions, data, mask, *, loss, propagator, z=None, wavelength=None,
                  pixel_size=None, padding=(0, 0), profile=None, wanted=GRADIENTS, scale=None, background=None,
                  z_direction=(1.0, 0.0), n_total=None, value_on_device=False):
    """(loss, grads) exactly as `reference.loss_and_grad`, computed by the kernels.

    `wanted`: the gradients to return; leaving out "positions" skips their reduction and leaving
    out "z" skips keeping the forward spectrum and the dL/dz reduction (object and probe
    gradients come from one fused kernel and are always computed). scale (J,) and background
    (Ny, Nx) or (J, Ny, Nx): the detector model (`likelihood.detector_likelihood`); "scale" and
    "background" gradients come back for those given (and wanted). z_direction = (dz, ds): the "z"
    gradient is the derivative along z + dz t and pixel_size (1 + ds t) (`geometry.phase_derivative`).
    n_total: the patterns the loss averages over (default J: more when these are one rank's part of a batch).
    value_on_device: the loss as a 0-d array where it was summed, not a float (no host round trip per call:
    the sequential PIE engines evaluate once per position).

    `profile`: a dict to which the seconds spent in each of `STAGES` are added; the GPU is then
    synchronised at stage boundaries (exact attribution, slower). None: no synchronisation.
    """
    run = _Run(device, obj, probe, positions, propagator, z, wavelength, pixel_size, padding, z_direction)
    xp, n_pos = run.xp, positions.shape[0]
    grad_obj = xp.zeros_like(obj)
    grad_probe = xp.zeros_like(probe)
    grad_pos = xp.empty((n_pos, 2), np.float64)
    loss_rows = xp.zeros((n_pos, run.patch[0]), np.float64)
    z_grad = "z" in wanted and not run.farfield
    dz_rows = xp.zeros((n_pos, run.n_obj * run.n_probe * run.buf[0]), np.float64) if z_grad else None
    detector = scale is not None or background is not None
    detector_grads = tuple(g for g, given in (("scale", scale), ("background", background))
                           if given is not None and g in wanted)
    scale_rows = xp.zeros((n_pos, run.patch[0]), np.float64) if "scale" in detector_grads else None
    # dL/db: per pattern, the kernel's dl_di itself; for one shared map, each chunk's summed into grad_b
    per_pattern = background is not None and background.ndim == 3
    dl_di = xp.empty(data.shape, data.dtype) if "background" in detector_grads and per_pattern else None
    grad_b = xp.zeros(data.shape[1:], data.dtype) if "background" in detector_grads and not per_pattern else None
    n_total = n_pos if n_total is None else n_total
    window = {"loss": loss, "n_total": n_total, "padding": run.padding, "shift": run.shift,
              "intensity_scale": run.intensity_scale}
    for j0, j1 in run.chunks:
        pos = positions[j0:j1]
        waves, plan, spectrum = run.to_detector(obj, probe, positions, j0, j1, profile, keep_spectrum=z_grad)
        with stage(profile, "likelihood", device):
            chunk_mask = mask if mask.ndim == 2 else mask[j0:j1]
            if detector:
                chunk_dl = dl_di[j0:j1] if dl_di is not None else \
                    _scratch(device, (j1 - j0, *data.shape[1:]), data.dtype) if grad_b is not None else None
                likelihood.detector_likelihood(
                    waves, data[j0:j1], chunk_mask, None if scale is None else scale[j0:j1],
                    background[j0:j1] if per_pattern else background, loss_rows[j0:j1],
                    None if scale_rows is None else scale_rows[j0:j1], chunk_dl, grads=detector_grads, **window)
                if grad_b is not None:
                    grad_b += chunk_dl.sum(axis=0)
            else:
                likelihood.likelihood(waves, data[j0:j1], chunk_mask, loss_rows[j0:j1], **window)
        if not run.farfield:
            with stage(profile, "fft", device):
                waves = plan.forward(waves)
            with stage(profile, "propagate", device):
                propagate.spectrum_adj(waves, run.h, run.kz, spectrum=spectrum,
                                       dz_rows=None if dz_rows is None else dz_rows[j0:j1])
        with stage(profile, "fft", device):
            waves = plan.inverse(waves)
        grad_patches = _scratch(device, (j1 - j0, run.n_obj, *run.patch), run.dtype)
        with stage(profile, "exitwave_adj", device):
            exitwave.exitwave_adj(obj, probe, pos, waves, run.padding, grad_patches=grad_patches,
                                  grad_probe=grad_probe)
        with stage(profile, "scatter", device):
            sampling.patch_adj(grad_patches, pos, obj.shape, out=grad_obj)
        if "positions" in wanted:
            with stage(profile, "posgrad", device):
                sampling.patch_posgrad(obj, pos, grad_patches, out=grad_pos[j0:j1])
    grads = {"object": grad_obj, "probe": grad_probe}
    if "positions" in wanted:
        grads["positions"] = grad_pos
    if dz_rows is not None:
        grads["z"] = float(dz_rows.sum())
    if scale_rows is not None:
        grads["scale"] = scale_rows.sum(axis=1)
    if "background" in detector_grads:
        grads["background"] = dl_di if per_pattern else grad_b
    value = loss_rows.sum() / n_total
    return (value if value_on_device else float(value)), grads
