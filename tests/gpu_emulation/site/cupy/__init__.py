"""`cupy` for the emulated GPU (tests/gpu_emulation): on sys.path only while the test suite emulates a GPU.

Arrays and functions follow CuPy's rules strictly (gpu_emulation.device_array); RawModule and RawKernel
compile with NVRTC and run the kernels' GPU branches on the host (gpu_emulation.kernels); `cuda` has the
device, stream, memory-pool and runtime calls cuptycho makes.
"""
import types as _types

import numpy as _np

from gpu_emulation import device_array as _da
from gpu_emulation import kernels as _kernels
from gpu_emulation.device_array import (Device, array, asarray, ascontiguousarray, asnumpy, get_array_module,
                                        ndarray)

__all__ = ["Device", "array", "asarray", "ascontiguousarray", "asnumpy", "get_array_module", "ndarray", "fft",
           "cuda", "RawModule", "RawKernel", "get_default_memory_pool", "get_default_pinned_memory_pool"]

__version__ = "14.0.0+emulated"
EMULATED = True
newaxis = None
fft = _da.FFTModule()


class RawModule:
    def __init__(self, code=None, options=(), name_expressions=None, backend="nvrtc", **_):
        self._module = _kernels.Module(code, options)

    def get_function(self, name):
        return self._module.get_function(name)


class RawKernel:
    def __init__(self, code, name, options=(), **_):
        self._kernel = _kernels.Module(code, options).get_function(name)

    def __call__(self, grid, block, args, **kwargs):
        return self._kernel(grid, block, args, **kwargs)


def get_default_memory_pool():
    return _da.memory_pool()


def get_default_pinned_memory_pool():
    return _da.MemoryPool()


class _Stream:
    def synchronize(self):
        pass


class CUDARuntimeError(RuntimeError):
    pass


class _Runtime:
    CUDARuntimeError = CUDARuntimeError

    @staticmethod
    def getDevice():
        return 0

    @staticmethod
    def setDevice(device):
        Device(device)

    @staticmethod
    def getDeviceCount():
        import gpu_emulation

        if not gpu_emulation.enabled():               # the suite's tests that are not about the GPU
            raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return 1

    @staticmethod
    def memGetInfo():
        return Device(0).mem_info

    @staticmethod
    def deviceSynchronize():
        pass


cuda = _types.SimpleNamespace(Device=Device, runtime=_Runtime, get_current_stream=lambda: _Stream(),
                              Stream=_Stream, MemoryPool=_da.MemoryPool)

# NumPy's types and constants as they are; NumPy's functions and ufuncs through the strict wrapper
_PASS_THROUGH = {"dtype", "result_type", "promote_types", "can_cast", "finfo", "iinfo", "issubdtype",
                 "iscomplexobj", "isrealobj", "isscalar", "ndim", "shape", "size"}


def __getattr__(name):
    value = getattr(_np, name)                 # AttributeError for what NumPy lacks too
    if name in _PASS_THROUGH:
        return value
    if isinstance(value, type) or not callable(value):
        return value
    wrapped = _da.strict(value)
    globals()[name] = wrapped
    return wrapped
