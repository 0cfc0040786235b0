"""Launch machinery shared by every launcher: argument checks, dtype suffixes, CPU and GPU dispatch.

A launcher validates dtypes, contiguity and shapes (metadata only: no device synchronisation),
allocates outputs in the namespace of its inputs and calls `launch`, which runs the CPU build
through ctypes for NumPy arrays and the NVRTC build through CuPy for CuPy arrays. Every scalar
is passed as an explicit NumPy type (np.int64 -> long long, np.float32 -> float,
np.float64 -> double): CuPy does not check kernel arguments.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os

import numpy as np

from .. import _build
from ..backend import array_module

BLOCK = 256                                    # threads per block; kernels with shared memory assume it
SUFFIX = {np.dtype(np.complex64): "f32", np.dtype(np.complex128): "f64"}
REAL = {np.dtype(np.complex64): np.dtype(np.float32), np.dtype(np.complex128): np.dtype(np.float64)}
SYNC = os.environ.get("CUPTYCHO_SYNC") == "1"  # synchronise after each GPU launch (debugging)

i64 = np.int64


def field_dtype(name, arr):
    """The complex dtype of a field argument, or ValueError."""
    if arr.dtype not in SUFFIX:
        raise ValueError(f"{name} must be complex64 or complex128, got {arr.dtype}")
    return arr.dtype


def require(name, arr, dtype, shape=None, ndim=None):
    """Check dtype, C-contiguity and shape (or ndim) of a kernel argument."""
    if arr.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(arr.shape)}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    return arr


def output(name, out, xp, shape, dtype, zero=False):
    """`out` checked against (shape, dtype), or a new array (zeroed when `zero`)."""
    if out is None:
        return (xp.zeros if zero else xp.empty)(shape, dtype)
    return require(name, out, dtype, shape)


def _c_arg(a):
    if isinstance(a, np.ndarray):
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.int64):
        return ctypes.c_longlong(int(a))
    if isinstance(a, np.float64):
        return ctypes.c_double(float(a))
    if isinstance(a, np.float32):
        return ctypes.c_float(float(a))
    raise TypeError(f"kernel argument of type {type(a).__name__} has no C type; pass a NumPy scalar")


@functools.cache
def _cpu_function(name):
    fn = getattr(_build.cpu_library(), name)
    fn.restype = None
    return fn


@functools.cache
def _multiprocessors(device_id):
    import cupy

    return cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]


def launch(concern, name, dtype, args, *, elements=None, blocks=None):
    """Run entry `<name>_<f32|f64>` of kernels/<concern>.cu on the arguments' device.

    GPU geometry: `blocks` blocks of BLOCK threads when given (one block per item kernels),
    otherwise enough blocks for `elements` grid-stride elements, capped at 32 per SM.
    """
    fname = f"{name}_{SUFFIX[np.dtype(dtype)]}"
    xp = array_module(*[a for a in args if not isinstance(a, np.generic)])
    if xp is np:
        _cpu_function(fname)(*map(_c_arg, args))
        return
    import cupy

    device = cupy.cuda.runtime.getDevice()
    kernel = _build.cuda_module(concern, device).get_function(fname)
    if blocks is None:
        blocks = max(1, min(math.ceil(elements / BLOCK), 32 * _multiprocessors(device)))
    kernel((int(blocks),), (BLOCK,), args)
    if SYNC:
        cupy.cuda.get_current_stream().synchronize()
