"""What every reader shares: the error type, small value helpers and the geometry tail.

`reader_dataset` is the one place where a reader's findings become a `Dataset`: keywords win over
what the file records, an energy becomes a wavelength, cropping and binning rescale the recorded
pixel sizes and positions, the far/near-field defaults are applied and the sampling is derived.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .. import budget, patterns, units, validation
from ..dataset import Dataset

# geometry a reader takes from the file or from keywords (plus "energy", which becomes the wavelength)
GEOMETRY_KEYS = ("wavelength", "detector_distance", "detector_pixel_size", "geometry_kind", "focus_distance",
                 "propagator", "pixel_size", "z")


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


def claimed_bytes(path, what, shape, dtype, *, file_bytes=None, memory=True) -> int:
    """The bytes an array of `shape` and `dtype` takes, checked before it is read: a DataError naming
    `what` and the claimed shape when an uncompressed store (`file_bytes`, the size of the file that
    holds it) is too small to hold it (a damaged header, a truncated file) or, with `memory`, the
    memory budget is (`cuptycho.budget`)."""
    nbytes = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize     # Python ints: no overflow
    claim = f"{what} claims shape {tuple(int(s) for s in shape)} {np.dtype(dtype)}"
    if file_bytes is not None and nbytes > file_bytes:
        raise DataError(path, f"{claim} ({budget.format_bytes(nbytes)} uncompressed) but the file holds only "
                              f"{budget.format_bytes(file_bytes)}: its header is damaged or the file is truncated")
    if not memory:
        return nbytes
    try:
        budget.require(nbytes, claim + ": reading it")
    except budget.MemoryBudgetError as err:
        raise DataError(path, str(err)) from None
    return nbytes


def npz_header(z, key):
    """(shape, dtype, stored bytes) of member `key` of a NumPy archive (an NpzFile) from its .npy header
    alone, or None when the member is not a .npy of a version read here. KeyError if absent."""
    name = f"{key}.npy"
    if name not in z.zip.namelist():
        if key not in z.zip.namelist():
            raise KeyError(key)
        return None
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with z.zip.open(name) as fh:
        reader = readers.get(np.lib.format.read_magic(fh))
        if reader is None:
            return None
        shape, _, dtype = reader(fh)
    return shape, dtype, z.zip.getinfo(name).file_size


def npz_member(path, z, key):
    """Member `key` of a NumPy archive, its header checked first (`claimed_bytes`: the bytes the
    archive stores for it, the memory budget). KeyError if absent; OSError / ValueError if damaged."""
    header = npz_header(z, key)
    if header is not None:
        claimed_bytes(path, repr(key), header[0], header[1], file_bytes=header[2])
    return z[key]


def load_npy(path):
    """A .npy file's array, its header checked against the file's size and the memory budget first
    (a memory map reads only the header and refuses a file too short for it)."""
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    claimed_bytes(path, "the array", mapped.shape, mapped.dtype)
    return np.array(mapped)


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


def combine_masks(*masks):
    """Product of the given weights (None entries skipped); None when there are none. Streamed weights
    (saturation masks of streamed data) stay streamed, the others applied as each row is read."""
    streamed = [m for m in masks if patterns.is_streamed(m)]
    out = None
    for m in masks:
        if m is None or patterns.is_streamed(m):
            continue
        m = np.asarray(m, dtype=np.float32)
        out = m if out is None else out * m
    for s in streamed:
        out = patterns.weighted(s, out)
    return out


def _scaled(name, pair, factor) -> tuple[float, float]:
    return tuple((np.asarray(validation.length_pair(name, pair)) * np.asarray(factor, dtype=np.float64)).tolist())


def merged_geometry(recorded: dict, keywords: dict) -> dict:
    """`GEOMETRY_KEYS` from the file's `recorded` values overridden by the `keywords` that are not None.

    Either may hold an "energy" (J), which wins over a wavelength from the same source (CXI records
    the energy; a wavelength is its fallback); a keyword energy or wavelength wins over the file's.
    """
    def wavelength(source):
        energy = source.get("energy")
        return units.energy_to_wavelength(energy) if energy is not None else source.get("wavelength")

    geo = {k: recorded.get(k) for k in GEOMETRY_KEYS}
    geo.update({k: keywords[k] for k in GEOMETRY_KEYS if keywords.get(k) is not None})
    geo["wavelength"] = wavelength(keywords)
    if geo["wavelength"] is None:
        geo["wavelength"] = wavelength(recorded)
    return geo


def reader_dataset(path, data, pipe, *, recorded=None, keywords=None, positions=None, positions_m=None,
                   **fields) -> Dataset:
    """The Dataset a reader returns: the tail every reader shares, written once.

    Parameters
    ----------
    path : path
        The file (named in every `DataError`).
    data : (J, ny, nx) float32
        The patterns `pipe` (a `Pipeline`) produced.
    recorded, keywords : dict
        Geometry the file records and the reader's keywords (`merged_geometry`). Both describe the
        data as recorded: the sample pixel size is scaled by the crop / bin sampling ratio, the
        detector pixel size by the bin factor.
    positions, positions_m : (J_file, 2), optional
        Positions in object pixels as recorded (divided by the sampling ratio) and in metres, one per
        frame of the file: restricted here to the frames the pipeline read.
    **fields
        Other `Dataset` fields (mask, probe, padding, margin, obj_shape, metadata).

    Returns
    -------
    Dataset
        Via `Dataset.from_measurement` when the wavelength, detector distance and detector pixel size
        are known, else from the stored sample pixel size and z. The geometry kind defaults by the
        propagator and the propagator by the kind (`cuptycho.units`). Any problem is a `DataError`.
    """
    try:
        geo = merged_geometry(recorded or {}, keywords or {})
        geo["geometry_kind"] = geo["geometry_kind"] or units.geometry_kind_of(geo["propagator"])
        ratio = pipe.sampling_ratio(geo["geometry_kind"])
        if geo["pixel_size"] is not None:
            geo["pixel_size"] = _scaled("pixel_size", geo["pixel_size"], ratio)
        if geo["detector_pixel_size"] is not None:
            geo["detector_pixel_size"] = _scaled("detector_pixel_size", geo["detector_pixel_size"], pipe.factor)
        if positions is not None:
            positions = np.asarray(positions, dtype=np.float64)[pipe.indices] / ratio
        if positions_m is not None:
            positions_m = np.asarray(positions_m, dtype=np.float64)[pipe.indices]
        ds = _build(path, data, positions, positions_m, geo, fields)
        _derived_not_overridden(path, keywords or {}, ds, ratio)
        return ds
    except DataError:
        raise
    except ValueError as err:
        raise DataError(path, str(err)) from None


def _derived_not_overridden(path, keywords, ds, ratio):
    """A `pixel_size` or `z` keyword the geometry does not use is an error, never ignored: with the
    wavelength, detector distance and detector pixel size known, both are derived from them (a keyword
    equal to the derived value is accepted)."""
    if ds.detector_distance is None or ds.detector_pixel_size is None:
        return                                    # not derived: the keywords were used (`_build`)
    derived = {"pixel_size": ds.pixel_size, "z": ds.z}
    given = {"pixel_size": None if keywords.get("pixel_size") is None else
             _scaled("pixel_size", keywords["pixel_size"], ratio), "z": keywords.get("z")}
    for key, value in given.items():
        if value is None or (derived[key] is not None and np.allclose(value, derived[key], rtol=1e-6, atol=0)):
            continue
        what = "not used in this geometry" if derived[key] is None else f"derived as {np.round(derived[key], 12)}"
        raise DataError(path, f"{key} = {value} would be ignored: the {key} is {what} from the wavelength, detector "
                              "distance and detector pixel size (give those instead, e.g. detector_distance or "
                              "focus_distance, or leave out " + key + ")")


def _build(path, data, positions, positions_m, geo, fields) -> Dataset:
    """`reader_dataset`'s last step: derive the sampling, or use the stored one, or say what is missing."""
    if positions is None and positions_m is None:
        raise DataError(path, "no scan positions found")
    if all(geo[k] is not None for k in ("wavelength", "detector_distance", "detector_pixel_size")):
        detector = {k: v for k, v in geo.items() if k not in ("pixel_size", "z")}     # those are derived
        return Dataset.from_measurement(data, positions=positions, positions_m=positions_m, **detector, **fields)
    missing = [name for name, key in (("wavelength/energy", "wavelength"), ("detector distance", "detector_distance"),
                                      ("detector pixel size", "detector_pixel_size")) if geo[key] is None]
    if positions is None:
        if geo["pixel_size"] is None:
            raise DataError(path, "positions are in metres but the sample pixel size cannot be derived: "
                                  f"missing {', '.join(missing)} (pass them as keywords)")
        positions = positions_m / np.asarray(validation.length_pair("pixel_size", geo["pixel_size"]))
    geo["propagator"] = geo["propagator"] or units.default_propagator(geo["geometry_kind"])
    if geo["propagator"] != "farfield":
        if geo["z"] is None or geo["wavelength"] is None or geo["pixel_size"] is None:
            raise DataError(path, f"the near-field ({geo['propagator']}) model needs the propagation distance, "
                                  f"wavelength and sample pixel size: missing {', '.join(missing)} "
                                  "(pass them as keywords)")
    else:
        geo["z"] = None
    return Dataset(data=data, positions=positions, positions_m=positions_m, **geo, **fields)
