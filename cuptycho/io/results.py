"""Reconstruction results as CXI files, in the layout ptychodus reads, plus cuptycho's own group.

Layout
------
`write_result` writes the layout ptychodus writes (its ``CXIProductFileIO``): ``/entry_1/image_1/data`` the probe
(1, K, Ny, Nx), axes ``coherent:incoherent:y:x``; ``/entry_1/image_2/data`` the object (Mo, H, W),
axes ``layer:y:x``; each image with ``image_size`` (width, height, 0 in metres), ``data_type``,
``data_space`` and links to ``source_1`` / ``detector_1``; ``sample_1/geometry_1/translation`` the
refined probe positions (probe centre, x, y, 0 in metres, relative to the object's corner; pixels
when no pixel size is known), ``source_1/energy``, ``detector_1/distance``, ``process_1``
(program, version, date) and ptychodus' ``/entry_1/ptychodus`` extras (pixel sizes, object centre,
loss epochs and values), ``title`` and ``sample_1/name`` (the data file's stem). Without a known
sample pixel size every length is in object pixels: ``units`` attributes say ``pixel`` and our
group's ``geometry`` says why. Our own group ``/entry_1/cuptycho`` holds what cuptycho needs to resume
or report: ``object`` and ``probe`` (all modes), ``positions`` and ``positions_nominal`` (pixels),
``z``, ``loss`` (per epoch), ``history``, ``timings``, ``events`` and ``config`` (JSON strings),
``device``, ``scan_matrix`` (I + A of the refined scan model, when [scan] refined it) and
``excluded_positions`` (indices of the patterns [position_search] left out of the loss, when any),
``background`` and ``scale`` (the refined detector model: counts added to each pattern in detector
order, and each pattern's intensity factor; when [background] / [scale] refined them).
`read_result` reads our group back.

Every write is atomic (`cuptycho.atomic`) and refuses to replace an existing file unless
``overwrite=True``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
from pathlib import Path

import numpy as np

from .. import validation
from .._version import __version__
from ..atomic import atomic_path
from ..dataset import Dataset
from ..result import Result
from ._common import DataError, scalar
from .cxi import FORMAT, GROUP, create_hdf5, h5py_module, new_entry, node, now, open_hdf5, write_str


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
    losses = [(int(r.get("epoch", i)), float(r["loss"])) for i, r in enumerate(history)
              if isinstance(r, dict) and "loss" in r]
    pixel = None
    if _attr(result, "pixel_size") is not None:          # refined with the focus distance
        pixel = validation.length_pair("pixel_size", _attr(result, "pixel_size"))
    elif dataset is not None and dataset.pixel_size is not None:
        pixel = validation.length_pair("pixel_size", dataset.pixel_size)
    with atomic_path(path, overwrite=overwrite) as tmp, create_hdf5(tmp) as f:
        e, src, det = new_entry(f)
        if dataset is not None and dataset.wavelength is not None:
            src.create_dataset("energy", data=dataset.energy)
            src.create_dataset("wavelength", data=dataset.wavelength)
        if dataset is not None and dataset.detector_distance is not None:
            det.create_dataset("distance", data=dataset.detector_distance)
        _write_ptychodus(e, src, det, obj, probe, positions, pixel, losses)
        title = _title(dataset)
        write_str(e, "title", title)
        write_str(e.require_group("sample_1"), "name", title)
        g = e.create_group(GROUP)
        g.attrs["format"] = FORMAT
        g.attrs["mpi_ranks"] = int(_attr(result, "mpi_ranks", 1) or 1)     # how it was made: processes shared
        # lengths in metres need the sample pixel size; without it every length above is in object pixels
        g.attrs["length_units"] = "m" if pixel is not None else "pixel"
        if pixel is None:
            write_str(g, "geometry", UNKNOWN_GEOMETRY)
        g.create_dataset("object", data=obj)
        g.create_dataset("probe", data=probe)
        g.create_dataset("positions", data=positions)
        if dataset is not None:
            g.create_dataset("positions_nominal", data=np.asarray(dataset.positions, dtype=np.float64))
        z = _attr(result, "z")
        g.create_dataset("z", data=np.nan if z is None else float(z))
        scan_matrix = _attr(result, "scan_matrix")
        if scan_matrix is not None:               # the refined affine map of the scan about its centre
            g.create_dataset("scan_matrix", data=np.asarray(scan_matrix, dtype=np.float64))
        excluded = _attr(result, "excluded_positions")
        if excluded is not None and len(excluded):    # positions whose pattern was left out of the loss
            g.create_dataset("excluded_positions", data=np.asarray(excluded, dtype=np.int64))
        if _attr(result, "focus_distance") is not None:     # [focus] refined it
            g.create_dataset("focus_distance", data=float(_attr(result, "focus_distance")))
        for name in ("background", "scale"):          # the refined detector model, when it was refined
            value = _attr(result, name)
            if value is not None:
                g.create_dataset(name, data=np.asarray(value))
        g.create_dataset("loss", data=np.array([b for _, b in losses], dtype=np.float64))
        if pixel is not None:
            g.create_dataset("pixel_size", data=np.asarray(pixel))
        config = _attr(result, "config") if config is None else config
        write_str(g, "history", _json(history))
        write_str(g, "timings", _json(_attr(result, "timings", {}) or {}))
        write_str(g, "events", _json(_attr(result, "events", []) or []))
        write_str(g, "config", _json(config if config is not None else {}))
        write_str(g, "device", _attr(result, "device", "") or "")
    return Path(os.fspath(path))


UNKNOWN_GEOMETRY = ("unknown: the data file records no wavelength, detector distance and pixel size, so the "
                    "translations, image sizes and object centre are in object pixels, not metres")


def _title(dataset) -> str:
    """The product's name (ptychodus reads /entry_1/title, else sample_1/name): the data file's stem."""
    source = None if dataset is None else (dataset.metadata or {}).get("source")
    return f"{Path(source).stem} (cuptycho)" if source else "cuptycho reconstruction"


def _write_ptychodus(e, src, det, obj, probe, positions, pixel, losses):
    """What ptychodus reads in entry `e`: probe and object images, probe positions, process, extras."""
    h5py = h5py_module()
    dy, dx = pixel if pixel is not None else (1.0, 1.0)        # pixels when the size is unknown
    (_, h, w), (_, ny, nx) = obj.shape, probe.shape
    # probe positions (centres) in metres relative to the object's corner, as ptychodus records them
    centres = np.stack([(positions[:, 1] + nx / 2) * dx, (positions[:, 0] + ny / 2) * dy,
                        np.zeros(len(positions))], axis=1)
    t = e.create_group("sample_1/geometry_1").create_dataset("translation", data=centres)
    t.attrs["units"] = "m" if pixel is not None else "pixel"
    e.create_group("data_1")["translation"] = h5py.SoftLink(t.name)
    for name, arr, axes, dtype_name, size in (
            ("image_1", probe[None], "coherent:incoherent:y:x", "amplitude", (nx * dx, ny * dy)),
            ("image_2", obj, "layer:y:x", "electron density", (w * dx, h * dy))):
        img = e.create_group(name)
        dset = img.create_dataset("data", data=arr)
        dset.attrs["axes"] = axes
        write_str(img, "data_type", dtype_name)
        write_str(img, "data_space", "real")
        img.create_dataset("image_size", data=np.array([size[0], size[1], 0.0])).attrs["units"] = \
            "m" if pixel is not None else "pixel"
        img["source_1"] = h5py.SoftLink(src.name)
        img["detector_1"] = h5py.SoftLink(det.name)
    src["illumination"] = h5py.SoftLink("/entry_1/image_1/data")
    proc = e.create_group("process_1")
    write_str(proc, "program", "cuptycho")
    write_str(proc, "version", __version__)
    write_str(proc, "date", now())
    pt = e.create_group("ptychodus")
    pt.create_dataset("probe_position_indexes", data=np.arange(len(positions), dtype=np.int64))
    if pixel is not None:
        for name, value in (("probe_pixel_width_m", dx), ("probe_pixel_height_m", dy),
                            ("object_pixel_width_m", dx), ("object_pixel_height_m", dy),
                            ("object_center_x_m", w * dx / 2), ("object_center_y_m", h * dy / 2)):
            pt.create_dataset(name, data=value)
    if losses:
        pt.create_dataset("loss_epochs", data=np.array([a for a, _ in losses], dtype=np.int64))
        pt.create_dataset("loss_values", data=np.array([b for _, b in losses], dtype=np.float64))


def read_result(path):
    """A result written by `write_result`: a `cuptycho.Result` (object, probe, positions, z, history,
    events, timings, config, device); arrays come back exactly as written. A CXI product another
    program wrote in ptychodus' layout (no cuptycho group) is read from that layout (`_read_product`)."""
    with open_hdf5(path) as f:
        g = node(f, f"/entry_1/{GROUP}")
        if g is None and node(f, "/entry_1/image_2/data") is not None:
            return _read_product(path, f)           # another program's product (ptychodus' layout)
        if g is None or "object" not in g:
            raise DataError(path, f"not a cuptycho result file: no /entry_1/{GROUP}/object (nor a ptychodus "
                                  "product's /entry_1/image_2/data)")
        try:
            fields = {
                "object": g["object"][()], "probe": g["probe"][()], "positions": g["positions"][()],
                "z": None if not np.isfinite(g["z"][()]) else float(g["z"][()]),
                "history": json.loads(scalar(g["history"][()])), "events": json.loads(scalar(g["events"][()])),
                "timings": json.loads(scalar(g["timings"][()])), "config": json.loads(scalar(g["config"][()])),
                "device": scalar(g["device"][()]),
                "scan_matrix": g["scan_matrix"][()] if "scan_matrix" in g else None,
                "excluded_positions": g["excluded_positions"][()] if "excluded_positions" in g else
                np.zeros(0, np.int64),
                "background": g["background"][()] if "background" in g else None,
                "scale": g["scale"][()] if "scale" in g else None,
                "focus_distance": float(g["focus_distance"][()]) if "focus_distance" in g else None,
                "mpi_ranks": int(g.attrs.get("mpi_ranks", 1)),
                "pixel_size": tuple(g["pixel_size"][()]) if "focus_distance" in g and "pixel_size" in g else None,
            }
        except (KeyError, OSError, ValueError) as err:
            raise DataError(path, f"damaged cuptycho result group ({err})") from None
    try:
        names = {fl.name for fl in dataclasses.fields(Result)}
        if {fl.name for fl in dataclasses.fields(Result) if fl.default is dataclasses.MISSING
                and fl.default_factory is dataclasses.MISSING} <= set(fields):
            return Result(**{k: v for k, v in fields.items() if k in names})
    except Exception:                            # engine unavailable or changed: plain namespace
        pass
    return types.SimpleNamespace(**fields)


def _scalar_at(f, path):
    item = node(f, path)
    return None if item is None else float(np.asarray(item[()]).reshape(-1)[0])


def _read_product(path, f) -> Result:
    """A ptychodus-layout product as a `Result`: the object (layers), the probe's first OPR mode's
    incoherent modes, the positions converted from probe centres in metres (the object's frame, its
    centre at ``object_center_{x,y}_m``) to our patches' top-left corners in object pixels, and the
    losses; the pixel sizes come from ``/entry_1/ptychodus`` or else ``image_size``."""
    try:
        obj = np.asarray(f["/entry_1/image_2/data"][()])
        probe = np.asarray(node(f, "/entry_1/image_1/data")[()] if node(f, "/entry_1/image_1/data") is not None
                           else f["/entry_1/instrument_1/source_1/illumination"][()])
        obj = obj[None] if obj.ndim == 2 else obj
        probe = probe[0] if probe.ndim == 4 else (probe[None] if probe.ndim == 2 else probe)
        (h, w), (ny, nx) = obj.shape[-2:], probe.shape[-2:]

        def pixel(image, shape, key):
            width, height = _scalar_at(f, f"/entry_1/ptychodus/{key}_pixel_width_m"), \
                _scalar_at(f, f"/entry_1/ptychodus/{key}_pixel_height_m")
            if width is None or height is None:
                size = np.asarray(f[f"/entry_1/{image}/image_size"][()], dtype=np.float64)
                width, height = size[0] / shape[1], size[1] / shape[0]
            return height, width

        dy, dx = pixel("image_2", (h, w), "object")
        cx, cy = (_scalar_at(f, f"/entry_1/ptychodus/object_center_{a}_m") for a in "xy")
        cx = w * dx / 2 if cx is None else cx
        cy = h * dy / 2 if cy is None else cy
        t = node(f, "/entry_1/sample_1/geometry_1/translation") or f["/entry_1/data_1/translation"]
        t = np.asarray(t[()], dtype=np.float64)
        positions = np.stack([(t[:, 1] - (cy - h * dy / 2)) / dy - ny / 2, (t[:, 0] - (cx - w * dx / 2)) / dx - nx / 2],
                             axis=1)
        values = node(f, "/entry_1/ptychodus/loss_values")
        values = [] if values is None else np.atleast_1d(values[()]).tolist()
        epochs = node(f, "/entry_1/ptychodus/loss_epochs")
        epochs = list(range(len(values))) if epochs is None else np.atleast_1d(epochs[()]).tolist()
        program = node(f, "/entry_1/process_1/program")
    except (KeyError, OSError, ValueError, TypeError, IndexError) as err:
        raise DataError(path, f"not a readable ptychodus product ({err})") from None
    return Result(object=obj, probe=probe, positions=positions, z=None,
                  history=[{"epoch": int(e), "loss": float(v)} for e, v in zip(epochs, values)], events=[],
                  timings={}, config={}, device="" if program is None else scalar(program[()]))
