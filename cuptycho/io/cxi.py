"""CXI (Coherent X-ray Imaging format, v1.6, HDF5) input and reconstruction output.

Reading a measurement (`read_cxi`)
----------------------------------
===============================================  ===============================================
path (entry ``entry_1`` unless told otherwise)   use
===============================================  ===============================================
``data_1/data`` or ``instrument_1/detector_1/``  (J, Ny, Nx) intensities, read in slabs
``data``
``instrument_1/detector_1/mask``                 (Ny, Nx) or (J, Ny, Nx) bitfield, nonzero = bad
                                                 (``mask_bits`` picks the bits that count)
``sample_1/geometry_1/translation`` or           sample translations in metres: the spec's (J, 3)
``data_1/translation``                           (x, y, z) rows, PyNX's (3, J) variant (detected by
                                                 shape; a (3, 3) array is read as the spec's), or
                                                 (J, 2); a ``units`` attribute (m, mm, um, nm) is
                                                 honoured
``instrument_1/detector_1/distance``             sample-to-detector distance (m)
``instrument_1/detector_1/{x,y}_pixel_size``     detector pixel size (m)
``instrument_1/detector_1/basis_vectors``        (3, 2) or (2, 3): directions of the rows/columns
``instrument_1/source_1/energy``                 photon energy (J); ``wavelength`` (m) if absent
``cuptycho/``                                    our own group (written by `write_cxi`): positions
                                                 in pixels (they win over the translations), the
                                                 propagator, geometry kind, focus distance,
                                                 sample pixel size, z, padding, margin, weights,
                                                 probe guess
===============================================  ===============================================

Positions: ``positions_m = pinv(B) (-t)`` (`cuptycho.dataset.translations_to_positions`; the CXI
translation is the sample's, the probe moves by its negative). Keywords override anything in the file.

Writing results (`write_result`)
--------------------------------
The layout ptychodus writes (its ``CXIProductFileIO``): ``/entry_1/image_1/data`` the probe
(1, K, Ny, Nx), axes ``coherent:incoherent:y:x``; ``/entry_1/image_2/data`` the object (Mo, H, W),
axes ``layer:y:x``; each image with ``image_size`` (width, height, 0 in metres), ``data_type``,
``data_space`` and links to ``source_1`` / ``detector_1``; ``sample_1/geometry_1/translation`` the
refined probe positions (probe centre, x, y, 0 in metres, relative to the object's corner; pixels
when no pixel size is known), ``source_1/energy``, ``detector_1/distance``, ``process_1``
(program, version, date) and ptychodus' ``/entry_1/ptychodus`` extras (pixel sizes, object centre,
loss epochs and values). Our own group ``/entry_1/cuptycho`` holds what cuptycho needs to resume
or report: ``object`` and ``probe`` (all modes), ``positions`` and ``positions_nominal`` (pixels),
``z``, ``loss`` (per epoch), ``history``, ``timings``, ``events`` and ``config`` (JSON strings),
``device``.

Every write is atomic (`cuptycho.io.atomic`) and refuses to replace an existing file unless
``overwrite=True``.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path

import numpy as np

from .. import dataset as ds_mod
from ..dataset import Dataset
from ._common import PREPROCESS_KEYS, DataError, Pipeline, combine_masks, make_dataset, scalar
from .atomic import atomic_path

CXI_VERSION = 160
PIXEL_INVALID = 0x00000001          # CXI 1.6 mask bit 0: "invalid"
GROUP = "cuptycho"
FORMAT = "cuptycho-cxi-1"
_LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6, "nm": 1e-9}


def _h5py():
    import h5py
    return h5py


def open_hdf5(path):
    """An h5py.File opened read-only, or a DataError saying why the file cannot be read."""
    h5py = _h5py()
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataError(p, "no such file")
    try:
        return h5py.File(p, "r")
    except OSError as err:
        raise DataError(p, f"not a readable HDF5 file; is it truncated or corrupt? ({err})") from None


def _get(f, path, name=None):
    """f[path] if present (dangling links count as absent), else None."""
    try:
        return f[path] if path in f else None
    except (KeyError, OSError):
        return None


def _read(path, dset, what, sel=()):
    try:
        return dset[sel]
    except (OSError, ValueError, TypeError) as err:
        raise DataError(path, f"cannot read {what} ({dset.name}): the file is damaged or truncated ({err})") from None


def _float_value(path, f, key, what):
    d = _get(f, key)
    if d is None:
        return None
    try:
        v = float(np.asarray(_read(path, d, what)).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise DataError(path, f"{key} ({what}) is not a number") from None
    if not np.isfinite(v) or v <= 0:
        raise DataError(path, f"{key} ({what}) must be a positive number, got {v!r}")
    return v


def _entry(path, f, entry):
    if entry is not None:
        if _get(f, entry) is None:
            raise DataError(path, f"no group /{entry.strip('/')} in the file")
        return "/" + entry.strip("/")
    names = sorted(k for k in f.keys() if k.startswith("entry_"))
    for name in names:
        if any(_get(f, f"/{name}/{p}") is not None for p in ("data_1/data", "instrument_1/detector_1/data")):
            return "/" + name
    return "/" + names[0] if names else "/entry_1"


def _translations(path, f, entry, n, translation_path):
    keys = [translation_path] if translation_path else [f"{entry}/sample_1/geometry_1/translation",
                                                        f"{entry}/data_1/translation"]
    for key in keys:
        d = _get(f, key)
        if d is None:
            continue
        t = np.asarray(_read(path, d, "translations"), dtype=np.float64)
        unit = scalar(d.attrs.get("units", "m")) if hasattr(d, "attrs") else "m"
        scale = _LENGTH_UNITS.get(str(unit).strip().lower())
        if scale is None:
            raise DataError(path, f"{key} has units {unit!r}; expected one of {sorted(_LENGTH_UNITS)}")
        if t.ndim == 2 and t.shape[0] == n and t.shape[1] in (2, 3):
            pass                                         # the spec's (N, 3) (or (N, 2)) layout
        elif t.ndim == 2 and t.shape[1] == n and t.shape[0] in (2, 3):
            t = t.T                                      # PyNX's (3, N) variant
        else:
            raise DataError(path, f"{n} patterns but the translations at {key} have shape {t.shape} "
                                  f"(expected ({n}, 3), or (3, {n}) as PyNX writes)")
        if not np.all(np.isfinite(t)):
            raise DataError(path, f"{key} contains NaN or Inf translations")
        return t * scale, key
    return None, None


def _group_value(g, name):
    if g is None or name not in g:
        return None
    v = g[name][()]
    return scalar(v) if np.ndim(v) == 0 or isinstance(v, bytes) else np.asarray(v)


def read_cxi(path, *, entry=None, geometry_kind=None, focus_distance=None, propagator=None, padding=None,
             wavelength=None, energy=None, detector_distance=None, detector_pixel_size=None, pixel_size=None,
             z=None, mask_bits=None, probe=None, margin=None, obj_shape=None, data_path=None,
             translation_path=None, **preprocess) -> Dataset:
    """Read a CXI (or CXI-like HDF5) ptychography measurement as a `Dataset`.

    Parameters
    ----------
    path : str or os.PathLike
    entry : str, optional
        The entry group (default: the first ``entry_N`` holding data).
    geometry_kind : {"farfield", "nearfield"}, optional
        Default: what a cuptycho-written file records, else "farfield" (CXI does not say).
    focus_distance : float, optional
        Focus-to-sample distance z1 (m) of a Fresnel-scaled near-field geometry (e.g. 3.65e-3 for the
        PETRA III P25 file in ``../shared/data``).
    propagator, padding, margin, obj_shape, probe
        `Dataset` fields; `probe` (K, Ny, Nx) overrides a stored probe guess.
    wavelength, energy, detector_distance, detector_pixel_size
        Override the file's values (m, J, m, m). Like the file's, they describe the data as recorded:
        binning scales the detector pixel size, cropping and binning the derived sample pixel size.
    pixel_size, z
        Sample pixel size and propagation distance to use when the detector quantities are incomplete.
    mask_bits : int, optional
        Bits of the CXI mask that make a pixel bad (default: any nonzero bit).
    data_path, translation_path : str, optional
        Paths of the patterns and translations in a file that does not follow the CXI layout.
    **preprocess
        Streaming preprocessing (`cuptycho.io.Pipeline`): ``frames`` (slice or indices), ``dark``
        (array or file), ``fftshift`` (data stored with zero frequency at [0, 0]), ``crop`` and
        ``center`` ((row, col), "mass" or "max"), ``bin``, ``saturation`` (per-frame mask),
        ``chunk_bytes`` (slab size, default 64 MiB).

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        Unreadable / truncated file, missing data, translations that do not match the patterns,
        NaN frames, missing geometry; the message names the file and the problem.

    Notes
    -----
    Memory: the patterns are read in slabs of about ``chunk_bytes`` and preprocessed on the way, so
    the peak is the float32 output (J, ny, nx) after cropping and binning plus one slab.
    """
    unknown = set(preprocess) - set(PREPROCESS_KEYS)
    if unknown:
        raise TypeError(f"read_cxi got unexpected keyword(s) {sorted(unknown)}")
    with open_hdf5(path) as f:
        e = _entry(path, f, entry)
        candidates = [data_path] if data_path else [f"{e}/data_1/data", f"{e}/instrument_1/detector_1/data"]
        dset = next((d for d in (_get(f, c) for c in candidates) if d is not None), None)
        if dset is None or not hasattr(dset, "shape"):
            raise DataError(path, f"no diffraction data: looked for {' and '.join(candidates)}")
        shape = dset.shape
        lead = 0
        while len(shape) - lead > 3 and shape[lead] == 1:
            lead += 1
        if len(shape) - lead != 3 or 0 in shape:
            raise DataError(path, f"{dset.name} must hold (J, Ny, Nx) patterns, got shape {shape}")
        n, frame = shape[lead], shape[lead + 1:]
        g = _get(f, f"{e}/{GROUP}")
        det = f"{e}/instrument_1/detector_1"
        # geometry recorded in the file; keywords win
        e_j = _float_value(path, f, f"{e}/instrument_1/source_1/energy", "photon energy")
        wl = _float_value(path, f, f"{e}/instrument_1/source_1/wavelength", "wavelength")
        if wavelength is None and energy is None:
            wavelength = ds_mod.energy_to_wavelength(e_j) if e_j is not None else wl
        elif energy is not None:
            wavelength = ds_mod.energy_to_wavelength(energy)
        if detector_distance is None:
            detector_distance = _float_value(path, f, f"{det}/distance", "detector distance")
        if detector_pixel_size is None:
            py = _float_value(path, f, f"{det}/y_pixel_size", "detector pixel height")
            px = _float_value(path, f, f"{det}/x_pixel_size", "detector pixel width")
            if (py is None) != (px is None):
                py = px = py or px
            detector_pixel_size = None if py is None else (py, px)
        basis = None
        b = _get(f, f"{det}/basis_vectors")
        if b is not None:
            basis = np.asarray(_read(path, b, "basis vectors"), dtype=np.float64)
            try:
                ds_mod._unit_basis(basis)
            except ValueError as err:
                raise DataError(path, f"{b.name}: {err}") from None
        translations, tkey = _translations(path, f, e, n, translation_path)
        # our own group: exact values written by write_cxi
        stored = {k: _group_value(g, k) for k in ("positions", "propagator", "geometry_kind", "focus_distance",
                                                  "pixel_size", "z", "padding", "margin", "obj_shape", "weights",
                                                  "probe")}
        if stored["positions"] is not None and np.shape(stored["positions"]) != (n, 2):
            raise DataError(path, f"{n} patterns but {e}/{GROUP}/positions has shape {np.shape(stored['positions'])}")
        geometry_kind = geometry_kind or stored["geometry_kind"]
        propagator = propagator or stored["propagator"]
        if focus_distance is None and stored["focus_distance"] is not None and np.isfinite(stored["focus_distance"]):
            focus_distance = stored["focus_distance"]
        # masks: the CXI bitfield, or the exact weights we stored
        weights = stored["weights"]
        if weights is None:
            m = _get(f, f"{det}/mask")
            m = _get(f, f"{e}/data_1/mask") if m is None else m
            if m is not None:
                bits = np.asarray(_read(path, m, "mask"))
                if bits.shape not in (tuple(frame), (n, *frame)):
                    raise DataError(path, f"{m.name} has shape {bits.shape}; expected {tuple(frame)} or {(n, *frame)}")
                bad = (bits & mask_bits) != 0 if mask_bits is not None else bits != 0
                weights = (~bad).astype(np.float32)
        pipe = Pipeline(path, n, frame, dset.dtype, **preprocess)

        def read(sel):
            return _read(path, dset, "diffraction data", (0,) * lead + (sel,))

        data, sat = pipe.run(read)
    idx = pipe.indices
    if weights is not None and np.ndim(weights) == 3:
        weights = weights[idx]
    mask = combine_masks(pipe.transform_mask(weights), sat)
    positions_m = None
    if translations is not None:
        try:
            positions_m = ds_mod.translations_to_positions(translations, basis)[idx]
        except ValueError as err:
            raise DataError(path, f"{tkey}: {err}") from None
    kind = geometry_kind or ("farfield" if propagator in (None, "farfield") else "nearfield")
    ratio = pipe.sampling_ratio(kind)
    positions = None
    if stored["positions"] is not None:
        positions = np.asarray(stored["positions"], dtype=np.float64)[idx] / ratio
    if pixel_size is None and stored["pixel_size"] is not None:
        pixel_size = stored["pixel_size"]
    if pixel_size is not None:               # keywords and file values describe the data as recorded
        pixel_size = tuple((np.asarray(ds_mod.geometry.pixel_pair(pixel_size)) * ratio).tolist())
    if detector_pixel_size is not None:
        detector_pixel_size = tuple((np.asarray(ds_mod.geometry.pixel_pair(detector_pixel_size)) *
                                     np.asarray(pipe.factor)).tolist())
    if z is None and stored["z"] is not None and np.isfinite(stored["z"]):
        z = float(stored["z"])
    if probe is None and stored["probe"] is not None and not pipe.changes_sampling:
        probe = stored["probe"]
    fields = {"mask": mask, "probe": probe,
              "metadata": {"source": os.fspath(path), "format": "cxi", "entry": e, "basis_vectors": basis}}
    if padding is not None or stored["padding"] is not None:
        pad = padding if padding is not None else tuple(int(v) for v in np.atleast_1d(stored["padding"]))
        fields["padding"] = pad
    for name, value in (("margin", margin if margin is not None else stored["margin"]),
                        ("obj_shape", obj_shape)):
        if value is not None:
            fields[name] = tuple(int(v) for v in np.atleast_1d(value)) if name == "obj_shape" else int(value)
    if obj_shape is None and stored["obj_shape"] is not None and not pipe.changes_sampling and \
            stored["positions"] is not None and pipe.indices.size == n:
        fields["obj_shape"] = tuple(int(v) for v in np.atleast_1d(stored["obj_shape"]))
    return make_dataset(path, data, positions=positions, positions_m=positions_m, wavelength=wavelength,
                        detector_distance=detector_distance, detector_pixel_size=detector_pixel_size,
                        geometry_kind=geometry_kind, focus_distance=focus_distance, propagator=propagator,
                        pixel_size=pixel_size, z=z, **fields)


# --------------------------------------------------------------------------- writing a measurement

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _str(group, name, value):
    group.create_dataset(name, data=str(value))


def _new_entry(f):
    """The CXI skeleton every file we write starts with: (entry_1, its source_1, its detector_1)."""
    f.create_dataset("cxi_version", data=CXI_VERSION)
    f.create_dataset("number_of_entries", data=1)
    e = f.create_group("entry_1")
    _str(e, "start_time", _now())
    return e, e.create_group("instrument_1/source_1"), e.create_group("instrument_1/detector_1")


def write_cxi(path, dataset: Dataset, *, overwrite: bool = False, compression: str | None = "gzip") -> Path:
    """Write a `Dataset` as a CXI 1.6 file (atomically; an existing file only with ``overwrite=True``).

    Layout: ``/cxi_version`` 160; ``/entry_1/instrument_1/detector_1/`` ``data`` (J, Ny, Nx) float32
    (chunked per frame, gzip), ``mask`` (uint32 bitfield, bit 0 = invalid, where the weight is 0),
    ``distance``, ``x_pixel_size``, ``y_pixel_size``, ``basis_vectors`` (3, 2); ``source_1/energy`` (J)
    and ``wavelength`` (m); ``/entry_1/sample_1/geometry_1/translation`` (J, 3) sample translations
    in metres (from `Dataset.positions_m`, else positions times the sample pixel size); soft links
    ``/entry_1/data_1/data`` and ``translation``; and ``/entry_1/cuptycho/`` with the positions in
    pixels, the model (propagator, geometry kind, focus distance, sample pixel size, z, padding,
    margin, object size), the exact mask weights and the probe guess, so `read_cxi` gives back the
    same Dataset.
    """
    h5py = _h5py()
    if not isinstance(dataset, Dataset):
        raise TypeError(f"write_cxi needs a cuptycho.Dataset, got {type(dataset).__name__}")
    n, ny, nx = dataset.data.shape
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        e, src, det = _new_entry(f)
        if dataset.wavelength is not None:
            src.create_dataset("energy", data=dataset.energy)
            src.create_dataset("wavelength", data=dataset.wavelength)
        d = det.create_dataset("data", shape=(n, ny, nx), dtype=np.float32, chunks=(1, ny, nx),
                               compression=compression)
        slab = max(1, (64 * 2**20) // (4 * ny * nx))
        for s in range(0, n, slab):
            d[s:s + slab] = np.asarray(dataset.data[s:s + slab], dtype=np.float32)
        if dataset.mask is not None:
            w = np.asarray(dataset.mask, dtype=np.float64)
            det.create_dataset("mask", data=np.where(w == 0, PIXEL_INVALID, 0).astype(np.uint32),
                               compression=compression)
        if dataset.detector_distance is not None:
            det.create_dataset("distance", data=dataset.detector_distance)
        if dataset.detector_pixel_size is not None:
            py, px = dataset.detector_pixel_size
            det.create_dataset("x_pixel_size", data=px)
            det.create_dataset("y_pixel_size", data=py)
        basis = dataset.metadata.get("basis_vectors") if dataset.metadata else None
        if basis is None and dataset.detector_pixel_size is not None:
            basis = ds_mod.DEFAULT_BASIS * np.asarray(dataset.detector_pixel_size)[None, :]
        if basis is not None:
            det.create_dataset("basis_vectors", data=np.asarray(basis, dtype=np.float64))
        positions_m = dataset.positions_m
        if positions_m is None and dataset.pixel_size is not None:
            positions_m = dataset.positions * np.asarray(ds_mod.geometry.pixel_pair(dataset.pixel_size))
        data_1 = e.create_group("data_1")
        data_1["data"] = h5py.SoftLink(d.name)
        if positions_m is not None:
            geo = e.create_group("sample_1/geometry_1")
            t = geo.create_dataset("translation", data=ds_mod.positions_to_translations(positions_m, basis))
            t.attrs["units"] = "m"
            data_1["translation"] = h5py.SoftLink(t.name)
        g = e.create_group(GROUP)
        g.attrs["format"] = FORMAT
        g.create_dataset("positions", data=dataset.positions)
        _str(g, "propagator", dataset.propagator)
        _str(g, "geometry_kind", dataset.geometry_kind)
        g.create_dataset("focus_distance", data=np.nan if dataset.focus_distance is None else dataset.focus_distance)
        if dataset.pixel_size is not None:
            g.create_dataset("pixel_size", data=np.asarray(ds_mod.geometry.pixel_pair(dataset.pixel_size)))
        g.create_dataset("z", data=np.nan if dataset.z is None else dataset.z)
        g.create_dataset("padding", data=np.broadcast_to(np.asarray(dataset.padding, dtype=np.int64).reshape(-1), (2,)))
        g.create_dataset("margin", data=int(dataset.margin))
        g.create_dataset("obj_shape", data=np.asarray(dataset.obj_shape, dtype=np.int64))
        if dataset.mask is not None:
            g.create_dataset("weights", data=np.asarray(dataset.mask, dtype=np.float32), compression=compression)
        if dataset.probe is not None:
            g.create_dataset("probe", data=np.asarray(dataset.probe))
    return Path(os.fspath(path))


# --------------------------------------------------------------------------- results

def _json(value) -> str:
    def default(o):
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        return repr(o)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {fl.name: getattr(value, fl.name) for fl in dataclasses.fields(value)}
    return json.dumps(value, default=default)


def _attr(result, name, default=None):
    if isinstance(result, dict):
        return result.get(name, default)
    return getattr(result, name, default)


def write_result(path, result, dataset: Dataset | None = None, *, config=None, overwrite: bool = False) -> Path:
    """Write a reconstruction result as CXI the way ptychodus writes products, plus our own group.

    Parameters
    ----------
    path : str or os.PathLike
    result : cuptycho.Result or dict
        Needs ``object`` (Mo, H, W) or (H, W), ``probe`` (K, Ny, Nx) or (Ny, Nx) and ``positions``
        (J, 2) pixels; uses ``z``, ``history`` (list of per-epoch dicts with "loss"), ``timings``,
        ``events``, ``config`` and ``device`` when present.
    dataset : Dataset, optional
        Supplies the sample pixel size, energy, detector distance and nominal positions.
    config : dict or dataclass, optional
        The effective configuration (default: ``result.config``), stored as a JSON string.
    overwrite : bool
        Replace an existing file (default: refuse with FileExistsError).

    Returns
    -------
    pathlib.Path
    """
    h5py = _h5py()
    from .. import __version__
    obj = np.asarray(_attr(result, "object"))
    probe = np.asarray(_attr(result, "probe"))
    positions = np.asarray(_attr(result, "positions"), dtype=np.float64)
    if obj.ndim == 2:
        obj = obj[None]
    if probe.ndim == 2:
        probe = probe[None]
    if obj.ndim != 3 or probe.ndim != 3 or positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"result needs object (Mo, H, W), probe (K, Ny, Nx) and positions (J, 2); got "
                         f"{obj.shape}, {probe.shape}, {positions.shape}")
    history = list(_attr(result, "history", []) or [])
    config = _attr(result, "config") if config is None else config
    pixel = None
    if dataset is not None and dataset.pixel_size is not None:
        pixel = ds_mod.geometry.pixel_pair(dataset.pixel_size)
    dy, dx = pixel if pixel is not None else (1.0, 1.0)        # pixels when the size is unknown
    (_, h, w), (_, ny, nx) = obj.shape, probe.shape
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        e, src, det = _new_entry(f)
        if dataset is not None and dataset.wavelength is not None:
            src.create_dataset("energy", data=dataset.energy)
            src.create_dataset("wavelength", data=dataset.wavelength)
        if dataset is not None and dataset.detector_distance is not None:
            det.create_dataset("distance", data=dataset.detector_distance)
        # probe positions (centres) in metres relative to the object's corner, as ptychodus records them
        centres = np.stack([(positions[:, 1] + nx / 2) * dx, (positions[:, 0] + ny / 2) * dy,
                            np.zeros(len(positions))], axis=1)
        geo = e.create_group("sample_1/geometry_1")
        t = geo.create_dataset("translation", data=centres)
        t.attrs["units"] = "m" if pixel is not None else "pixel"
        e.create_group("data_1")["translation"] = h5py.SoftLink(t.name)
        for name, arr, axes, dtype_name, size in (
                ("image_1", probe[None], "coherent:incoherent:y:x", "amplitude", (nx * dx, ny * dy)),
                ("image_2", obj, "layer:y:x", "electron density", (w * dx, h * dy))):
            img = e.create_group(name)
            dset = img.create_dataset("data", data=arr)
            dset.attrs["axes"] = axes
            _str(img, "data_type", dtype_name)
            _str(img, "data_space", "real")
            img.create_dataset("image_size", data=np.array([size[0], size[1], 0.0]))
            img["source_1"] = h5py.SoftLink(src.name)
            img["detector_1"] = h5py.SoftLink(det.name)
        src["illumination"] = h5py.SoftLink("/entry_1/image_1/data")
        proc = e.create_group("process_1")
        _str(proc, "program", "cuptycho")
        _str(proc, "version", __version__)
        _str(proc, "date", _now())
        pt = e.create_group("ptychodus")
        pt.create_dataset("probe_position_indexes", data=np.arange(len(positions), dtype=np.int64))
        if pixel is not None:
            for name, value in (("probe_pixel_width_m", dx), ("probe_pixel_height_m", dy),
                                ("object_pixel_width_m", dx), ("object_pixel_height_m", dy),
                                ("object_center_x_m", w * dx / 2), ("object_center_y_m", h * dy / 2)):
                pt.create_dataset(name, data=value)
        losses = [(int(r.get("epoch", i)), float(r["loss"])) for i, r in enumerate(history)
                  if isinstance(r, dict) and "loss" in r]
        if losses:
            pt.create_dataset("loss_epochs", data=np.array([a for a, _ in losses], dtype=np.int64))
            pt.create_dataset("loss_values", data=np.array([b for _, b in losses], dtype=np.float64))
        g = e.create_group(GROUP)
        g.attrs["format"] = FORMAT
        g.create_dataset("object", data=obj)
        g.create_dataset("probe", data=probe)
        g.create_dataset("positions", data=positions)
        if dataset is not None:
            g.create_dataset("positions_nominal", data=np.asarray(dataset.positions, dtype=np.float64))
        z = _attr(result, "z")
        g.create_dataset("z", data=np.nan if z is None else float(z))
        g.create_dataset("loss", data=np.array([b for _, b in losses], dtype=np.float64))
        if pixel is not None:
            g.create_dataset("pixel_size", data=np.asarray(pixel))
        _str(g, "history", _json(history))
        _str(g, "timings", _json(_attr(result, "timings", {}) or {}))
        _str(g, "events", _json(_attr(result, "events", []) or []))
        _str(g, "config", _json(config if config is not None else {}))
        _str(g, "device", _attr(result, "device", "") or "")
    return Path(os.fspath(path))


def read_result(path):
    """A result written by `write_result`: a `cuptycho.Result` (object, probe, positions, z, history,
    events, timings, config, device); arrays come back exactly as written."""
    with open_hdf5(path) as f:
        g = _get(f, f"/entry_1/{GROUP}")
        if g is None or "object" not in g:
            raise DataError(path, f"not a cuptycho result file: no /entry_1/{GROUP}/object")
        try:
            fields = {
                "object": g["object"][()], "probe": g["probe"][()], "positions": g["positions"][()],
                "z": None if not np.isfinite(g["z"][()]) else float(g["z"][()]),
                "history": json.loads(scalar(g["history"][()])), "events": json.loads(scalar(g["events"][()])),
                "timings": json.loads(scalar(g["timings"][()])), "config": json.loads(scalar(g["config"][()])),
                "device": scalar(g["device"][()]),
            }
        except (KeyError, OSError, ValueError) as err:
            raise DataError(path, f"damaged cuptycho result group ({err})") from None
    try:
        from ..engine import Result
        names = {fl.name for fl in dataclasses.fields(Result)}
        if {fl.name for fl in dataclasses.fields(Result) if fl.default is dataclasses.MISSING
                and fl.default_factory is dataclasses.MISSING} <= set(fields):
            return Result(**{k: v for k, v in fields.items() if k in names})
    except Exception:                            # engine unavailable or changed: plain namespace
        pass
    import types
    return types.SimpleNamespace(**fields)


# --------------------------------------------------------------------------- info

def info_hdf5(path) -> str:
    """The tree of an HDF5 / CXI file (shapes, dtypes, small values) and, for CXI data, the geometry."""
    h5py = _h5py()
    lines = [f"{os.fspath(path)}: HDF5"]
    with open_hdf5(path) as f:
        def walk(group, depth):
            for key in group:
                link = group.get(key, getlink=True)
                pad = "  " * depth
                if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
                    lines.append(f"{pad}{key} -> {link.path}")
                    continue
                obj = group.get(key)
                if isinstance(obj, h5py.Group):
                    lines.append(f"{pad}{key}/")
                    walk(obj, depth + 1)
                elif isinstance(obj, h5py.Dataset):
                    desc = f"{obj.shape} {obj.dtype}"
                    if obj.size <= 6 and obj.dtype.kind in "iufcSOb":
                        try:
                            raw = obj[()]
                        except (OSError, TypeError):
                            raw = None
                        if isinstance(raw, np.ndarray):          # shortest digits of the stored precision
                            desc += " = " + " ".join(np.array2string(raw, separator=", ").split())
                        elif raw is not None:
                            desc += f" = {scalar(raw) if isinstance(raw, bytes) else str(raw)}"
                    lines.append(f"{pad}{key}: {desc}")
        try:
            walk(f, 0)
        except (OSError, RuntimeError, KeyError) as err:
            raise DataError(path, f"damaged HDF5 file ({err})") from None
        if not any(f"{name}/{GROUP}" in f for name in f if name.startswith("entry_")):
            lines.append("(CXI does not record whether the geometry is far or near field: it is read as far "
                         "field unless you pass geometry_kind='nearfield' and, for a divergent beam, "
                         "focus_distance=z1)")
    return "\n".join(lines)
