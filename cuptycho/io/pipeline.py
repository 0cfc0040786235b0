"""Streaming preprocessing: the patterns of a file assembled slab by slab into one float32 array.

Every reader hands `Pipeline` a function that reads frames of its file; the pipeline selects frames,
subtracts the dark, un-shifts, crops and bins on the way (the array operations of
`cuptycho.preprocess`), so the peak memory is the output plus one slab.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from .. import budget, parallel, patterns, preprocess, units, validation
from ._common import DataError, load_npy, npz_member
from .frames import read_frames

CHUNK_BYTES = 32 * 2**20          # raw bytes per slab read from a file
PREPROCESS_KEYS = ("frames", "dark", "fftshift", "crop", "center", "bin", "saturation", "chunk_bytes", "stream",
                   "load_limit", "comm")


def check_options(reader: str, options: dict) -> None:
    """TypeError naming `reader` when `options` (a reader's ``**preprocess``) holds a key that is not
    one of `PREPROCESS_KEYS`; called first, before any file is opened."""
    unknown = set(options) - set(PREPROCESS_KEYS)
    if unknown:
        raise TypeError(f"{reader} got unexpected keyword(s) {sorted(unknown)}")


def _frames_text(frames) -> str:
    """The frames option as a user wrote it: a slice by its parts (TOML's {start = 100}), else as given."""
    if isinstance(frames, slice):
        parts = [f"{k} = {v}" for k, v in (("start", frames.start), ("stop", frames.stop), ("step", frames.step))
                 if v is not None]
        return "{" + ", ".join(parts) + "}"
    return repr(frames)


def _selected(frames, n_frames: int) -> int:
    """How many frames `frames` selects, counted without listing them (a header may claim billions)."""
    if frames is None:
        return n_frames
    if isinstance(frames, slice):
        try:
            return len(range(n_frames)[frames])
        except (TypeError, ValueError):                      # frame_indices says what is wrong
            return 0
    return int(np.size(frames))


def _output_pixels(frame_shape, crop, bin) -> int:
    """Pixels per output frame after cropping and binning, as far as the options can be read yet (>= 1)."""
    try:
        shape = frame_shape if crop is None else validation.integer_pair("crop", crop)
        fy, fx = validation.integer_pair("bin", bin)
    except ValueError:                                        # reported where the options are checked
        return 1
    return max(1, (min(shape[0], frame_shape[0]) // fy) * (min(shape[1], frame_shape[1]) // fx))


def frame_indices(path, frames, n_frames: int) -> np.ndarray:
    """The requested frames (None: all; a slice; a sequence of indices) as an int64 array; a selection
    of no frame is a DataError naming the option and the number of frames in the file."""
    if frames is None:
        return np.arange(n_frames)
    if isinstance(frames, slice):
        try:
            idx = np.arange(n_frames)[frames]
        except (TypeError, ValueError) as err:              # non-integer parts, a zero step
            raise DataError(path, f"frames {_frames_text(frames)} is not a valid selection ({err})") from None
        if idx.size == 0:
            raise DataError(path, f"frames {_frames_text(frames)} selects no frame: the file has {n_frames} "
                                  f"frame(s), 0 to {n_frames - 1}")
        return idx
    idx = np.asarray(frames)
    if idx.ndim == 1 and idx.size == 0:
        raise DataError(path, f"frames {_frames_text(frames)} selects no frame: the file has {n_frames} frame(s)")
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(path, f"frames must be a slice or a sequence of integer indices, got {frames!r}")
    if np.any(idx < -n_frames) or np.any(idx >= n_frames):
        raise DataError(path, f"frames must select indices in [0, {n_frames}) (the file has {n_frames} frames)")
    return np.where(idx < 0, idx + n_frames, idx).astype(np.int64)


def load_dark(path, dark):
    """A dark frame (or stack) from an array or a file (.npy, .npz 'dark' key or only array, TIFF, folder)."""
    if dark is None or isinstance(dark, np.ndarray):
        return dark
    if not isinstance(dark, (str, os.PathLike)):
        return np.asarray(dark)
    p = Path(dark)
    try:
        if p.suffix == ".npy":
            return load_npy(p)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                key = "dark" if "dark" in z.files else z.files[0] if len(z.files) == 1 else None
                if key is None:
                    raise DataError(p, f"no 'dark' array among {z.files}")
                return npz_member(p, z, key)
        return read_frames(p)
    except DataError:
        raise
    except (OSError, ValueError) as err:
        raise DataError(p, f"cannot read the dark frames ({err})") from None


class Pipeline:
    """Streaming preprocessing applied slab by slab while a reader fills the output array, or while it
    checks every frame once before the data are streamed.

    Order per frame: cast to float32, non-finite check, dark subtraction, fftshift, crop, binning;
    negative values are clipped at the end with one `NegativeCountsWarning` stating the count.
    Memory: the output (J, ny, nx) float32 array, plus one slab of about `chunk_bytes` raw bytes and
    its float32 copy; with `saturation` and ``per_frame`` masking, a (J, ny, nx) float32 mask too.
    A centre found from the data (``center="mass"`` or ``"max"``) costs one more pass over the file.

    Streamed (``stream`` true, or "auto" with more than ``load_limit`` bytes of output, default a
    quarter of the memory budget): 16 bytes per frame (and the saturation mask as bits) are held, and
    the rows are read and preprocessed again whenever the engine asks (`cuptycho.patterns`).
    """

    def __init__(self, path, n_frames, frame_shape, raw_dtype, *, frames=None, dark=None, fftshift=False,
                 crop=None, center=None, bin=1, saturation=None, chunk_bytes=CHUNK_BYTES, stream="auto",
                 load_limit=None, comm=None, source="the data", streamable=True):
        self.path = path
        self.frame_shape = tuple(int(s) for s in frame_shape)
        # `source` names the array in messages: the memory checks say what the file claims
        self.claim = f"{source} claims shape {(int(n_frames), *self.frame_shape)} {np.dtype(raw_dtype)}"
        centre_sum = 8 if isinstance(center, str) else 0          # a float64 frame summing the data
        frame_bytes = math.prod(self.frame_shape) * (np.dtype(raw_dtype).itemsize + 4)
        self._require(frame_bytes + math.prod(self.frame_shape) * centre_sum, "reading one frame")
        if not (isinstance(stream, bool) or stream == "auto"):
            raise DataError(path, f"stream must be 'auto', true or false, got {stream!r}")
        try:
            self.load_limit = None if load_limit is None else budget.parse_size(load_limit, "load_limit")
        except ValueError as err:
            raise DataError(path, str(err)) from None
        if stream is True and not streamable:
            raise DataError(path, "stream = true, but this kind of file is read whole (NumPy cannot read part of an "
                                  "archive member): write it as CXI (cuptycho.io.write_cxi) to stream it, or set "
                                  "stream = false")
        self.stream = stream if streamable else False
        self.comm = parallel.communicator(comm)           # MPI ranks share the checking pass of streamed data
        count = _selected(frames, n_frames)                 # before the frames are listed: 8 bytes each
        pixels = _output_pixels(self.frame_shape, crop, bin)
        if self.streams(count * pixels):                    # totals per frame, saturation bits
            held = count * (16 + (pixels // 8 + 1 if saturation is not None else 0))
        else:
            held = count * (8 + 4 * (1 if saturation is None else 2) * pixels)
        self._require(held + frame_bytes, f"reading {count} frame(s)")
        self.indices = frame_indices(path, frames, n_frames)
        try:
            self.dark = None if dark is None else preprocess.dark_frame(load_dark(path, dark), self.frame_shape)
            self.factor = validation.integer_pair("bin", bin)
            self.saturation = None if saturation is None else validation.real_number("saturation", saturation)
        except ValueError as err:
            raise DataError(path, str(err)) from None
        self.fftshift, self.crop, self.center = bool(fftshift), crop, center
        self.window = None
        self.itemsize = np.dtype(raw_dtype).itemsize
        self.slab = max(1, int(chunk_bytes) // (max(self.itemsize, 4) * math.prod(self.frame_shape)))
        self.n_negative, self.min_value = 0, 0.0

    def _require(self, nbytes, doing):
        """DataError naming the claimed shape when `doing` needs more memory than the budget allows."""
        try:
            budget.require(nbytes, f"{self.claim}: {doing}")
        except budget.MemoryBudgetError as err:
            raise DataError(self.path, str(err)) from None

    @property
    def changes_sampling(self) -> bool:
        return self.crop is not None or self.factor != (1, 1)

    def _early(self, raw):
        a = np.asarray(raw)
        if a.dtype.kind not in "uif" or a.dtype == bool:
            raise DataError(self.path, f"diffraction data must be real numbers, got dtype {a.dtype}")
        # no copy unless the values change: the slab is the reader's own (a file read, or a view of an array
        # it loaded), and only a frame that is then refused (NaN / Inf) is zeroed in place
        a = a.astype(np.float32, copy=self.dark is not None)
        if self.dark is not None:
            a -= self.dark
        if self.fftshift:
            a = np.fft.fftshift(a, axes=(-2, -1))
        return a

    def _resample(self, a, reduce="sum"):
        """Crop and bin (blocks reduced by "sum" for counts, "min" for weights)."""
        if self.window is not None:
            a = preprocess.crop_array(a, self.window, self.crop)
        if self.factor != (1, 1):
            a = preprocess.bin_array(a, self.factor, reduce)
        return a

    def transform_mask(self, mask, reduce="min"):
        """The detector mask (or a per-frame mask already restricted to the selected frames) in the
        output layout: fftshift, crop, binning (a binned pixel is valid only if all its pixels are)."""
        if mask is None:
            return None
        m = np.asarray(mask)
        if self.fftshift:
            m = np.fft.fftshift(m, axes=(-2, -1))
        return np.ascontiguousarray(self._resample(m, reduce))

    def _slabs(self, read, shared=False):
        """(positions in the output, raw frames) for consecutive slabs of the requested frames; `shared`: only
        this MPI rank's slabs (every size-th, from its rank on)."""
        idx = self.indices
        rank, size = (self.comm.rank, self.comm.size) if shared else (0, 1)
        for start in range(rank * self.slab, idx.size, size * self.slab):
            want = idx[start:start + self.slab]
            uniq, inverse = np.unique(want, return_inverse=True)
            if uniq.size == uniq[-1] - uniq[0] + 1:
                raw = np.asarray(read(slice(int(uniq[0]), int(uniq[-1]) + 1)))
            else:
                raw = np.asarray(read(uniq))
            if uniq.size != want.size or np.any(uniq != want):      # repeated or unsorted frames: reorder
                raw = raw[inverse]
            yield start, raw
            del raw                # before the next read: one slab alive at a time, not four

    def _place_window(self, read):
        """Fix the crop window, finding the beam centre in the summed frames (one pass) if asked to."""
        center = self.center
        if isinstance(center, str):
            total = np.zeros(self.frame_shape, dtype=np.float64)
            for _, raw in self._slabs(read, shared=True):
                total += np.nan_to_num(self._early(raw)).sum(axis=0, dtype=np.float64)
            total = self.comm.sum(total)
        try:
            if isinstance(center, str):
                center = preprocess.find_centre(total, center)
            self.window = preprocess.crop_window(self.frame_shape, self.crop, center)
        except ValueError as err:
            raise DataError(self.path, str(err)) from None

    def _prepare(self, raw):
        """Raw frames -> (output frames (k, ny, nx) float32, positions in the slab of frames holding NaN or
        Inf, which are zeroed); negative counts are clipped and counted."""
        a = self._early(raw)
        finite = np.isfinite(a).all(axis=(-2, -1))
        if not finite.all():
            a[~finite] = 0
        out = self._resample(a)
        negative = int(np.count_nonzero(out < 0))                # per slab: no data-sized temporary
        if negative:
            self.n_negative += negative
            self.min_value = min(self.min_value, float(out.min()))
            out = np.maximum(out, 0, out=out if out.flags.writeable else None)
        return out, np.flatnonzero(~finite)

    def _saturation(self, raw):
        """Per-frame weights of the unsaturated pixels (1 below `saturation`, 0 at or above) in the output layout."""
        s = (np.asarray(raw) < self.saturation).astype(np.float32)
        if self.fftshift:
            s = np.fft.fftshift(s, axes=(-2, -1))
        return self._resample(s, "min")

    def _report(self, bad):
        """The one error for NaN frames and the one warning for negative counts, after a pass over the file."""
        if bad:
            shown = ", ".join(str(j) for j in bad[:10]) + (", ..." if len(bad) > 10 else "")
            raise DataError(self.path, f"{len(bad)} frame(s) contain NaN or Inf values (frame {shown}); "
                                       "drop them with frames=... or repair the file")
        if self.n_negative and self.comm.rank == 0:           # one warning, from rank 0 under MPI
            warnings.warn(f"{os.fspath(self.path)}: {self.n_negative} negative value(s) (min {self.min_value:g}) "
                          "clipped to 0", preprocess.NegativeCountsWarning, stacklevel=4)

    def output_shape(self):
        return self._resample(np.zeros((1, *self.frame_shape), np.float32)).shape[1:]

    def streams(self, pixels) -> bool:
        """Whether `pixels` output pixels are streamed rather than loaded: ``stream`` true, or "auto" and
        more float32 bytes than ``load_limit`` (default a quarter of the memory budget, `cuptycho.budget`)."""
        if self.stream != "auto":
            return self.stream
        cap = self.load_limit if self.load_limit is not None else budget.limit()[0] // 4
        return 4 * pixels > cap

    def run(self, read, open_reader=None):
        """Read every requested frame through ``read(index)`` (a slice or an increasing index array
        into the file's frames, returning (k, Ny, Nx)) and return (data, saturation weights or None).

        When the data are streamed (`streams`), every frame is read and checked once here and the data
        returned are `cuptycho.patterns.StreamedPatterns` reading rows later through ``open_reader()``
        (which returns (read, close), a read that stays valid after this reader's file is closed); the
        saturation weights are then held as bits (1/32 of the data) and streamed as well."""
        if self.crop is not None:
            self._place_window(read)
        out_shape = self.output_shape()
        if self.streams(self.indices.size * math.prod(out_shape)):
            return self._stream(read, open_reader, out_shape)
        copies = 1 if self.saturation is None else 2
        slab = min(self.slab, self.indices.size) * math.prod(self.frame_shape) * (self.itemsize + 4)
        self._require(copies * 4 * self.indices.size * math.prod(out_shape) + slab,
                      f"reading {self.indices.size} frame(s) into {out_shape[0]} x {out_shape[1]} float32")
        data = np.empty((self.indices.size, *out_shape), dtype=np.float32)
        sat = None if self.saturation is None else np.empty_like(data)
        bad = []
        for start, raw in self._slabs(read):
            block, nonfinite = self._prepare(raw)
            bad.extend(int(self.indices[start + k]) for k in nonfinite)
            stop = start + block.shape[0]
            data[start:stop] = block
            if sat is not None:
                sat[start:stop] = self._saturation(raw)
            del raw, block         # released before the next slab is read
        self._report(bad)
        return data, sat

    def _stream(self, read, open_reader, out_shape):
        """One checking pass (frame totals, the maximum, NaN frames, negative counts, saturation bits), then
        the streamed patterns (and weights). MPI ranks (``comm``) check a share of the slabs each and sum what
        they found, so every rank holds the same totals and raises the same error."""
        n = self.indices.size
        sums, peak, nonfinite = np.zeros(n), 0.0, np.zeros(n, dtype=np.int32)
        bits = None if self.saturation is None else np.zeros((n, out_shape[0], -(-out_shape[1] // 8)), np.uint8)
        for start, raw in self._slabs(read, shared=True):
            block, bad = self._prepare(raw)
            nonfinite[start + bad] = 1
            sums[start:start + len(block)] = block.sum(axis=(1, 2), dtype=np.float64)
            peak = max(peak, float(block.max()))
            if bits is not None:
                bits[start:start + len(block)] = np.packbits(self._saturation(raw) > 0, axis=-1)
            del raw, block
        if self.comm.size > 1:                   # the slabs of the other ranks are zeros here: sums are unions
            sums, nonfinite, peak = self.comm.sum(sums), self.comm.sum(nonfinite), self.comm.maximum(peak)
            self.n_negative = int(self.comm.sum(self.n_negative))
            self.min_value = -self.comm.maximum(-self.min_value)
            bits = None if bits is None else self.comm.sum(bits)
        self._report([int(self.indices[k]) for k in np.flatnonzero(nonfinite)])
        source = os.fspath(self.path)
        reader = _RowReader(self, open_reader)
        data = patterns.StreamedPatterns(reader, (n, *out_shape), frame_sums=sums, maximum=peak, source=source,
                                         close=reader.close)
        sat = None
        if bits is not None:
            def weights(rows):
                return np.unpackbits(bits[rows], axis=-1, count=out_shape[1]).astype(np.float32)
            sat = patterns.StreamedPatterns(weights, (n, *out_shape), source=f"the saturation weights of {source}")
        return data, sat

    def read_rows(self, read, rows):
        """Output rows `rows` (increasing, into the selected frames) read through `read` and preprocessed."""
        want = self.indices[rows]
        order = np.argsort(want, kind="stable")
        files = want[order]
        unique, inverse = np.unique(files, return_inverse=True)
        if unique.size == unique[-1] - unique[0] + 1:
            raw = np.asarray(read(slice(int(unique[0]), int(unique[-1]) + 1)))
        else:
            raw = np.asarray(read(unique))
        block, _ = self._prepare(raw[inverse.reshape(-1)] if unique.size != files.size else raw)
        out = np.empty_like(block)
        out[order] = block
        return out

    def sampling_ratio(self, kind) -> np.ndarray:
        """New over old sample-plane pixel size (per axis) caused by cropping and binning."""
        new = self.frame_shape if self.window is None else validation.integer_pair("crop", self.crop)
        new = (new[0] // self.factor[0], new[1] // self.factor[1])
        return units.sampling_ratio(kind, self.frame_shape, new, self.factor)


class _RowReader:
    """`StreamedPatterns`' read_rows: the file opened on first use (``open_reader()`` -> (read, close)),
    rows preprocessed by the pipeline that checked them."""

    def __init__(self, pipe, open_reader):
        self.pipe, self.open_reader, self.handle = pipe, open_reader, None

    def __call__(self, rows):
        if self.handle is None:
            self.handle = self.open_reader()
        return self.pipe.read_rows(self.handle[0], rows)

    def close(self):
        if self.handle is not None:
            handle, self.handle = self.handle, None
            handle[1]()
