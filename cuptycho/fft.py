"""Raw (unnormalised) in-place 2-D FFTs over the last two axes, planned once per buffer shape.

Every compiled backend uses raw transforms and folds the normalisation into the kernels that
touch the data anyway (the likelihood's intensity and gradient scales, the transfer function
divided by N), so no pass over the buffer is spent on scaling.

Libraries, fastest first: FFTW through pyFFTW (the `fftw` extra; planned with FFTW_MEASURE on an
aligned buffer and run in place), scipy.fft (multithreaded, allocates its output), and for CuPy
arrays cuFFT through cupyx.scipy.fft with a cached plan. `CUPTYCHO_FFT=scipy` forces scipy.fft
on the CPU.
"""
from __future__ import annotations

import collections
import functools
import os

import numpy as np

AXES = (-2, -1)


def cpu_threads() -> int:
    """Threads for the CPU FFT: OMP_NUM_THREADS when set (the kernels follow it too), else all cores."""
    return _threads(os.environ.get("OMP_NUM_THREADS", ""))


@functools.lru_cache(maxsize=8)
def _threads(setting: str) -> int:
    # cached per setting: asked per kernel call by a sequential PIE engine, and os.cpu_count reads /sys
    try:
        return max(1, int(setting))
    except ValueError:
        return os.cpu_count() or 1


# Transforms of fewer elements run on one thread: FFTW's thread pool costs more than it saves on
# a few small patches (a sequential PIE step is one 64 x 64 transform). Same limit as the kernels'
# CPT_MIN_PARALLEL.
MIN_PARALLEL = 32768


def threads_for(shape) -> int:
    return cpu_threads() if int(np.prod(shape)) >= MIN_PARALLEL else 1


@functools.cache
def _pyfftw():
    try:
        import pyfftw
    except ImportError:
        return None
    return pyfftw


def cpu_library() -> str:
    """'fftw' when pyFFTW is installed (and not overridden by CUPTYCHO_FFT=scipy), else 'scipy'."""
    if os.environ.get("CUPTYCHO_FFT", "").lower() == "scipy" or _pyfftw() is None:
        return "scipy"
    return "fftw"


# FFTW wisdom kept in the cache folder: FFTW_MEASURE picks among algorithms by timing them, so two
# processes could plan (and round) differently; with the wisdom of the first, every later process on
# this machine reuses its plans (identical results, and no ~0.3 s of measuring per shape)
_wisdom = {"loaded": False}
WISDOM_FILE = "fftw-wisdom.bin"


def wisdom_path():
    from . import _build
    return _build.cache_dir() / WISDOM_FILE


def _load_wisdom(pyfftw) -> None:
    """Import the stored wisdom once per process; a missing or unreadable file only means planning anew."""
    if _wisdom["loaded"]:
        return
    _wisdom["loaded"] = True
    from . import _build
    try:
        raw = (_build.private_cache_folder(_build.cache_dir()) / WISDOM_FILE).read_bytes()
        parts, at = [], 0
        while at < len(raw):
            size = int.from_bytes(raw[at:at + 8], "little")
            parts.append(raw[at + 8:at + 8 + size])
            at += 8 + size
        pyfftw.import_wisdom(tuple(parts))
    except (OSError, ValueError, TypeError, RuntimeError):    # RuntimeError: a cache folder others can write
        pass


def _save_wisdom(pyfftw) -> None:
    """Store the process's wisdom (what it imported plus its new plans) atomically; a cache folder that
    cannot take it leaves plans measured per process, as without one."""
    from . import _build
    from .atomic import write_atomic

    blob = b"".join(len(w).to_bytes(8, "little") + w for w in pyfftw.export_wisdom())

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(blob)

    try:
        _build.private_cache_folder(_build.cache_dir())
        write_atomic(wisdom_path(), write, overwrite=True)
    except (OSError, RuntimeError):
        pass


class FFTWPlan:
    """Forward and inverse FFTW plans on one aligned buffer; `forward()`/`inverse()` run in place."""

    def __init__(self, shape, dtype):
        pyfftw = _pyfftw()
        self.buffer = pyfftw.empty_aligned(shape, dtype=dtype)
        self.buffer[...] = 0
        _load_wisdom(pyfftw)
        known = pyfftw.export_wisdom()
        kw = dict(axes=AXES, flags=("FFTW_MEASURE", "FFTW_DESTROY_INPUT"), threads=threads_for(shape))
        self._fwd = pyfftw.FFTW(self.buffer, self.buffer, direction="FFTW_FORWARD", **kw)
        self._inv = pyfftw.FFTW(self.buffer, self.buffer, direction="FFTW_BACKWARD", **kw)
        if pyfftw.export_wisdom() != known:         # a shape measured for the first time on this machine
            _save_wisdom(pyfftw)

    def forward(self, x):
        assert x is self.buffer
        self._fwd.execute()
        return x

    def inverse(self, x):
        assert x is self.buffer
        self._inv.execute()
        return x


class ScipyPlan:
    """scipy.fft on a preallocated buffer; the transforms return new arrays (scipy cannot write in place)."""

    def __init__(self, shape, dtype):
        self.buffer = np.zeros(shape, dtype)
        self._workers = threads_for(shape)

    def forward(self, x):
        import scipy.fft

        return scipy.fft.fft2(x, axes=AXES, norm="backward", overwrite_x=True, workers=self._workers)

    def inverse(self, x):
        import scipy.fft

        return scipy.fft.ifft2(x, axes=AXES, norm="forward", overwrite_x=True, workers=self._workers)


class CupyPlan:
    """cuFFT through cupyx.scipy.fft with the plan made once for the buffer's shape (in place)."""

    def __init__(self, shape, dtype):
        import cupy
        import cupyx.scipy.fft as cufft

        self.buffer = cupy.zeros(shape, dtype)
        self._fft = cufft
        self._plan = cufft.get_fft_plan(self.buffer, axes=AXES)

    def forward(self, x):
        return self._fft.fft2(x, axes=AXES, norm="backward", overwrite_x=True, plan=self._plan)

    def inverse(self, x):
        return self._fft.ifft2(x, axes=AXES, norm="forward", overwrite_x=True, plan=self._plan)


def plan(device: str, library: str, shape: tuple, dtype) -> FFTWPlan | ScipyPlan | CupyPlan:
    """The cached plan (with its work buffer) for `shape` on `device` ('cpu' or 'cuda'), per GPU."""
    from .backend import device_id
    return _plan(device, device_id(device), library, tuple(shape), np.dtype(dtype))


class BufferCache:
    """A least-recently-used cache of device buffers (or of objects holding one, `size` says how many
    bytes), bounded by their total bytes rather than by a count: a batch that grows 64 -> 10k patterns
    pinned a full buffer per batch shape for the process's life (~61 GB). The newest entry always stays;
    an evicted one is freed once its last user lets go of it."""

    def __init__(self, make, size, limit_bytes):
        self.make, self.size, self.limit = make, size, limit_bytes
        self.items, self.bytes = collections.OrderedDict(), 0

    def __call__(self, *key):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        value = self.make(*key)
        nbytes = int(self.size(value))
        self.items[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.limit and len(self.items) > 1:
            _, (_, freed) = self.items.popitem(last=False)
            self.bytes -= freed
        return value

    def cache_clear(self):
        self.items.clear()
        self.bytes = 0


CACHE_BYTES = int(os.environ.get("CUPTYCHO_CACHE_BYTES", 4 << 30))    # per cache of plans / scratch buffers


def _make_plan(device, gpu, library, shape, dtype):    # gpu: only a key (the plan is made on the current one)
    if device == "cuda":
        return CupyPlan(shape, dtype)
    return FFTWPlan(shape, dtype) if library == "fftw" else ScipyPlan(shape, dtype)


_plan = BufferCache(_make_plan, lambda p: getattr(getattr(p, "buffer", None), "nbytes", 0), CACHE_BYTES)
