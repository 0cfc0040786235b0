"""Launch machinery shared by every launcher: argument checks, dtype suffixes, CPU and GPU dispatch.

A launcher validates dtypes, contiguity and shapes (metadata only: no device synchronisation),
allocates outputs in the namespace of its inputs and calls `launch`, which runs the CPU build
through ctypes for NumPy arrays and the NVRTC build through CuPy for CuPy arrays. Every scalar
is passed as an explicit NumPy type (np.int64 -> long long, np.float32 -> float,
np.float64 -> double): CuPy does not check kernel arguments. `None` is a NULL pointer (an optional
array argument the kernel tests for): ctypes.c_void_p(None) on the CPU, 8 zero bytes by value
(np.uint64(0)) on the GPU, which every CuPy version passes as a scalar.
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
# entry suffix of every dtype `launch` accepts: the complex field dtypes (SUFFIX) and, for
# real-typed kernels (adam.cu), the matching real dtypes
ENTRY_SUFFIX = {**SUFFIX, **{REAL[c]: s for c, s in SUFFIX.items()}}
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


# the C type of each kind of launcher argument: arrays (and None, a null pointer) by address, NumPy scalars by value
_C_TYPES = {np.ndarray: ctypes.c_void_p, type(None): ctypes.c_void_p, np.int64: ctypes.c_longlong,
            np.float64: ctypes.c_double, np.float32: ctypes.c_float}


def _c_type(a):
    try:
        return _C_TYPES[type(a)]
    except KeyError:
        raise TypeError(f"kernel argument of type {type(a).__name__} has no C type; pass a NumPy scalar") from None


@functools.cache
def _cpu_function(name):
    fn = getattr(_build.cpu_library(), name)
    fn.restype = None
    return fn


def _cpu_call(name, args):
    """Call entry `name` of the CPU library. Its argtypes are set from the first call's argument kinds (a
    launcher passes the same kinds every time), so ctypes converts addresses and scalars in C, without a
    ctypes object per argument per call (a sequential PIE step makes ~100 of them)."""
    fn = _cpu_function(name)
    kinds = [_c_type(a) for a in args]
    if fn.argtypes is None:
        fn.argtypes = kinds
    elif list(fn.argtypes) != kinds:
        raise TypeError(f"{name}: argument kinds {[k.__name__ for k in kinds]} differ from an earlier call's "
                        f"{[k.__name__ for k in fn.argtypes]}")
    fn(*[a.ctypes.data if type(a) is np.ndarray else a for a in args])


@functools.cache
def _multiprocessors(device_id):
    import cupy

    return cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]


def grid_threads() -> int:
    """The threads of the largest grid `launch` starts on the current GPU (32 blocks of BLOCK per SM)."""
    import cupy

    return 32 * BLOCK * _multiprocessors(cupy.cuda.runtime.getDevice())


def launch(concern, name, dtype, args, *, elements=None, blocks=None, rows=None):
    """Run entry `<name>_<f32|f64>` of kernels/<concern>.cu on the arguments' device.

    `dtype` picks the suffix: complex64 or float32 -> f32, complex128 or float64 -> f64.

    GPU geometry: `blocks` blocks of BLOCK threads when given (one block per item kernels); one block
    per row for `rows` (kernels whose rows sum in the block, CPT_FOR_ROW_SUMS), capped at 32 per SM;
    otherwise enough blocks for `elements` grid-stride elements, capped at 32 per SM.
    """
    fname = f"{name}_{ENTRY_SUFFIX[np.dtype(dtype)]}"
    xp = array_module(*[a for a in args if a is not None and not isinstance(a, np.generic)])
    if xp is np:
        _cpu_call(fname, args)
        return
    import cupy

    device = cupy.cuda.runtime.getDevice()
    kernel = _build.cuda_module(concern, device).get_function(fname)
    if blocks is None:
        wanted = rows if rows is not None else math.ceil(elements / BLOCK)
        blocks = max(1, min(wanted, 32 * _multiprocessors(device)))
    kernel((int(blocks),), (BLOCK,), tuple(np.uint64(0) if a is None else a for a in args))
    if SYNC:
        cupy.cuda.get_current_stream().synchronize()
