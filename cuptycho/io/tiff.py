"""TIFF input and output: a multipage TIFF or a folder of single-frame TIFFs, plus a positions file.

Patterns
--------
One multipage TIFF (one frame per page; a single page holding a (J, Ny, Nx) stack also works), or
a folder of ``*.tif`` / ``*.tiff`` files with one frame each, taken in natural order of their names
(``frame_2.tif`` before ``frame_10.tif``; `cuptycho.io.frames`). Frames are read one page / file at
a time into the float32 output (memory: the output plus one frame), with the streaming preprocessing of
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

from .. import validation
from ..atomic import atomic_path, open_atomic
from ..dataset import Dataset
from ..units import length_scale
from ._common import DataError, combine_masks, reader_dataset
from .frames import TiffFrames, read_frames
from .pipeline import Pipeline, check_options

_UNIT_CHOICES = "m, mm, um, nm, px"


def _position_scale(path, unit) -> float | None:
    """Metres per position unit, None for object pixels, or a DataError naming the units understood."""
    try:
        return length_scale(unit, pixels=True)
    except ValueError:
        raise DataError(path, f"unknown position units {unit!r}; use one of {_UNIT_CHOICES}") from None


def _parse_positions(p, text):
    """(table of numbers, lower-case header cells or None, {"comment": unit} from a '# units:' line)."""
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
    return np.asarray(rows, dtype=np.float64), header, stated


def _yx_columns(p, table, header, stated):
    """The (y, x) columns of `table`, picked by the header's names (recording a unit suffix in `stated`)."""
    if header is None:
        if table.shape[1] != 2:
            raise DataError(p, f"{table.shape[1]} columns without a header naming y and x; expected two (y, x)")
        return table
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
    return table[:, [cols["y"], cols["x"]]]


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
    table, header, stated = _parse_positions(p, text)
    table = _yx_columns(p, table, header, stated)
    found = set(stated.values())
    if units is not None:
        found.add(str(units).lower())
    scales, unknown = {}, []
    for u in found:
        try:
            scales[u] = length_scale(u, pixels=True)
        except ValueError:
            unknown.append(u)
    if unknown:
        raise DataError(p, f"unknown position units {sorted(unknown)}; use one of {_UNIT_CHOICES}")
    if not found:
        raise DataError(p, "the positions file does not state its units: add a header such as 'y_m,x_m' or "
                           "'y_px,x_px', a '# units: m' line, or pass position_units='m' / 'px'")
    kinds = {"px" if v is None else v for v in scales.values()}
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
        Streaming preprocessing: frames, dark, fftshift, crop, center, bin, saturation, chunk_bytes, stream,
        load_limit.

    Returns
    -------
    Dataset
    """
    check_options("read_tiff", preprocess)
    p = Path(os.fspath(path))
    with TiffFrames(p) as src:
        meta = src.metadata.get("cuptycho", {}) if isinstance(src.metadata.get("cuptycho"), dict) else {}
        # positions first: a missing or mismatched positions file is reported before the frames are read
        values, unit = _positions(p, positions, position_units, src.n)
        pipe = Pipeline(p, src.n, src.frame_shape, src.dtype, source="the TIFF folder" if p.is_dir() else "the TIFF",
                        **preprocess)
        data, sat = pipe.run(src.read, lambda: _open_frames(p))
        frame_shape = tuple(src.frame_shape)
    fields = {"mask": combine_masks(pipe.transform_mask(_mask(p, mask, pipe.indices, frame_shape)), sat),
              "metadata": {"source": os.fspath(p), "format": "tiff"}}
    for name, value in (("padding", padding if padding is not None else meta.get("padding")),
                        ("margin", margin if margin is not None else meta.get("margin"))):
        if value is not None:                                   # JSON metadata holds lists
            fields[name] = tuple(value) if isinstance(value, list) else value
    fields.update({k: v for k, v in (("obj_shape", obj_shape), ("probe", probe)) if v is not None})
    keywords = {"wavelength": wavelength, "energy": energy, "detector_distance": detector_distance,
                "detector_pixel_size": detector_pixel_size, "geometry_kind": geometry_kind,
                "focus_distance": focus_distance, "propagator": propagator, "pixel_size": pixel_size, "z": z}
    where = {"positions": values} if unit == "px" else {"positions_m": values}
    return reader_dataset(p, data, pipe, recorded=meta, keywords=keywords, **where, **fields)


def _open_frames(p):
    """(read, close) of the frames of `p`, for streamed data (`Pipeline.run`)."""
    src = TiffFrames(p)
    return src.read, src.close


def _positions(p, positions, position_units, n):
    """(values (n, 2), "m" or "px") from a positions file (default: next to the TIFF) or an array."""
    if positions is None:
        default = p / "positions.csv" if p.is_dir() else p.with_name(f"{p.stem}_positions.csv")
        if not default.exists():
            raise DataError(p, f"no positions: pass positions=FILE (looked for {default})")
        positions = default
    if isinstance(positions, (str, os.PathLike)):
        return read_positions(positions, n, units=position_units)
    values = np.asarray(positions, dtype=np.float64)
    if position_units is None:
        raise DataError(p, "positions given as an array need position_units ('m' or 'px')")
    scale = _position_scale(p, position_units)
    if values.shape != (n, 2):
        raise DataError(p, f"{n} patterns but positions of shape {values.shape}")
    return (values, "px") if scale is None else (values * scale, "m")


def _mask(p, mask, idx, frame_shape):
    """Detector weights from an array or a TIFF (default ``<stem>_mask.tif`` if present), or None."""
    if mask is None and not p.is_dir():
        default = p.with_name(f"{p.stem}_mask.tif")
        mask = default if default.exists() else None
    if isinstance(mask, (str, os.PathLike)):
        m = read_frames(mask)
        mask = m[0] if m.shape[0] == 1 else m[idx]
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape[-2:] != frame_shape:
        raise DataError(p, f"the mask has shape {mask.shape}, the frames {frame_shape}")
    return mask


def write_tiff(path, dataset: Dataset, *, positions_path=None, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the patterns as a multipage float32 TIFF, the positions as CSV and the mask as a TIFF.

    The geometry (wavelength, distances, pixel sizes, kind, propagator, z, padding, margin) goes into
    the TIFF's JSON description, so `read_tiff` restores it. Files: `path`, `positions_path` (default
    ``<stem>_positions.csv``) and, with a mask, ``<stem>_mask.tif``; each written atomically.

    Returns
    -------
    (tiff path, positions path)
    """
    import tifffile

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
           "pixel_size": None if dataset.pixel_size is None else
           list(validation.length_pair("pixel_size", dataset.pixel_size)),
           "z": dataset.z, "padding": np.asarray(dataset.padding).reshape(-1).tolist(), "margin": dataset.margin}
    with atomic_path(p, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, np.asarray(dataset.data, dtype=np.float32), photometric="minisblack",
                         metadata={"cuptycho": json.loads(json.dumps(geo))})
    write_positions(pos_path, dataset, overwrite=overwrite)
    if dataset.mask is not None:
        with atomic_path(mask_path, overwrite=overwrite) as tmp:
            tifffile.imwrite(tmp, np.asarray(dataset.mask, dtype=np.float32), photometric="minisblack")
    return p, pos_path
