"""Array namespaces and devices: which of numpy / cupy an array lives in, whether a GPU answers, and
moving arrays between host and device."""
from __future__ import annotations

import functools

import numpy as np


@functools.cache
def cupy_module():
    """The cupy module, or None when it is not installed or cannot load its CUDA runtime."""
    try:
        import cupy
    except Exception:
        return None
    return cupy


def array_module(*arrays):
    """The array namespace of `arrays`: ``cupy`` if any is a CuPy array, else ``numpy``."""
    cp = cupy_module()
    return np if cp is None else cp.get_array_module(*arrays)


@functools.cache
def gpu_status() -> tuple[bool, str]:
    """(True, "") when a CUDA device answers and can run cuptycho, else (False, why).

    `import cupy` succeeds on machines without a GPU, so this touches the device; a device that answers
    is then asked to compile and run one tiny kernel and one tiny FFT, because a pip-installed CuPy may
    lack the NVRTC and cuFFT libraries and would otherwise fail at a run's first launch.
    """
    cp = cupy_module()
    if cp is None:
        return False, "CuPy is not installed (pip install 'cuptycho[cuda]')"
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            return False, "CuPy found no CUDA device"
        cp.cuda.Device(0).compute_capability
    except Exception as err:                       # no driver, no device, broken runtime
        return False, f"no CUDA device answers ({type(err).__name__}: {err})"
    try:                                           # what a run needs beyond the driver: NVRTC and cuFFT
        x = cp.zeros(2, dtype=cp.float32)
        cp.RawKernel(_PROBE_KERNEL, "cuptycho_probe")((1,), (1,), (x,))
        cp.fft.fft2(cp.zeros((2, 2), dtype=cp.complex64))
        cp.cuda.Device(0).synchronize()
    except Exception as err:                       # e.g. a pip-only CuPy without libnvrtc / libcufft
        return False, (f"{GPU_BROKEN} ({type(err).__name__}: {err}); install the CUDA libraries CuPy loads: "
                       "pip install 'cupy-cuda12x[ctk]' (CuPy >= 14) or the nvidia-cuda-nvrtc-cu12 and "
                       "nvidia-cufft-cu12 wheels, or a CUDA toolkit")
    return True, ""


GPU_BROKEN = "a CUDA device answers but compiling a kernel (NVRTC) or an FFT (cuFFT) failed"
_PROBE_KERNEL = 'extern "C" __global__ void cuptycho_probe(float* x) { x[threadIdx.x] = 1.0f; }'


DEVICES = ("numpy", "cpu", "cuda")


def device_id(device: str) -> int:
    """The current CUDA device's id for 'cuda' (`cupy.cuda.Device().id`: what `Device(1).use()` changes),
    0 otherwise: part of the key of every cache of device buffers, plans and transfer functions, so
    that a process that switches GPUs never gets another device's memory."""
    return int(cupy_module().cuda.Device().id) if device == "cuda" else 0


def resolve(name: str) -> str:
    """The device that runs backend `name`: 'numpy' (reference), 'cpu' (OpenMP kernels) or 'cuda'.

    "auto" picks cuda when a device answers and runs a kernel and an FFT (a warning names why when it
    answers but cannot), else cpu when the kernels compile, else numpy with a warning naming why; an
    explicit "cpu" or "cuda" that cannot run is a ValueError saying why.
    """
    import warnings

    from . import _build

    if name == "numpy":
        return "numpy"
    if name == "cuda":
        ok, why = gpu_status()
        if not ok:
            raise ValueError(f"backend 'cuda' is not available: {why}")
        return "cuda"
    if name == "cpu":
        ok, why = _build.cpu_available()
        if not ok:
            raise ValueError(f"backend 'cpu' is not available: {why}")
        return "cpu"
    if name != "auto":
        raise ValueError(f"backend must be one of ('auto', {', '.join(map(repr, DEVICES))}), got {name!r}")
    gpu_ok, gpu_why = gpu_status()
    if gpu_ok:
        return "cuda"
    if gpu_why.startswith(GPU_BROKEN):            # a GPU that cannot run us is worth a word; no GPU is not
        warnings.warn(f"backend 'auto' does not use the GPU: {gpu_why}", RuntimeWarning, stacklevel=3)
    cpu_ok, cpu_why = _build.cpu_available()
    if cpu_ok:
        return "cpu"
    warnings.warn(f"cuptycho runs on the slow NumPy reference: no GPU ({gpu_why}) and the CPU kernels "
                  f"are unavailable ({cpu_why.splitlines()[0] if cpu_why else ''})", RuntimeWarning, stacklevel=3)
    return "numpy"


def is_streamed(arr) -> bool:
    """Whether `arr` is an array whose rows are read from a file on demand (`cuptycho.patterns`)."""
    return getattr(arr, "streamed", False) is True


def to_host(arr):
    """A NumPy array from a NumPy or CuPy array (or anything np.asarray takes)."""
    return arr.get() if array_module(arr) is not np else np.asarray(arr)


def to_device(device: str, arr):
    """`arr` in the namespace `device` computes in: CuPy for 'cuda', NumPy otherwise (copies only if needed)."""
    if device == "cuda":
        return cupy_module().asarray(arr)
    return arr.get() if array_module(arr) is not np else np.asarray(arr)
