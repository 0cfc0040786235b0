"""Array namespaces and devices: which of numpy / cupy an array lives in, and whether a GPU answers."""
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
    """(True, "") when a CUDA device actually answers, else (False, why).

    `import cupy` succeeds on machines without a GPU, so this touches the device.
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
    return True, ""
