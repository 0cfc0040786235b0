"""What every reader shares: the error type, streaming assembly of patterns, dataset construction."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .. import dataset as ds_mod
from ..dataset import Dataset

CHUNK_BYTES = 64 * 2**20          # raw bytes per slab read from a file


class DataError(ValueError):
    """A data file cannot be used as it is: the message names the file and the problem.

    Raised for unreadable, truncated or corrupt files, missing keys, inconsistent shapes or counts,
    non-finite frames and geometry that is missing or not physical. Catch it to report a user error
    without a traceback (the command line does).
    """

    def __init__(self, path, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


PREPROCESS_KEYS = ("frames", "dark", "fftshift", "crop", "center", "bin", "saturation", "chunk_bytes")


def frame_indices(path, frames, n_frames: int) -> np.ndarray:
    """The requested frames (None: all; a slice; a sequence of indices) as an int64 array."""
    if frames is None:
        return np.arange(n_frames)
    if isinstance(frames, slice):
        return np.arange(n_frames)[frames]
    idx = np.asarray(frames)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise DataError(path, f"frames must be a slice or a sequence of integer indices, got {frames!r}")
    if idx.size == 0 or np.any(idx < -n_frames) or np.any(idx >= n_frames):
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
            return np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                key = "dark" if "dark" in z.files else z.files[0] if len(z.files) == 1 else None
                if key is None:
                    raise DataError(p, f"no 'dark' array among {z.files}")
                return z[key]
        from .tiff import read_frames
        return read_frames(p)
    except DataError:
        raise
    except (OSError, ValueError) as err:
        raise DataError(p, f"cannot read the dark frames ({err})") from None


class Pipeline:
    """Streaming preprocessing applied slab by slab while a reader fills the output array.

    Order per frame: cast to float32, non-finite check, dark subtraction, fftshift, crop, binning;
    negative values are clipped at the end with one `NegativeCountsWarning` stating the count.
    Memory: the output (J, ny, nx) float32 array, plus one slab of about `chunk_bytes` raw bytes and
    its float32 copy; with `saturation` and ``per_frame`` masking, a (J, ny, nx) float32 mask too.
    A centre found from the data (``center="mass"`` or ``"max"``) costs one more pass over the file.
    """

    def __init__(self, path, n_frames, frame_shape, raw_dtype, *, frames=None, dark=None, fftshift=False,
                 crop=None, center=None, bin=1, saturation=None, chunk_bytes=CHUNK_BYTES):
        self.path = path
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.indices = frame_indices(path, frames, n_frames)
        try:
            self.dark = None if dark is None else ds_mod._dark_frame(load_dark(path, dark), self.frame_shape)
            self.factor = ds_mod._pair(bin, "bin")
            self.saturation = None if saturation is None else ds_mod.validation.real_number("saturation", saturation)
        except ValueError as err:
            raise DataError(path, str(err)) from None
        self.fftshift, self.crop, self.center = bool(fftshift), crop, center
        self.window = None
        itemsize = max(np.dtype(raw_dtype).itemsize, 4)
        self.slab = max(1, int(chunk_bytes) // (itemsize * int(np.prod(self.frame_shape))))
        self.n_negative, self.min_value = 0, 0.0

    @property
    def changes_sampling(self) -> bool:
        return self.crop is not None or self.factor != (1, 1)

    def _early(self, raw):
        a = np.asarray(raw)
        if a.dtype.kind not in "uif" or a.dtype == bool:
            raise DataError(self.path, f"diffraction data must be real numbers, got dtype {a.dtype}")
        a = a.astype(np.float32)
        if self.dark is not None:
            a -= self.dark
        if self.fftshift:
            a = np.fft.fftshift(a, axes=(-2, -1))
        return a

    def _geometry(self, a):
        if self.window is not None:
            a = ds_mod._crop_array(a, self.window, self.crop)
        if self.factor != (1, 1):
            a = ds_mod._bin_array(a, self.factor, "sum")
        return a

    def transform_mask(self, mask, reduce="min"):
        """The detector mask (or a per-frame mask already restricted to the selected frames) in the
        output layout: fftshift, crop, binning (a binned pixel is valid only if all its pixels are)."""
        if mask is None:
            return None
        m = np.asarray(mask)
        if self.fftshift:
            m = np.fft.fftshift(m, axes=(-2, -1))
        if self.window is not None:
            m = ds_mod._crop_array(m, self.window, self.crop)
        if self.factor != (1, 1):
            m = ds_mod._bin_array(m, self.factor, reduce)
        return np.ascontiguousarray(m)

    def _slabs(self, read):
        """(positions in the output, raw frames) for consecutive slabs of the requested frames."""
        idx = self.indices
        for start in range(0, idx.size, self.slab):
            want = idx[start:start + self.slab]
            uniq, inverse = np.unique(want, return_inverse=True)
            if uniq.size == uniq[-1] - uniq[0] + 1:
                raw = read(slice(int(uniq[0]), int(uniq[-1]) + 1))
            else:
                raw = read(uniq)
            yield start, np.asarray(raw)[inverse]

    def run(self, read):
        """Read every requested frame through ``read(index)`` (a slice or an increasing index array
        into the file's frames, returning (k, Ny, Nx)) and return (data, saturation weights or None)."""
        if self.crop is not None:
            center = self.center
            if isinstance(center, str):
                total = np.zeros(self.frame_shape, dtype=np.float64)
                for _, raw in self._slabs(read):
                    total += np.nan_to_num(self._early(raw)).sum(axis=0, dtype=np.float64)
                try:
                    center = ds_mod.find_centre(total, center)
                except ValueError as err:
                    raise DataError(self.path, str(err)) from None
            try:
                self.window = ds_mod.crop_window(self.frame_shape, self.crop, center)
            except ValueError as err:
                raise DataError(self.path, str(err)) from None
        out_shape = self._geometry(np.zeros((1, *self.frame_shape), np.float32)).shape[1:]
        data = np.empty((self.indices.size, *out_shape), dtype=np.float32)
        sat = None if self.saturation is None else np.empty_like(data)
        bad = []
        for start, raw in self._slabs(read):
            a = self._early(raw)
            finite = np.isfinite(a).all(axis=(-2, -1))
            if not finite.all():
                bad.extend(int(self.indices[start + k]) for k in np.flatnonzero(~finite))
                a[~finite] = 0
            stop = start + a.shape[0]
            data[start:stop] = self._geometry(a)
            if sat is not None:
                s = (np.asarray(raw) < self.saturation).astype(np.float32)
                if self.fftshift:
                    s = np.fft.fftshift(s, axes=(-2, -1))
                sat[start:stop] = self._geometry_min(s)
        if bad:
            shown = ", ".join(str(j) for j in bad[:10]) + (", ..." if len(bad) > 10 else "")
            raise DataError(self.path, f"{len(bad)} frame(s) contain NaN or Inf values (frame {shown}); "
                                       "drop them with frames=... or repair the file")
        negative = data < 0
        self.n_negative = int(np.count_nonzero(negative))
        if self.n_negative:
            self.min_value = float(data.min())
            np.maximum(data, 0, out=data)
            warnings.warn(f"{os.fspath(self.path)}: {self.n_negative} negative value(s) (min {self.min_value:g}) "
                          "clipped to 0", ds_mod.NegativeCountsWarning, stacklevel=3)
        return data, sat

    def _geometry_min(self, m):
        if self.window is not None:
            m = ds_mod._crop_array(m, self.window, self.crop)
        if self.factor != (1, 1):
            m = ds_mod._bin_array(m, self.factor, "min")
        return m

    def sampling_ratio(self, kind) -> np.ndarray:
        """New over old sample-plane pixel size (per axis) caused by cropping and binning."""
        new = self.frame_shape if self.window is None else ds_mod._pair(self.crop, "crop")
        new = (new[0] // self.factor[0], new[1] // self.factor[1])
        return ds_mod._sampling_ratio(kind, self.frame_shape, new, self.factor)


def combine_masks(*masks):
    """Product of the given weights (None entries skipped); None when there are none."""
    out = None
    for m in masks:
        if m is None:
            continue
        m = np.asarray(m, dtype=np.float32)
        out = m if out is None else out * m
    return out


def make_dataset(path, data, *, positions=None, positions_m=None, wavelength=None, detector_distance=None,
                 detector_pixel_size=None, geometry_kind=None, focus_distance=None, propagator=None,
                 pixel_size=None, z=None, **fields) -> Dataset:
    """A Dataset from what a reader found, deriving the sampling where the detector quantities allow.

    With wavelength, detector distance and detector pixel size known, the sample pixel size and z are
    derived (`Dataset.from_measurement`); otherwise the stored `pixel_size` / `z` are used. Positions
    in pixels win over positions in metres. Any inconsistency becomes a `DataError` naming `path`.
    """
    if geometry_kind is None:
        geometry_kind = "farfield" if propagator in (None, "farfield") else "nearfield"
    try:
        if wavelength is not None and detector_distance is not None and detector_pixel_size is not None:
            if positions is None and positions_m is None:
                raise DataError(path, "no scan positions found")
            return Dataset.from_measurement(data, wavelength=wavelength, detector_distance=detector_distance,
                                            detector_pixel_size=detector_pixel_size, geometry_kind=geometry_kind,
                                            focus_distance=focus_distance, positions=positions,
                                            positions_m=positions_m, propagator=propagator, **fields)
        missing = [name for name, v in (("wavelength/energy", wavelength), ("detector distance", detector_distance),
                                        ("detector pixel size", detector_pixel_size)) if v is None]
        if positions is None:
            if positions_m is None:
                raise DataError(path, "no scan positions found")
            if pixel_size is None:
                raise DataError(path, "positions are in metres but the sample pixel size cannot be derived: "
                                      f"missing {', '.join(missing)} (pass them as keywords)")
            positions = np.asarray(positions_m, dtype=np.float64) / np.asarray(ds_mod.geometry.pixel_pair(pixel_size))
        if propagator is None:
            propagator = "farfield" if geometry_kind == "farfield" else "angular_spectrum"
        if propagator != "farfield" and (z is None or wavelength is None or pixel_size is None):
            raise DataError(path, f"the near-field ({propagator}) model needs the propagation distance, wavelength "
                                  f"and sample pixel size: missing {', '.join(missing)} (pass them as keywords)")
        return Dataset(data=data, positions=positions, positions_m=positions_m, wavelength=wavelength,
                       detector_distance=detector_distance, detector_pixel_size=detector_pixel_size,
                       geometry_kind=geometry_kind, focus_distance=focus_distance, propagator=propagator,
                       pixel_size=pixel_size, z=z if propagator != "farfield" else None, **fields)
    except DataError:
        raise
    except ValueError as err:
        raise DataError(path, str(err)) from None


def scalar(value):
    """A Python scalar (str for bytes / string arrays) from an HDF5 or NumPy value."""
    if isinstance(value, np.ndarray):
        if value.shape == ():
            value = value[()]
        elif value.size == 1:
            value = value.reshape(-1)[0]
        else:
            return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
