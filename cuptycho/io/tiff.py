"""TIFF input and output: a multipage TIFF or a folder of single-frame TIFFs, plus a positions file.

Patterns
--------
One multipage TIFF (one frame per page; a single page holding a (J, Ny, Nx) stack also works), or
a folder of ``*.tif`` / ``*.tiff`` files with one frame each, taken in natural order of their names
(``frame_2.tif`` before ``frame_10.tif``). Frames are read one page / file at a time into the
float32 output (memory: the output plus one frame), with the streaming preprocessing of
`cuptycho.io.Pipeline` (``frames``, ``dark``, ``fftshift``, ``crop``/``center``, ``bin``,
``saturation``). Dark frames (``dark=``) may be an array or a TIFF / folder / .npy file; they are
averaged.

Positions file (CSV or TXT)
---------------------------
One row per pattern, in the frames' order; comma, semicolon, tab or whitespace separated::

    # units: m                  optional comment stating the units: m, mm, um, nm or px
    y_m,x_m                     optional header: columns named y and x, optionally with a unit
    1.25e-06,-3.5e-06           suffix (y_um, x_px, ...); other named columns are ignored
    ...

Without a header the file must have exactly two columns, (y, x). The units must be stated, in the
header, in a ``# units:`` comment or with ``position_units=`` (a contradiction between them is an
error). Metres (and mm, um, nm) are probe positions along the object's axes, converted to pixels by
the sample pixel size (`cuptycho.Dataset.from_measurement`); ``px`` are object pixels.

Geometry comes from keywords (wavelength or energy, detector_distance, detector_pixel_size,
geometry_kind, focus_distance, ...) or, for files written by `write_tiff`, from the JSON metadata
stored in the TIFF description.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .. import dataset as ds_mod
from ..dataset import Dataset
from ._common import PREPROCESS_KEYS, DataError, Pipeline, combine_masks, make_dataset
from .atomic import atomic_path, open_atomic

UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "nm": 1e-9, "px": None, "pixel": None, "pixels": None}
TIFF_SUFFIXES = (".tif", ".tiff")
_GEOMETRY_KEYS = ("wavelength", "detector_distance", "detector_pixel_size", "geometry_kind", "focus_distance",
                  "propagator", "pixel_size", "z", "padding", "margin")


def _tifffile():
    import tifffile
    return tifffile


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def tiff_files(folder) -> list[Path]:
    """The TIFF files of `folder` in natural order of their names."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file()]
    return sorted(files, key=_natural_key)


class _Source:
    """Random access to the frames of a multipage TIFF or a folder of TIFFs, one frame at a time."""

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        tifffile = _tifffile()
        self.metadata = {}
        self._tif = None
        self._stack = None
        if not self.path.exists():
            raise DataError(self.path, "no such file or folder")
        try:
            if self.path.is_dir():
                self.files = tiff_files(self.path)
                if not self.files:
                    raise DataError(self.path, "the folder holds no .tif / .tiff files")
                first = tifffile.TiffFile(self.files[0])
                with first:
                    page = first.pages[0]
                    self.frame_shape, self.dtype = tuple(page.shape), page.dtype
                self.n = len(self.files)
            else:
                self.files = None
                self._tif = tifffile.TiffFile(self.path)
                series = self._tif.series[0]
                if self._tif.shaped_metadata:
                    self.metadata = dict(self._tif.shaped_metadata[0])
                pages = self._tif.pages
                shape = tuple(series.shape)
                if len(shape) == 2:
                    self.n, self.frame_shape = 1, shape
                elif len(shape) == 3 and len(pages) == shape[0]:
                    self.n, self.frame_shape = shape[0], shape[1:]
                elif len(shape) == 3:                # one page holding the whole stack
                    self._stack = series.asarray()
                    self.n, self.frame_shape = shape[0], shape[1:]
                else:
                    raise DataError(self.path, f"expected (J, Ny, Nx) frames, the TIFF holds shape {shape}")
                self.dtype = series.dtype
                size = self.path.stat().st_size
                for j, page in enumerate(pages):     # a truncated file still parses its first headers
                    ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
                    if not ends or max(ends) > size:
                        raise DataError(self.path, f"truncated or corrupt TIFF: the data of page {j} lie beyond "
                                                   f"the end of the file ({size} bytes)")
        except DataError:
            self.close()
            raise
        except (OSError, ValueError, IndexError, KeyError) as err:   # tifffile.TiffFileError is a ValueError
            self.close()
            raise DataError(self.path, f"not a readable TIFF ({err})") from None
        if len(self.frame_shape) != 2:
            self.close()
            raise DataError(self.path, f"frames must be 2-D images, got shape {self.frame_shape}")

    def frame(self, j: int) -> np.ndarray:
        try:
            if self._stack is not None:
                a = self._stack[j]
            elif self.files is not None:
                a = _tifffile().imread(self.files[j])
            else:
                a = self._tif.pages[j].asarray()
        except (OSError, ValueError, IndexError) as err:
            name = self.files[j] if self.files is not None else self.path
            raise DataError(name, f"cannot read frame {j} ({err})") from None
        if a.shape != self.frame_shape:
            where = self.files[j] if self.files is not None else f"{self.path} page {j}"
            raise DataError(self.path, f"frame {j} ({where}) has shape {a.shape}, the first {self.frame_shape}")
        return a

    def read(self, sel):
        idx = np.arange(self.n)[sel]
        return np.stack([self.frame(int(j)) for j in idx])

    def close(self):
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_frames(path) -> np.ndarray:
    """All frames of a multipage TIFF or a TIFF folder as one (J, Ny, Nx) array (dark frames, masks)."""
    with _Source(path) as src:
        return src.read(slice(None))


def read_positions(path, n=None, *, units=None):
    """Positions from a CSV / TXT file (format in the module notes).

    Parameters
    ----------
    path : str or os.PathLike
    n : int, optional
        Number of patterns they must match.
    units : {"m", "mm", "um", "nm", "px"}, optional
        Units, if the file does not state them (a contradiction is an error).

    Returns
    -------
    values : (J, 2) float64
        (y, x) in metres, or in object pixels when ``unit == "px"``.
    unit : str
        "m" or "px".
    """
    p = Path(os.fspath(path))
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(p, f"cannot read the positions file ({err})") from None
    stated = {}
    rows, header = [], None
    for k, line in enumerate(text.splitlines()):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = re.match(r"#\s*units?\s*[:=]\s*(\S+)", s, re.I)
            if m:
                stated["comment"] = m.group(1).lower()
            continue
        cells = [c for c in re.split(r"[,;\t ]+", s) if c]
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            if header is None and not rows:
                header = [c.lower() for c in cells]
                continue
            raise DataError(p, f"line {k + 1} is not a row of numbers: {line!r}") from None
    if not rows:
        raise DataError(p, "no positions in the file")
    if len({len(r) for r in rows}) != 1:
        raise DataError(p, "rows have different numbers of columns")
    table = np.asarray(rows, dtype=np.float64)
    if header is not None:
        if len(header) != table.shape[1]:
            raise DataError(p, f"the header names {len(header)} columns but the rows have {table.shape[1]}")
        cols = {}
        for i, name in enumerate(header):
            m = re.fullmatch(r"([yx])(?:[_\[\(\s]*([a-zµ]+)[\]\)]?)?", name)
            if m:
                cols[m.group(1)] = i
                if m.group(2):
                    stated.setdefault("header", m.group(2))
        if set(cols) != {"y", "x"}:
            raise DataError(p, f"the header {header} must name a 'y' and an 'x' column (e.g. y_m,x_m)")
        table = table[:, [cols["y"], cols["x"]]]
    elif table.shape[1] != 2:
        raise DataError(p, f"{table.shape[1]} columns without a header naming y and x; expected two (y, x)")
    found = set(stated.values())
    if units is not None:
        found.add(str(units).lower())
    unknown = found - set(UNITS)
    if unknown:
        raise DataError(p, f"unknown position units {sorted(unknown)}; use one of m, mm, um, nm, px")
    kinds = {("px" if UNITS[u] is None else UNITS[u]) for u in found}
    if not found:
        raise DataError(p, "the positions file does not state its units: add a header such as 'y_m,x_m' or "
                           "'y_px,x_px', a '# units: m' line, or pass position_units='m' / 'px'")
    if len(kinds) > 1:
        raise DataError(p, f"contradictory position units {sorted(found)} (file and argument disagree)")
    if not np.all(np.isfinite(table)):
        raise DataError(p, "positions contain NaN or Inf")
    if n is not None and table.shape[0] != n:
        raise DataError(p, f"{table.shape[0]} positions but {n} patterns")
    kind = kinds.pop()
    return (table, "px") if kind == "px" else (table * kind, "m")


def write_positions(path, dataset: Dataset, *, overwrite: bool = False) -> Path:
    """The dataset's positions as CSV: ``y_m,x_m`` when metres are known, else ``y_px,x_px``."""
    if dataset.positions_m is not None:
        values, header = dataset.positions_m, "y_m,x_m"
    else:
        values, header = dataset.positions, "y_px,x_px"
    with open_atomic(path, "w", overwrite=overwrite, encoding="utf-8", newline="\n") as fh:
        fh.write(f"# cuptycho positions: probe (y, x) along the object's rows and columns\n{header}\n")
        for y, x in values:
            fh.write(f"{float(y)!r},{float(x)!r}\n")
    return Path(os.fspath(path))


def read_tiff(path, positions=None, *, position_units=None, mask=None, probe=None, wavelength=None, energy=None,
              detector_distance=None, detector_pixel_size=None, geometry_kind=None, focus_distance=None,
              propagator=None, pixel_size=None, z=None, padding=None, margin=None, obj_shape=None,
              **preprocess) -> Dataset:
    """Read patterns from a multipage TIFF or a TIFF folder and positions from a CSV / TXT file.

    Parameters
    ----------
    path : str or os.PathLike
        A .tif / .tiff file or a folder of them.
    positions : path or (J, 2) array, optional
        The positions file (module notes); default ``<stem>_positions.csv`` next to a TIFF file, or
        ``positions.csv`` inside a folder. An array needs `position_units`.
    position_units : {"m", "mm", "um", "nm", "px"}, optional
    mask : (Ny, Nx) array or path, optional
        Detector weights (1 valid, 0 bad) or a TIFF of them; default ``<stem>_mask.tif`` if present.
    probe, wavelength, energy, detector_distance, detector_pixel_size, geometry_kind, focus_distance,
    propagator, pixel_size, z, padding, margin, obj_shape
        Geometry and `Dataset` fields (keywords win over metadata stored by `write_tiff`).
    **preprocess
        Streaming preprocessing: frames, dark, fftshift, crop, center, bin, saturation, chunk_bytes.

    Returns
    -------
    Dataset
    """
    unknown = set(preprocess) - set(PREPROCESS_KEYS)
    if unknown:
        raise TypeError(f"read_tiff got unexpected keyword(s) {sorted(unknown)}")
    p = Path(os.fspath(path))
    with _Source(p) as src:
        n = src.n
        meta = src.metadata.get("cuptycho", {}) if isinstance(src.metadata.get("cuptycho"), dict) else {}
        # positions first: a missing or mismatched positions file is reported before the frames are read
        if positions is None:
            default = p / "positions.csv" if p.is_dir() else p.with_name(f"{p.stem}_positions.csv")
            if not default.exists():
                raise DataError(p, f"no positions: pass positions=FILE (looked for {default})")
            positions = default
        if isinstance(positions, (str, os.PathLike)):
            values, unit = read_positions(positions, n, units=position_units)
        else:
            values = np.asarray(positions, dtype=np.float64)
            if position_units is None:
                raise DataError(p, "positions given as an array need position_units ('m' or 'px')")
            if str(position_units).lower() not in UNITS:
                raise DataError(p, f"unknown position units {position_units!r}; use one of m, mm, um, nm, px")
            if values.shape != (n, 2):
                raise DataError(p, f"{n} patterns but positions of shape {values.shape}")
            scale = UNITS[str(position_units).lower()]
            values, unit = (values, "px") if scale is None else (values * scale, "m")
        pipe = Pipeline(p, src.n, src.frame_shape, src.dtype, **preprocess)
        data, sat = pipe.run(src.read)
    idx = pipe.indices
    values = values[idx]
    # mask
    if mask is None and not p.is_dir():
        default = p.with_name(f"{p.stem}_mask.tif")
        mask = default if default.exists() else None
    if isinstance(mask, (str, os.PathLike)):
        m = read_frames(mask)
        mask = m[0] if m.shape[0] == 1 else m[idx]
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape[-2:] != tuple(src.frame_shape):
            raise DataError(p, f"the mask has shape {mask.shape}, the frames {tuple(src.frame_shape)}")
    mask = combine_masks(pipe.transform_mask(mask), sat)
    # geometry: keywords, else the metadata write_tiff stored
    kw = {k: meta.get(k) for k in _GEOMETRY_KEYS}
    given = {"wavelength": wavelength, "detector_distance": detector_distance,
             "detector_pixel_size": detector_pixel_size, "geometry_kind": geometry_kind,
             "focus_distance": focus_distance, "propagator": propagator, "pixel_size": pixel_size, "z": z,
             "padding": padding, "margin": margin}
    kw.update({k: v for k, v in given.items() if v is not None})
    if energy is not None:
        kw["wavelength"] = ds_mod.energy_to_wavelength(energy)
    kind = kw["geometry_kind"] or ("farfield" if kw["propagator"] in (None, "farfield") else "nearfield")
    ratio = pipe.sampling_ratio(kind)
    if kw["pixel_size"] is not None:
        kw["pixel_size"] = tuple((np.asarray(kw["pixel_size"], dtype=np.float64) * ratio).tolist())
    if kw["detector_pixel_size"] is not None:
        kw["detector_pixel_size"] = tuple((np.asarray(kw["detector_pixel_size"], dtype=np.float64) *
                                           np.asarray(pipe.factor)).tolist())
    fields = {"mask": mask, "metadata": {"source": os.fspath(p), "format": "tiff"}}
    for name in ("padding", "margin"):
        value = kw.pop(name)
        if value is not None:
            fields[name] = tuple(value) if isinstance(value, list) else value
    if obj_shape is not None:
        fields["obj_shape"] = obj_shape
    if probe is not None:
        fields["probe"] = probe
    if unit == "px":
        return make_dataset(p, data, positions=values / ratio, **kw, **fields)
    return make_dataset(p, data, positions_m=values, **kw, **fields)


def write_tiff(path, dataset: Dataset, *, positions_path=None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the patterns as a multipage float32 TIFF, the positions as CSV and the mask as a TIFF.

    The geometry (wavelength, distances, pixel sizes, kind, propagator, z, padding, margin) goes into
    the TIFF's JSON description, so `read_tiff` restores it. Files: `path`, `positions_path` (default
    ``<stem>_positions.csv``) and, with a mask, ``<stem>_mask.tif``; each written atomically.

    Returns
    -------
    (tiff path, positions path)
    """
    tifffile = _tifffile()
    p = Path(os.fspath(path))
    pos_path = Path(positions_path) if positions_path is not None else p.with_name(f"{p.stem}_positions.csv")
    mask_path = p.with_name(f"{p.stem}_mask.tif")
    targets = [p, pos_path] + ([mask_path] if dataset.mask is not None else [])
    for t in targets:                                    # refuse before writing anything
        if t.exists() and not overwrite:
            raise FileExistsError(f"{t} already exists; refusing to overwrite it (pass overwrite=True)")
    geo = {"wavelength": dataset.wavelength, "detector_distance": dataset.detector_distance,
           "detector_pixel_size": None if dataset.detector_pixel_size is None else list(dataset.detector_pixel_size),
           "geometry_kind": dataset.geometry_kind, "focus_distance": dataset.focus_distance,
           "propagator": dataset.propagator,
           "pixel_size": None if dataset.pixel_size is None else list(ds_mod.geometry.pixel_pair(dataset.pixel_size)),
           "z": dataset.z, "padding": np.asarray(dataset.padding).reshape(-1).tolist(), "margin": dataset.margin}
    with atomic_path(p, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, np.asarray(dataset.data, dtype=np.float32), photometric="minisblack",
                         metadata={"cuptycho": json.loads(json.dumps(geo))})
    write_positions(pos_path, dataset, overwrite=overwrite)
    if dataset.mask is not None:
        with atomic_path(mask_path, overwrite=overwrite) as tmp:
            tifffile.imwrite(tmp, np.asarray(dataset.mask, dtype=np.float32), photometric="minisblack")
    return p, pos_path
