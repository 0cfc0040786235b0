"""Diffraction patterns read from their file as they are needed: a read-only (J, Ny, Nx) float32 array.

A reader (`cuptycho.io`) builds `StreamedPatterns` when the data should not be held whole (the ``stream``
option): it checks every frame once while opening (NaN frames are refused, negative counts counted),
keeps each frame's total counts and the largest value, and afterwards reads rows on request through its
preprocessing pipeline. Indexing follows NumPy for what the engine asks: an integer, a slice, or an
integer array (repeats and any order allowed), with further axes applied to the rows read.

One request can be read ahead: `prefetch(rows)` starts reading them on a background thread, and the next
read of exactly those rows takes the result. The engine announces its next batch before computing the
current one; the kernels release the interpreter's lock, so the read overlaps the computation. At most one
batch is read ahead, so what streaming holds is two batches of rows.

`frame_sums` and `maximum` serve data held either way (a NumPy or CuPy array, or streamed), in chunks.
"""
from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import budget
from .backend import array_module, is_streamed, to_host

CHUNK_BYTES = 16 << 20            # rows read per chunk when the whole dataset is reduced (`chunks`)


class StreamedPatterns:
    """Rows of a (J, Ny, Nx) float32 array read through ``read_rows(rows)``, where `rows` is an increasing
    int64 array without repeats and the result is a fresh (len(rows), Ny, Nx) float32 array, finite and
    non-negative (the reader's pipeline guarantees it; nothing here checks values again).

    Parameters
    ----------
    read_rows : callable
    shape : (J, Ny, Nx)
    frame_sums : (J,) float64, optional
        Each row's total (known from the reader's pass over the file); else computed on first use.
    maximum : float, optional
    source : str
        What the rows are, for messages ("/path/scan.cxi").
    close : callable, optional
        Releases the file; called by `close()` or when this object is collected.
    """

    streamed = True
    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, read_rows, shape, *, frame_sums=None, maximum=None, source="the data", close=None):
        self._read = read_rows
        self.shape = tuple(int(s) for s in shape)
        self.source = source
        self._sums = None if frame_sums is None else np.asarray(frame_sums, dtype=np.float64)
        self._max = None if maximum is None else float(maximum)
        self._pending = None                     # (rows, future) of the read ahead
        self._pool = [None]                      # the read-ahead thread, made on the first prefetch
        self._lock = threading.Lock()            # one read of the file at a time
        self._finalizer = weakref.finalize(self, _release, close, self._pool)

    # ---- array-like
    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self):
        return f"StreamedPatterns(shape={self.shape}, dtype=float32, source={self.source!r})"

    def __deepcopy__(self, memo):
        return self                           # read-only: a copy would read the same rows

    def rows_of(self, key) -> np.ndarray:
        """The row indices (int64, any order, repeats allowed) that `key` (int, slice, int array) selects;
        IndexError for rows outside [-J, J)."""
        n = self.shape[0]
        if isinstance(key, slice):
            return np.arange(n)[key]
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"a boolean index of {rows.shape} does not match {n} patterns")
            return np.flatnonzero(rows)
        if rows.dtype.kind not in "iu":
            raise IndexError(f"patterns are indexed by integers, slices or integer arrays, got {key!r}")
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"pattern index out of range for {n} patterns of {self.source}")
        return np.where(rows < 0, rows + n, rows).astype(np.int64)

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        scalar = isinstance(key, (int, np.integer))
        rows = self.rows_of(key)
        out = self.read(rows.reshape(-1))
        if scalar:
            return out[0][rest] if rest else out[0]
        out = out.reshape(*rows.shape, *self.shape[1:])
        return out[(slice(None),) * rows.ndim + rest] if rest else out

    def read(self, rows) -> np.ndarray:
        """Rows `rows` (1-d int64, any order, repeats allowed) as (len(rows), Ny, Nx) float32: the read ahead
        when it was for exactly these rows, else read now."""
        rows = np.asarray(rows, dtype=np.int64)
        pending = self._pending
        if pending is not None and np.array_equal(pending[0], rows):
            self._pending = None
            return pending[1].result()
        self.drop_ahead()
        return self._read_now(rows)

    def drop_ahead(self) -> None:
        """Forget the read ahead (after letting it finish: one read of the file at a time)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending[1].result()

    def _read_now(self, rows):
        if rows.size == 0:
            return np.empty((0, *self.shape[1:]), dtype=np.float32)
        unique, inverse = np.unique(rows, return_inverse=True)
        with self._lock:
            out = self._read(unique)
        return out if unique.size == rows.size and np.array_equal(unique, rows) else out[inverse.reshape(-1)]

    def prefetch(self, key) -> None:
        """Start reading the rows of `key` in the background (a later `read` of the same rows takes them)."""
        rows = self.rows_of(key).reshape(-1)
        self.drop_ahead()
        if not self._finalizer.alive:
            raise ValueError(f"the streamed patterns of {self.source} were closed")
        if self._pool[0] is None:
            self._pool[0] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cuptycho-read")
        self._pending = (rows, self._pool[0].submit(self._read_now, rows))

    def chunks(self, nbytes=None):
        """(start, rows) over the whole array in consecutive chunks of about `nbytes` (default CHUNK_BYTES)."""
        nbytes = CHUNK_BYTES if nbytes is None else nbytes
        step = max(1, int(nbytes) // max(1, self.size // self.shape[0] * 4))
        for start in range(0, self.shape[0], step):
            yield start, self.read(np.arange(start, min(start + step, self.shape[0])))

    def frame_sums(self) -> np.ndarray:
        """Each row's total (J,) float64."""
        if self._sums is None:
            self._sums = np.concatenate([c.sum(axis=(1, 2), dtype=np.float64) for _, c in self.chunks()])
        return self._sums

    def max(self) -> float:
        if self._max is None:
            self._max = max(float(c.max()) for _, c in self.chunks())
        return self._max

    def __array__(self, dtype=None, copy=None):
        """The whole array in memory (what streaming avoids; for code that needs it all), within the budget."""
        budget.require(self.nbytes, f"loading all {self.shape[0]} streamed patterns of {self.source}")
        out = np.empty(self.shape, dtype=np.float32)
        for start, c in self.chunks():
            out[start:start + len(c)] = c
        return out if dtype is None else out.astype(dtype, copy=False)

    def close(self) -> None:
        """Release the file (and the read-ahead thread); later reads are errors."""
        self._pending = None
        self._finalizer()
        self._read = _closed(self.source)


def _release(close, pool):
    if pool[0] is not None:
        pool[0].shutdown(wait=True)
    if close is not None:
        close()


def _closed(source):
    def read(rows):
        raise ValueError(f"the streamed patterns of {source} were closed")
    return read


def weighted(streamed, held):
    """The streamed weights `streamed` times `held` ((Ny, Nx), (J, Ny, Nx) or None), streamed."""
    if held is None:
        return streamed
    held = np.asarray(held, dtype=np.float32)

    def read(rows):
        return streamed.read(rows) * (held if held.ndim == 2 else held[rows])
    return StreamedPatterns(read, streamed.shape, source=streamed.source)


def chunks(data, nbytes=None):
    """(start, rows) over any (J, ...) array, streamed or held (NumPy / CuPy views), in chunks of about `nbytes`
    (default CHUNK_BYTES)."""
    if is_streamed(data):
        yield from data.chunks(nbytes)
        return
    nbytes = CHUNK_BYTES if nbytes is None else nbytes
    n = data.shape[0]
    step = max(1, int(nbytes) // max(1, data[:1].nbytes))
    for start in range(0, n, step):
        yield start, data[start:start + step]


def frame_sums(data) -> np.ndarray:
    """Total counts of each pattern (J,) float64 on the host, in bounded chunks."""
    if is_streamed(data):
        return data.frame_sums()
    xp = array_module(data)
    return np.concatenate([to_host(c.sum(axis=(1, 2), dtype=xp.float64)) for _, c in chunks(data)])


def maximum(data) -> float:
    """The largest value of `data` (streamed or held)."""
    return data.max() if is_streamed(data) else float(data.max())


class ReadPlan:
    """The rows an epoch will ask for, in order (`parts`: 1-d int arrays), read in blocks of about `nbytes`:
    the block after the current one is read ahead (`StreamedPatterns.prefetch`), so a sequential engine's
    single rows and a large batch's parts both come from a few large reads, two blocks in memory at most.

    `take(rows)` returns the next planned part when `rows` is it, else None (the caller reads them itself:
    the plan is only a forecast, and a read it did not foresee costs one read, not a wrong result)."""

    def __init__(self, data: StreamedPatterns, parts, nbytes):
        row_bytes = max(1, data.size // max(1, data.shape[0]) * data.dtype.itemsize)
        per_block = max(1, int(nbytes) // row_bytes)
        self.data, self.blocks, block, count = data, [], [], 0
        for part in parts:
            part = np.asarray(part, dtype=np.int64)
            if block and count + part.size > per_block:
                self.blocks.append(block)
                block, count = [], 0
            block.append(part)
            count += part.size
        if block:
            self.blocks.append(block)
        self.parts, self.rows, self.values = [], None, None
        self.served = self.missed = 0               # parts taken from the plan, reads it did not foresee
        self._next = 0                              # the block read next
        self._ahead = None                          # the rows of the block being read ahead

    def _block_rows(self, k):
        return np.unique(np.concatenate(self.blocks[k]))

    def _advance(self):
        k, self._next = self._next, self._next + 1
        self.parts = list(self.blocks[k])
        self.rows = self._ahead if self._ahead is not None else self._block_rows(k)
        self.values = self.data.read(self.rows)
        self._ahead = None
        if self._next < len(self.blocks):
            self._ahead = self._block_rows(self._next)
            self.data.prefetch(self._ahead)

    def release(self):
        """Drop the block in memory and any read ahead (the counts stay)."""
        self.blocks, self.parts, self.rows, self.values = [], [], None, None
        self._ahead = None
        self.data.drop_ahead()

    def take(self, rows):
        rows = np.asarray(rows)
        if not self.parts and self._next < len(self.blocks):
            self._advance()
        if not self.parts or not np.array_equal(self.parts[0], rows):
            self.missed += 1
            return None
        self.parts.pop(0)
        self.served += 1
        return self.values[np.searchsorted(self.rows, rows)]
