"""NumPy archives: cuptycho's documented .npz layout and tike's (.npz or .npz.bz2).

cuptycho .npz keys
------------------
==========================  =====================  ==============================================
key                         shape / type           meaning
==========================  =====================  ==============================================
``data`` (required)         (J, Ny, Nx) real       intensities; far field centred (zero frequency
                                                   at (Ny//2, Nx//2))
``positions``               (J, 2) float           (y, x) patch corners in object pixels
``positions_m``             (J, 2) float           (y, x) probe positions in metres along the
                                                   object's axes (one of the two is required;
                                                   pixels win)
``mask``                    (Ny, Nx) / (J, Ny, Nx)  weights, 1 valid, 0 ignored
``probe``                   (K, Ny, Nx) complex    probe guess
``wavelength`` / ``energy``  scalar                metres / joules (the energy wins if both are
                                                   stored, as for keywords and CXI files)
``detector_distance``       scalar                 sample to detector, metres
``detector_pixel_size``     (2,)                   (py, px) metres
``geometry_kind``           str                    "farfield" or "nearfield"
``focus_distance``          scalar                 focus to sample (Fresnel scaling), metres
``propagator``              str                    model propagator
``pixel_size``, ``z``       (2,), scalar           sample pixel size and propagation distance
                                                   (used when the detector quantities are absent)
``padding``, ``margin``,    ints                   `Dataset` fields
``obj_shape``
==========================  =====================  ==============================================

tike layout (``siemens-star-small.npz.bz2`` in ``../shared/data``)
------------------------------------------------------------------
``data`` (1, J, N, N) float32 with the zero frequency at [0, 0] (un-shifted to cuptycho's centred
layout on reading: ``fftshift=True`` by default), ``scan`` (1, J, 2) positions in object pixels
(``scan[..., 0]`` rows), ``probe`` (1, 1, 1, K, N, N) complex (view, position, eigen, mode, h, w).
A file whose keys include ``scan`` is read as tike's.

Memory: a member of an archive is loaded whole (NumPy has no partial reads of .npz members), so the
peak is the raw array plus the float32 output; a .bz2 file is first decompressed into a temporary
file (in memory up to 64 MiB, on disk beyond), never into one large bytes object.
"""
from __future__ import annotations

import bz2
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import preprocess as prep
from .. import validation
from ..atomic import atomic_path
from ..dataset import Dataset
from ._common import DataError, combine_masks, npz_header, npz_member, reader_dataset, scalar
from .pipeline import Pipeline, check_options

_SCALARS = ("wavelength", "energy", "detector_distance", "focus_distance", "z", "margin", "geometry_kind",
            "propagator")
_PAIRS = ("detector_pixel_size", "pixel_size", "padding", "obj_shape")


def _open_archive(path):
    """A NpzFile for a .npz or .npz.bz2 file (caller closes it), or a DataError."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataError(p, "no such file")
    try:
        if p.suffix == ".bz2":
            spool = tempfile.SpooledTemporaryFile(max_size=64 * 2**20)
            with bz2.open(p, "rb") as src:
                shutil.copyfileobj(src, spool, length=2**20)
            spool.seek(0)
            return np.load(spool, allow_pickle=False)
        return np.load(p, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(p, f"not a readable NumPy archive; is it truncated or corrupt? ({err})") from None


def _member(path, z, key):
    """A member, its header checked against what the archive stores and the memory budget before it is read."""
    try:
        return npz_member(path, z, key)
    except DataError:
        raise
    except KeyError:
        raise DataError(path, f"missing key {key!r} (the archive has {sorted(z.files)})") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(path, f"cannot read {key!r}: the archive is damaged ({err})") from None


def is_tike(files) -> bool:
    """Whether archive member names look like tike's layout (data, scan[, probe])."""
    return "scan" in files and "data" in files


def read_npz(path, *, position_units=None, probe=None, wavelength=None, energy=None, detector_distance=None,
             detector_pixel_size=None, geometry_kind=None, focus_distance=None, propagator=None, pixel_size=None,
             z=None, padding=None, margin=None, obj_shape=None, **preprocess) -> Dataset:
    """Read a cuptycho .npz or a tike .npz / .npz.bz2 (module notes) as a `Dataset`.

    Keywords override the archive's values; ``**preprocess`` are the streaming options of
    `cuptycho.io.Pipeline` (frames, dark, fftshift, crop, center, bin, saturation; an archive is read whole,
    so ``stream = true`` is an error). For tike files
    ``fftshift`` defaults to True (their patterns have the zero frequency at [0, 0]).
    """
    check_options("read_npz", preprocess)
    p = Path(os.fspath(path))
    raw, stored, tike = _load_members(p, preprocess)
    n, frame = raw.shape[0], raw.shape[1:]
    pipe = Pipeline(p, n, frame, raw.dtype, source="'data'", streamable=False, **preprocess)
    data, sat = pipe.run(lambda sel: raw[sel])
    mask = stored.get("mask")
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape not in (tuple(frame), (n, *frame)):
            raise DataError(p, f"'mask' has shape {mask.shape}; expected {tuple(frame)} or {(n, *frame)}")
        if mask.ndim == 3:
            mask = mask[pipe.indices]
    recorded = {k: scalar(stored[k]) for k in _SCALARS if k in stored}
    recorded.update({k: tuple(np.asarray(stored[k]).reshape(-1).tolist()) for k in _PAIRS if k in stored})
    fields = {"mask": combine_masks(pipe.transform_mask(mask), sat),
              "metadata": {"source": os.fspath(p), "format": "tike" if tike else "npz"}}
    if pipe.changes_sampling:                     # the stored object size and probe no longer fit
        recorded.pop("obj_shape", None)
        stored.pop("probe", None)
    for name, value in (("padding", padding), ("margin", margin), ("obj_shape", obj_shape),
                        ("probe", probe if probe is not None else stored.get("probe"))):
        value = recorded.get(name) if value is None else value
        if value is not None:
            fields[name] = value
    keywords = {"wavelength": wavelength, "energy": energy, "detector_distance": detector_distance,
                "detector_pixel_size": detector_pixel_size, "geometry_kind": geometry_kind,
                "focus_distance": focus_distance, "propagator": propagator, "pixel_size": pixel_size, "z": z}
    return reader_dataset(p, data, pipe, recorded=recorded, keywords=keywords, positions=stored.get("positions"),
                          positions_m=stored.get("positions_m"), **fields)


def _load_members(p, preprocess):
    """(raw patterns (J, Ny, Nx), the other members found, whether the layout is tike's), checked.

    For tike files the scan becomes "positions", the probe (K, Ny, Nx), and ``fftshift`` defaults to
    True in `preprocess`."""
    with _open_archive(p) as zf:
        files = set(zf.files)
        tike = is_tike(files)
        raw = _member(p, zf, "data")
        stored = {}
        if tike:
            scan = np.asarray(_member(p, zf, "scan"), dtype=np.float64)
            if raw.ndim == 4:
                if raw.shape[0] != 1:
                    raise DataError(p, f"tike data has {raw.shape[0]} views; cuptycho reads one (shape {raw.shape})")
                raw = raw[0]
            stored["positions"] = scan.reshape(-1, scan.shape[-1]) if scan.ndim >= 2 else scan
            if "probe" in files:
                pr = np.asarray(_member(p, zf, "probe"))
                stored["probe"] = pr.reshape(-1, *pr.shape[-2:]) if pr.ndim > 2 else pr[None]
            preprocess.setdefault("fftshift", True)
        else:
            for key in ("positions", "positions_m", "mask", "probe", *_SCALARS, *_PAIRS):
                if key in files:
                    stored[key] = _member(p, zf, key)
    if raw.ndim != 3 or 0 in raw.shape:
        raise DataError(p, f"data must hold (J, Ny, Nx) patterns, got shape {raw.shape}")
    n = raw.shape[0]
    for key in ("positions", "positions_m"):
        if key in stored:
            v = np.asarray(stored[key], dtype=np.float64)
            if v.ndim != 2 or v.shape[1] != 2 or v.shape[0] != n:
                raise DataError(p, f"{n} patterns but {key!r} has shape {v.shape} (expected ({n}, 2))")
            if not np.all(np.isfinite(v)):
                raise DataError(p, f"{key!r} contains NaN or Inf")
            stored[key] = v
    if "positions" not in stored and "positions_m" not in stored:
        raise DataError(p, "missing key 'positions' (object pixels) or 'positions_m' (metres)")
    return raw, stored, tike


def _save(path, arrays: dict, *, overwrite: bool, compress: bool) -> Path:
    p = Path(os.fspath(path))
    with atomic_path(p, overwrite=overwrite) as tmp:
        if p.suffix == ".bz2":                   # zipfile streams into the (unseekable) bz2 writer
            with bz2.open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        else:
            with open(tmp, "wb") as fh:
                (np.savez_compressed if compress else np.savez)(fh, **arrays)
    return p


def write_npz(path, dataset: Dataset, *, overwrite: bool = False, compress: bool = True) -> Path:
    """Write a `Dataset` in cuptycho's .npz layout (module notes), atomically.

    Every recorded field is stored, so `read_npz` gives back an equal Dataset (strings as 0-d
    unicode arrays, no pickle). A path ending in .bz2 is bz2-compressed.
    """
    arrays = {"data": np.asarray(dataset.data), "positions": np.asarray(dataset.positions, dtype=np.float64),
              "propagator": np.asarray(dataset.propagator), "geometry_kind": np.asarray(dataset.geometry_kind),
              "padding": np.broadcast_to(np.asarray(dataset.padding, dtype=np.int64).reshape(-1), (2,)).copy(),
              "margin": np.asarray(dataset.margin), "obj_shape": np.asarray(dataset.obj_shape, dtype=np.int64)}
    optional = {"positions_m": dataset.positions_m, "mask": dataset.mask, "probe": dataset.probe,
                "wavelength": dataset.wavelength, "detector_distance": dataset.detector_distance,
                "detector_pixel_size": dataset.detector_pixel_size, "focus_distance": dataset.focus_distance,
                "pixel_size": None if dataset.pixel_size is None else
                validation.length_pair("pixel_size", dataset.pixel_size),
                "z": dataset.z}
    arrays.update({k: np.asarray(v) for k, v in optional.items() if v is not None})
    return _save(path, arrays, overwrite=overwrite, compress=compress)


def write_tike(path, dataset: Dataset, *, overwrite: bool = False) -> Path:
    """Write a far-field `Dataset` in tike's layout (.npz, or .npz.bz2 for a path ending in .bz2).

    data (1, J, N, N) float32 re-shifted to the zero frequency at [0, 0], scan (1, J, 2) float32 in
    object pixels, probe (1, 1, 1, K, N, N) complex64 when the dataset has a probe guess.
    """
    if dataset.propagator != "farfield":
        raise ValueError("tike's layout stores far-field (fft-shifted) patterns; this dataset is "
                         f"{dataset.propagator!r}")
    arrays = {"data": prep.ifftshift_patterns(np.asarray(dataset.data, dtype=np.float32))[None],
              "scan": np.asarray(dataset.positions, dtype=np.float32)[None]}
    if dataset.probe is not None:
        pr = np.asarray(dataset.probe, dtype=np.complex64)
        pr = pr[None] if pr.ndim == 2 else pr
        arrays["probe"] = pr[None, None, None]
    return _save(path, arrays, overwrite=overwrite, compress=False)


def info_npz(path) -> str:
    """Members of a .npz / .npz.bz2 (shapes and dtypes, small values) and whether it is tike's layout."""
    p = Path(os.fspath(path))
    with _open_archive(p) as zf:
        kind = "tike layout" if is_tike(zf.files) else "cuptycho .npz layout" if "data" in zf.files else "NumPy archive"
        lines = [f"{os.fspath(p)}: NumPy archive ({kind})"]
        for key in zf.files:                      # shapes from the headers: no member is read whole for this
            try:
                header = npz_header(zf, key)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                raise DataError(p, f"cannot read {key!r}: the archive is damaged ({err})") from None
            if header is not None and math.prod(header[0]) > 4:
                lines.append(f"  {key}: {tuple(header[0])} {header[1]}")
                continue
            a = _member(p, zf, key)
            desc = f"{a.shape} {a.dtype}"
            if a.size <= 4:
                desc += f" = {scalar(a) if a.size == 1 else a.tolist()}"
            lines.append(f"  {key}: {desc}")
    return "\n".join(lines)
