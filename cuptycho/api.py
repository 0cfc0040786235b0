"""The public functional API: `forward`, `loss_and_grad` and `warmup`.

These check their input once, pick a backend and run the model. Shapes follow MATH.md:
obj (Mo, H, W) or (H, W), probe (K, Ny, Nx) or (Ny, Nx), positions (J, 2) as (y, x) of each
patch's top-left corner in object pixels. Gradients come back in the caller's shapes and use
the convention g = dL/dRe + i dL/dIm.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import _build, geometry, ops, reference, validation
from .backend import array_module, cupy_module, resolve, to_device


def _like(template, arr):
    """`arr` moved to the namespace of `template` (results come back where the inputs live)."""
    return to_device("cuda" if array_module(template) is not np else "numpy", arr)


def _prepare(obj, probe, positions, propagator, z, wavelength, pixel_size, padding, backend_name):
    validation.backend(backend_name)
    device = resolve(backend_name)
    obj3 = validation.field("obj", obj)
    probe3 = validation.field("probe", probe, dtype=obj3.dtype)
    patch_shape = probe3.shape[-2:]
    pos = validation.positions(positions, patch_shape, obj3.shape)
    prop_args = validation.propagation(propagator, z, wavelength, pixel_size, padding)
    if propagator == "angular_spectrum":
        padded = tuple(n + 2 * p for n, p in zip(patch_shape, prop_args["padding"]))
        limit = geometry.asm_critical_distance(padded, prop_args["wavelength"], prop_args["pixel_size"])
        if abs(prop_args["z"]) > limit:
            warnings.warn(f"|z| = {abs(prop_args['z']):.4g} m exceeds N dx^2 / lambda = {limit:.4g} m: the "
                          "angular-spectrum transfer function is undersampled; increase padding",
                          RuntimeWarning, stacklevel=3)
    arrays = [to_device(device, a) for a in (obj3, probe3, pos)]
    return device, arrays, prop_args


def forward(obj, probe, positions, *, propagator="farfield", z=None, wavelength=None, pixel_size=None,
            padding=0, scale=None, background=None, backend="auto"):
    """Modelled diffraction intensities.

    Parameters
    ----------
    obj : (Mo, H, W) or (H, W) complex64 or complex128
        Object transmission, Mo incoherent object modes.
    probe : (K, Ny, Nx) or (Ny, Nx), same dtype as obj
        Mutually incoherent probe modes.
    positions : (J, 2) real
        (y, x) of each patch's top-left corner in object pixels, fractional (bilinear sampling);
        0 <= y <= H - Ny and 0 <= x <= W - Nx.
    propagator : {"farfield", "angular_spectrum", "fresnel"}
        farfield: fftshifted unitary FFT; the other two propagate a distance z (metres) with the
        transfer function on a grid of sample-plane pixel size `pixel_size` (metres, scalar or
        (dy, dx)) at `wavelength` (metres), after `padding` zero pixels on each side.
    backend : {"auto", "cpu", "cuda", "numpy"}
        "cpu": the kernels in kernels/*.cu built with OpenMP; "cuda": the same kernels through
        CuPy/NVRTC; "numpy": the reference; "auto": cuda if a device answers, else cpu, else
        numpy with a warning. Results come back in the namespace (NumPy or CuPy) of the inputs.
    scale : (J,) positive, optional
        An intensity factor per pattern (beam flux, exposure): I_j = scale_j * I_coh,j.
    background : (Ny, Nx) or (J, Ny, Nx) non-negative, optional
        Counts added to every modelled pattern (one map, or one per pattern), in detector order
        (zero frequency at (Ny//2, Nx//2) for the far field): I = scale_j * I_coh + background.

    Returns
    -------
    intensities : (J, Ny, Nx) real, the precision of obj
    """
    device, (obj3, probe3, pos), prop_args = _prepare(obj, probe, positions, propagator, z, wavelength,
                                                      pixel_size, padding, backend)
    detector = _detector(device, obj3, pos, probe3, scale, background)
    out = ops.forward(device, obj3, probe3, pos, propagator=propagator, **prop_args, **detector)
    return _like(obj, out)


def _detector(device, obj3, pos, probe3, scale, background):
    """The detector model's checked scale and background on the device, as keywords of ops."""
    real, n_pos, patch_shape = reference.real_dtype(obj3.dtype), pos.shape[0], probe3.shape[-2:]
    s = validation.detector_scale(scale, n_pos, real)
    b = validation.background(background, n_pos, patch_shape, real)
    return {"scale": None if s is None else to_device(device, s),
            "background": None if b is None else to_device(device, b)}


def loss_and_grad(obj, probe, positions, data, *, loss="gaussian", mask=None, propagator="farfield", z=None,
                  wavelength=None, pixel_size=None, padding=0, scale=None, background=None, backend="auto"):
    """Loss L = (1/J) sum over patterns and pixels of mask * l(I, data), and its gradients.

    Parameters are those of `forward`, plus
    data : (J, Ny, Nx) real, non-negative measured intensities (photon counts), zero frequency at
        (Ny//2, Nx//2) for the far field.
    loss : {"gaussian", "poisson", "intensity", "weighted"}, see MATH.md.
    mask : (Ny, Nx) or (J, Ny, Nx) bool or non-negative weights, optional (1 = valid pixel).
    scale, background : the detector model of `forward` (I = scale_j I_coh + background), optional.

    Returns
    -------
    loss : float
    grads : dict
        "object" and "probe" in the shapes given, "positions" (J, 2) in the positions' float
        dtype (float64 for integer input), "z" (float) for z-dependent propagators, and
        "scale" (J,) and "background" (its shape) when they are given, in the field's real dtype.
    """
    device, (obj3, probe3, pos), prop_args = _prepare(obj, probe, positions, propagator, z, wavelength,
                                                      pixel_size, padding, backend)
    validation.loss_name(loss)
    real = reference.real_dtype(obj3.dtype)
    n_pos, patch_shape = pos.shape[0], probe3.shape[-2:]
    d = to_device(device, validation.data(data, n_pos, patch_shape, real))
    w = validation.mask(mask, n_pos, patch_shape, real)
    xp = array_module(obj3)
    w = xp.ones(patch_shape, real) if w is None else to_device(device, w)
    detector = _detector(device, obj3, pos, probe3, scale, background)
    value, grads = ops.evaluate(device, obj3, probe3, pos, d, w, loss=loss, propagator=propagator, **prop_args,
                                **detector)
    for name in ("scale", "background"):
        if name in grads:
            grads[name] = _like(obj, grads[name].astype(real, copy=False))
    grads["object"] = _like(obj, grads["object"].reshape(np.shape(obj)))
    grads["probe"] = _like(obj, grads["probe"].reshape(np.shape(probe)))
    # positions.dtype first: np.asarray of CuPy positions would raise (no implicit device -> host copy)
    pos_dtype = np.dtype(positions.dtype) if hasattr(positions, "dtype") else np.asarray(positions).dtype
    grads["positions"] = _like(positions, grads["positions"]).astype(
        pos_dtype if np.issubdtype(pos_dtype, np.floating) else np.float64)
    return value, grads


def warmup(backend: str = "auto") -> dict:
    """Compile (or load from the cache) the kernels of `backend` now, so that the first reconstruction or
    gradient of a process does not pay for it: the CPU library (a minute the first time on a machine,
    then a load), or every CUDA module through NVRTC on the current device. FFT plans need each run's
    shapes: FFTW's are kept in the cache folder once measured (`cuptycho.fft`), CuPy's per process.
    Returns {"backend", "compiled" (what was built or loaded), "seconds"}; the command line's
    ``cuptycho warmup`` prints it."""
    import time

    device = resolve(backend)
    t0 = time.perf_counter()
    compiled = []
    if device == "cpu":
        compiled.append(str(_build.ensure_cpu_library()))
        _build.cpu_library()
    elif device == "cuda":
        current = cupy_module().cuda.Device().id
        for source in _build.sources():
            if source.suffix == ".cu":
                _build.cuda_module(source.stem, current).compile()
                compiled.append(f"{source.name} on device {current}")
    return {"backend": device, "compiled": compiled, "seconds": time.perf_counter() - t0}
