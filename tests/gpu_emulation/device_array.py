"""A strict stand-in for CuPy's arrays: device memory is host memory, but the rules are CuPy's.

- `np.asarray(device_array)` (any implicit conversion to NumPy) raises TypeError, as in CuPy;
  `.get()` / `cupy.asnumpy` copy to the host explicitly.
- Mixing a NumPy array with a device array in a function, an operator or a kernel launch raises
  TypeError; NumPy and Python scalars are fine. A host array may be copied into a whole device
  array (`a[...] = h`), not into part of one.
- Functions and reductions return device arrays (0-d for a reduction to one value), never NumPy
  scalars; `float()` / `int()` / `bool()` / `.item()` bring one value to the host.
- NumPy functions applied to device arrays (`np.sum(a)`) dispatch to the stand-in, as CuPy's
  __array_function__ does; FFTs keep single precision, as cuFFT does.
- Every array's memory is counted: `memory_pool().used_bytes()` now, `.high_water()` since the
  last reset, for the memory plan's comparisons.
"""
from __future__ import annotations

import functools
import threading
import weakref

import numpy as np
import scipy.fft

# device -> host transfers (a GPU synchronises for each): get, asnumpy, float(), int(), bool(), item(), tolist()
transfers = {"to_host": 0, "to_device": 0}     # and host -> device: asarray / array of a host array, setitem


def _to_host():
    transfers["to_host"] += 1


_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


class MemoryPool:
    """Bytes held by live device arrays, and their high-water mark."""

    def __init__(self):
        self._lock = threading.Lock()
        self._used = 0
        self._peak = 0

    def _allocate(self, array: np.ndarray):
        n = int(array.nbytes)
        with self._lock:
            self._used += n
            self._peak = max(self._peak, self._used)
        weakref.finalize(array, self._release, n)

    def _release(self, n):
        with self._lock:
            self._used -= n

    def used_bytes(self):
        return self._used

    def total_bytes(self):
        return self._used

    def high_water(self):
        return self._peak

    def reset_high_water(self):
        with self._lock:
            self._peak = self._used

    def free_all_blocks(self):
        pass

    def set_limit(self, size=None, fraction=None):
        pass


_pool = MemoryPool()


def memory_pool() -> MemoryPool:
    return _pool


def _owns(a: np.ndarray) -> bool:
    return a.base is None


def wrap(a):
    """A device array around the NumPy array `a` (which the stand-in then owns); NumPy scalars become
    0-d device arrays; tuples and lists are wrapped item by item; anything else is returned."""
    if isinstance(a, np.ndarray):
        out = object.__new__(ndarray)
        out._a = a
        if _owns(a) and a.nbytes:
            _pool._allocate(a)
        return out
    if isinstance(a, np.generic):
        return wrap(np.asarray(a))
    if isinstance(a, tuple):
        return tuple(wrap(x) for x in a)
    if isinstance(a, list):
        return [wrap(x) for x in a]
    return a


def unwrap(x):
    """The NumPy array inside a device array; TypeError for a NumPy array (CuPy refuses host arrays)."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    if isinstance(x, (tuple, list)):
        return type(x)(unwrap(v) for v in x)
    return x


def _unwrap_kwargs(kwargs):
    return {k: unwrap(v) for k, v in kwargs.items()}


def strict(func):
    """`func` (a NumPy function) on device arrays: host arrays refused, results on the device."""
    @functools.wraps(func)
    def call(*args, **kwargs):
        return wrap(func(*unwrap(args), **_unwrap_kwargs(kwargs)))
    return call


class _Pointer:
    def __init__(self, a):
        self.ptr = a.ctypes.data
        self.device_id = 0


# ndarray methods CuPy has, run by NumPy's and returning device arrays (the value-returning ones,
# item and tolist, are defined below)
_METHODS = frozenset("""all any argmax argmin argsort astype clip conj conjugate copy cumsum diagonal dot fill
flatten max mean min nonzero prod ravel repeat reshape round sort squeeze std sum swapaxes take trace transpose
var view""".split())


class ndarray:
    """A device array. Construct with `cupy.asarray`, `cupy.zeros`, ...; `.get()` copies it to the host."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, order="C"):
        self._a = np.empty(shape, dtype, order=order)
        _pool._allocate(self._a)

    # -- the host boundary ------------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None):
        _to_host()
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        self._a[...] = arr

    def __copy__(self):
        return wrap(self._a.copy())

    def __deepcopy__(self, memo):                  # a device copy, counted like any other
        return wrap(self._a.copy())

    def __reduce__(self):                          # pickles as its host copy, loads onto the device
        return asarray, (self._a.copy(),)

    def item(self, *args):
        _to_host()
        return self._a.item(*args)

    def tolist(self):
        _to_host()
        return self._a.tolist()

    def __float__(self):
        _to_host()
        return float(self._a)

    def __int__(self):
        _to_host()
        return int(self._a)

    def __complex__(self):
        _to_host()
        return complex(self._a)

    def __bool__(self):
        _to_host()
        return bool(self._a)

    def __index__(self):
        _to_host()
        return self._a.__index__()

    def __repr__(self):
        return "device " + repr(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # -- metadata -------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: wrap(self._a.T))
    data = property(lambda self: _Pointer(self._a))
    device = property(lambda self: Device(0))
    base = property(lambda self: None if self._a.base is None else wrap(self._a.base))

    @property
    def real(self):
        return wrap(self._a.real)

    @real.setter
    def real(self, value):
        self._a.real = unwrap(value)

    @property
    def imag(self):
        return wrap(self._a.imag)

    @imag.setter
    def imag(self, value):
        self._a.imag = unwrap(value)

    def __getattr__(self, name):
        if name in _METHODS:
            method = getattr(self._a, name)
            return lambda *args, **kwargs: wrap(method(*unwrap(args), **_unwrap_kwargs(kwargs)))
        raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")

    # -- indexing -------------------------------------------------------------------------------
    @staticmethod
    def _key(key):
        if isinstance(key, tuple):
            return tuple(ndarray._key(k) for k in key)
        if isinstance(key, ndarray):
            return key._a
        return key        # ints, slices, None, Ellipsis, lists, NumPy index arrays (CuPy copies them over)

    def __getitem__(self, key):
        return wrap(self._a[self._key(key)])

    def __setitem__(self, key, value):
        # CuPy copies a host array over only into the whole array (a[:] = h, a[...] = h: cupy#2079); into
        # part of one it is refused like any other fill with a non-scalar host array
        if isinstance(value, np.ndarray) and value.ndim > 0 and not _whole(key):
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        if isinstance(value, np.ndarray):
            transfers["to_device"] += 1
        self._a[self._key(key)] = value._a if isinstance(value, ndarray) else value

    # -- arithmetic: NumPy's ufuncs, on device arrays only ----------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*unwrap(inputs), **_unwrap_kwargs(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return wrap(func(*unwrap(args), **_unwrap_kwargs(kwargs)))


def _whole(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return all(k is Ellipsis or k == slice(None) for k in keys)


def _binary(ufunc, reflected=False, inplace=False):
    def op(self, other):
        if inplace:
            return ufunc(self, other, out=(self,))
        return ufunc(other, self) if reflected else ufunc(self, other)
    return op


for _name, _ufunc in dict(add=np.add, sub=np.subtract, mul=np.multiply, truediv=np.true_divide,
                          floordiv=np.floor_divide, mod=np.remainder, pow=np.power, matmul=np.matmul,
                          and_=np.bitwise_and, or_=np.bitwise_or, xor=np.bitwise_xor,
                          lshift=np.left_shift, rshift=np.right_shift).items():
    _n = _name.rstrip("_")
    setattr(ndarray, f"__{_n}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_n}__", _binary(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_n}__", _binary(_ufunc, inplace=True))
for _name, _ufunc in dict(eq=np.equal, ne=np.not_equal, lt=np.less, le=np.less_equal, gt=np.greater,
                          ge=np.greater_equal).items():
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
ndarray.__neg__ = lambda self: np.negative(self)
ndarray.__pos__ = lambda self: np.positive(self)
ndarray.__abs__ = lambda self: np.absolute(self)
ndarray.__invert__ = lambda self: np.invert(self)


# -- module functions ---------------------------------------------------------------------------
def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    transfers["to_device"] += 1
    return wrap(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        return wrap(np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    transfers["to_device"] += 1
    return wrap(np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    out = np.ascontiguousarray(a._a, dtype=dtype)
    return a if out is a._a else wrap(out)


def asnumpy(a, stream=None, order="C", out=None):
    return a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a, order=order)


def get_array_module(*args):
    import cupy

    return cupy if any(isinstance(a, ndarray) for a in args) else np


def _fft_keep_precision(func):
    """A scipy.fft transform on device arrays (scipy keeps complex64, like cuFFT; numpy.fft would not)."""
    def call(x, *args, overwrite_x=False, plan=None, **kwargs):
        if not isinstance(x, ndarray):
            raise TypeError(f"Unsupported type {type(x)}")
        out = func(x._a, *unwrap(args), **_unwrap_kwargs(kwargs))
        if overwrite_x and out.dtype == x.dtype and out.shape == x.shape:
            x._a[...] = out                          # cuFFT with overwrite_x runs in place
            return x
        return wrap(out)
    call.__name__ = func.__name__
    return call


class FFTModule:
    """cupy.fft / cupyx.scipy.fft."""

    def __init__(self):
        for name in ("fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2",
                     "rfftn", "irfftn"):
            setattr(self, name, _fft_keep_precision(getattr(scipy.fft, name)))
        for name in ("fftshift", "ifftshift"):
            setattr(self, name, strict(getattr(np.fft, name)))
        for name in ("fftfreq", "rfftfreq"):
            setattr(self, name, lambda n, d=1.0, _f=getattr(np.fft, name): wrap(_f(n, d)))

    @staticmethod
    def get_fft_plan(a, shape=None, axes=None, value_type="C2C"):
        if not isinstance(a, ndarray):
            raise TypeError(f"Unsupported type {type(a)}")
        return ("plan", a.shape, a.dtype, axes)


class Device:
    """cupy.cuda.Device: one emulated GPU, number 0."""

    attributes = {"MultiProcessorCount": 1, "MaxThreadsPerBlock": 1024, "WarpSize": 32}

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: the emulated GPU has device 0 only, not {self.id}")

    compute_capability = "90"

    def use(self):
        pass

    def synchronize(self):
        pass

    @property
    def mem_info(self):
        return (64 << 30) - _pool.used_bytes(), 64 << 30

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
