"""CXI (Coherent X-ray Imaging format, v1.6, HDF5) measurements: reading and writing, plus HDF5 helpers.

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

Positions: ``positions_m = pinv(B) (-t)`` (`cuptycho.units.translations_to_positions`; the CXI
translation is the sample's, the probe moves by its negative). Keywords override anything in the file.

Reconstruction results in the ptychodus layout are written and read by `cuptycho.io.results`.

Every write is atomic (`cuptycho.atomic`) and refuses to replace an existing file unless
``overwrite=True``. HDF5 files are written through `create_hdf5`, which turns a full disk or an I/O
error into the OSError the system gave, with the file closed.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import math
import os
from pathlib import Path

import numpy as np

from .. import units, validation
from ..atomic import atomic_path
from ..dataset import Dataset
from ._common import DataError, claimed_bytes, combine_masks, reader_dataset, scalar
from .pipeline import Pipeline, check_options

CXI_VERSION = 160
PIXEL_INVALID = 0x00000001          # CXI 1.6 mask bit 0: "invalid"
GROUP = "cuptycho"
FORMAT = "cuptycho-cxi-1"
WRITE_SLAB_BYTES = 64 << 20        # float32 frames written at once by write_cxi
CHUNK_CACHE_BYTES = 16 << 20       # HDF5's chunk cache for streamed patterns (its default is 1 MiB)


def h5py_module():
    """h5py, imported when an HDF5 file is first touched, with hdf5plugin's compression filters registered
    (bitshuffle/LZ4, Blosc, zstd, LZ4, ...: what modern detectors write)."""
    import importlib

    import h5py
    importlib.import_module("hdf5plugin")          # importing it registers the filters with HDF5
    return h5py


def open_hdf5(path, **options):
    """An h5py.File opened read-only (`options`: h5py.File's, such as its chunk cache), or a DataError saying
    why the file cannot be read."""
    h5py = h5py_module()
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataError(p, "no such file")
    try:
        return h5py.File(p, "r", **options)
    except OSError as err:
        raise DataError(p, f"not a readable HDF5 file; is it truncated or corrupt? ({err})") from None


def node(f, path):
    """f[path] if present (dangling links count as absent), else None."""
    try:
        return f[path] if path in f else None
    except (KeyError, OSError):
        return None


def stored_bytes(dset):
    """The size of the file that holds `dset` when it is stored there uncompressed (its declared size
    must fit in it), else None: filters, external or virtual storage give no bound."""
    try:
        plist = dset.id.get_create_plist()
        if plist.get_nfilters() or plist.get_external_count() or dset.is_virtual:
            return None
        return os.path.getsize(dset.file.filename)
    except (OSError, ValueError, AttributeError):
        return None


def _read(path, dset, what, sel=()):
    """dset[sel]; a whole read (``sel == ()``) is bounded first by the file's size and the memory budget."""
    if sel == ():
        claimed_bytes(path, f"{dset.name} ({what})", dset.shape or (), dset.dtype, file_bytes=stored_bytes(dset))
    try:
        return dset[sel]
    except (OSError, ValueError, TypeError) as err:
        missing = _missing_filters(dset)
        if missing:
            raise DataError(path, f"cannot read {what} ({dset.name}): it is compressed with {missing}, which this "
                                  "HDF5 cannot decode (hdf5plugin registers the common detector filters: "
                                  "pip install --upgrade hdf5plugin)") from None
        raise DataError(path, f"cannot read {what} ({dset.name}): the file is damaged or truncated ({err})") from None


def _missing_filters(dset) -> str:
    """The dataset's compression filters HDF5 has no decoder for, named ("" when none is missing)."""
    h5py = h5py_module()
    try:
        plist = dset.id.get_create_plist()
        filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    except (AttributeError, ValueError, RuntimeError):
        return ""
    names = [f"filter {f[3].decode(errors='replace') or '?'} (id {f[0]})" for f in filters
             if not h5py.h5z.filter_avail(f[0])]
    return ", ".join(names)


def _float_value(path, f, key, what):
    d = node(f, key)
    if d is None:
        return None
    if getattr(d, "size", 1) == 0:
        raise DataError(path, f"{key} ({what}) is empty")
    try:                                       # the first value only: a scalar needs no more of the file
        v = float(np.asarray(_read(path, d, what, (0,) * len(d.shape) if d.shape else ())).reshape(-1)[0])
    except DataError:
        raise
    except (TypeError, ValueError, IndexError):
        raise DataError(path, f"{key} ({what}) is not a number") from None
    try:
        return validation.positive_number(f"{key} ({what})", v)
    except ValueError as err:
        raise DataError(path, str(err)) from None


def _entry(path, f, entry):
    if entry is not None:
        if node(f, entry) is None:
            raise DataError(path, f"no group /{entry.strip('/')} in the file")
        return "/" + entry.strip("/")
    names = sorted(k for k in f.keys() if k.startswith("entry_"))
    for name in names:
        if any(node(f, f"/{name}/{p}") is not None for p in ("data_1/data", "instrument_1/detector_1/data")):
            return "/" + name
    return "/" + names[0] if names else "/entry_1"


def _translations(path, f, entry, n, translation_path):
    keys = [translation_path] if translation_path else [f"{entry}/sample_1/geometry_1/translation",
                                                        f"{entry}/data_1/translation"]
    for key in keys:
        d = node(f, key)
        if d is None:
            continue
        shape = getattr(d, "shape", None)
        if shape is None or not (len(shape) == 2 and ((shape[0] == n and shape[1] in (2, 3)) or
                                                      (shape[1] == n and shape[0] in (2, 3)))):
            raise DataError(path, f"{n} patterns but the translations at {key} have shape {shape} "
                                  f"(expected ({n}, 3), or (3, {n}) as PyNX writes)")
        t = np.asarray(_read(path, d, "translations"), dtype=np.float64)
        unit = scalar(d.attrs.get("units", "m")) if hasattr(d, "attrs") else "m"
        try:
            scale = units.length_scale(unit)
        except ValueError:
            raise DataError(path, f"{key} has units {unit!r}; expected one of {sorted(units.LENGTH_UNITS)}") from None
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


def _group_value(path, g, name):
    if g is None or name not in g:
        return None
    v = _read(path, g[name], f"the stored {name}")
    return scalar(v) if np.ndim(v) == 0 or isinstance(v, bytes) else np.asarray(v)


# over 80 lines only through its docstring (twenty keywords); the work is in the helpers below
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
        ``chunk_bytes`` (slab size, default 32 MiB), ``stream`` ("auto", true, false) and ``load_limit``
        (the size above which "auto" streams).

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
    the peak is the float32 output (J, ny, nx) after cropping and binning plus one slab. Streamed,
    the file is read once to check it and then again, a batch at a time, while the engine runs.
    """
    check_options("read_cxi", preprocess)
    keywords = {"wavelength": wavelength, "energy": energy, "detector_distance": detector_distance,
                "detector_pixel_size": detector_pixel_size, "geometry_kind": geometry_kind,
                "focus_distance": focus_distance, "propagator": propagator, "pixel_size": pixel_size, "z": z}
    with open_hdf5(path) as f:
        e = _entry(path, f, entry)
        dset, lead, n, frame = _patterns(path, f, e, data_path)
        det = f"{e}/instrument_1/detector_1"
        recorded = _detector_geometry(path, f, e, keywords)
        basis = _basis(path, f, det)
        translations, tkey = _translations(path, f, e, n, translation_path)
        stored = _own_group(path, f, e, n)
        weights = stored["weights"] if stored["weights"] is not None else _mask(path, f, e, n, frame, mask_bits)
        pipe = Pipeline(path, n, frame, dset.dtype, source=dset.name, **preprocess)

        def read(sel):
            return _read(path, dset, "diffraction data", (0,) * lead + (sel,))

        name = dset.name                      # while the file is open: the streamed rows open it again
        data, sat = pipe.run(read, lambda: _open_patterns(path, name, lead))
    if weights is not None and np.ndim(weights) == 3:
        weights = weights[pipe.indices]
    positions_m = None
    if translations is not None:
        try:
            positions_m = units.translations_to_positions(translations, basis)
        except ValueError as err:
            raise DataError(path, f"{tkey}: {err}") from None
    for key in ("geometry_kind", "propagator", "focus_distance", "pixel_size", "z"):
        recorded[key] = stored[key]
    fields = {"mask": combine_masks(pipe.transform_mask(weights), sat),
              "metadata": {"source": os.fspath(path), "format": "cxi", "entry": e, "basis_vectors": basis}}
    unchanged = not pipe.changes_sampling               # the stored probe and object size still fit
    fields["probe"] = probe if probe is not None or not unchanged else stored["probe"]
    if padding is not None or stored["padding"] is not None:
        fields["padding"] = padding if padding is not None else tuple(int(v) for v in np.atleast_1d(stored["padding"]))
    if margin is not None or stored["margin"] is not None:
        fields["margin"] = int(margin if margin is not None else stored["margin"])
    if obj_shape is not None:
        fields["obj_shape"] = tuple(int(v) for v in np.atleast_1d(obj_shape))
    elif stored["obj_shape"] is not None and unchanged and stored["positions"] is not None and pipe.indices.size == n:
        fields["obj_shape"] = tuple(int(v) for v in np.atleast_1d(stored["obj_shape"]))
    return reader_dataset(path, data, pipe, recorded=recorded, keywords=keywords, positions=stored["positions"],
                          positions_m=positions_m, **fields)


def _open_patterns(path, name, lead):
    """(read, close) of the patterns `name` in a file of their own, for streamed data (`Pipeline.run`); a chunk
    cache of CHUNK_CACHE_BYTES, so the rows of compressed chunks read one batch at a time are decompressed once."""
    f = open_hdf5(path, rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=10007)
    dset = f[name]
    return (lambda sel: _read(path, dset, "diffraction data", (0,) * lead + (sel,))), f.close


def _patterns(path, f, e, data_path):
    """(dataset, number of leading unit axes, J, (Ny, Nx)) of the diffraction data, or a DataError."""
    candidates = [data_path] if data_path else [f"{e}/data_1/data", f"{e}/instrument_1/detector_1/data"]
    dset = next((d for d in (node(f, c) for c in candidates) if d is not None), None)
    if dset is None or not hasattr(dset, "shape"):
        raise DataError(path, f"no diffraction data: looked for {' and '.join(candidates)}")
    shape = dset.shape
    lead = 0
    while len(shape) - lead > 3 and shape[lead] == 1:
        lead += 1
    if len(shape) - lead != 3 or 0 in shape:
        raise DataError(path, f"{dset.name} must hold (J, Ny, Nx) patterns, got shape {shape}")
    # a header claiming more than the file holds is refused before any read (the memory the reading
    # takes is the pipeline's to check: it reads slabs, maybe of a few frames)
    stored = stored_bytes(dset)
    if stored is not None and math.prod(shape) * dset.dtype.itemsize > stored:
        claimed_bytes(path, f"{dset.name} (diffraction data)", shape, dset.dtype, file_bytes=stored)
    return dset, lead, shape[lead], shape[lead + 1:]


def _detector_geometry(path, f, e, keywords) -> dict:
    """Energy, wavelength, detector distance and pixel size the file records (the last two only when
    no keyword overrides them, so a damaged value that is not needed is not read)."""
    det = f"{e}/instrument_1/detector_1"
    recorded = {"energy": _float_value(path, f, f"{e}/instrument_1/source_1/energy", "photon energy"),
                "wavelength": _float_value(path, f, f"{e}/instrument_1/source_1/wavelength", "wavelength")}
    if keywords["detector_distance"] is None:
        recorded["detector_distance"] = _float_value(path, f, f"{det}/distance", "detector distance")
    if keywords["detector_pixel_size"] is None:
        py = _float_value(path, f, f"{det}/y_pixel_size", "detector pixel height")
        px = _float_value(path, f, f"{det}/x_pixel_size", "detector pixel width")
        if (py is None) != (px is None):
            py = px = py or px
        recorded["detector_pixel_size"] = None if py is None else (py, px)
    return recorded


def _basis(path, f, det):
    """The detector's basis vectors as recorded (checked), or None."""
    b = node(f, f"{det}/basis_vectors")
    if b is None:
        return None
    basis = np.asarray(_read(path, b, "basis vectors"), dtype=np.float64)
    try:
        units.unit_basis(basis)
    except ValueError as err:
        raise DataError(path, f"{b.name}: {err}") from None
    return basis


def _own_group(path, f, e, n) -> dict:
    """What `write_cxi` stored in our group (None where absent; NaN focus distance and z count as absent)."""
    g = node(f, f"{e}/{GROUP}")
    stored = {k: _group_value(path, g, k) for k in ("positions", "propagator", "geometry_kind", "focus_distance",
                                              "pixel_size", "z", "padding", "margin", "obj_shape", "weights",
                                              "probe")}
    if stored["positions"] is not None and np.shape(stored["positions"]) != (n, 2):
        raise DataError(path, f"{n} patterns but {e}/{GROUP}/positions has shape {np.shape(stored['positions'])}")
    for key in ("focus_distance", "z"):
        if stored[key] is not None and not np.isfinite(stored[key]):
            stored[key] = None
    if stored["z"] is not None:
        stored["z"] = float(stored["z"])
    return stored


def _mask(path, f, e, n, frame, mask_bits):
    """Weights (1 valid, 0 bad) from the CXI mask bitfield, or None without a mask."""
    m = node(f, f"{e}/instrument_1/detector_1/mask")
    m = node(f, f"{e}/data_1/mask") if m is None else m
    if m is None:
        return None
    if getattr(m, "shape", None) not in (tuple(frame), (n, *frame)):     # before reading it
        raise DataError(path, f"{m.name} has shape {getattr(m, 'shape', None)}; expected {tuple(frame)} or "
                              f"{(n, *frame)}")
    bits = np.asarray(_read(path, m, "mask"))
    bad = (bits & mask_bits) != 0 if mask_bits is not None else bits != 0
    return (~bad).astype(np.float32)


# --------------------------------------------------------------------------- writing a measurement

def now() -> str:
    """The current UTC time, ISO 8601 to the second (CXI start_time, process dates)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def write_str(group, name, value):
    """A string dataset `name` in `group`."""
    group.create_dataset(name, data=str(value))


class _DiskFile(io.RawIOBase):
    """The file HDF5 writes through (h5py's "fileobj" driver): after the first failed write it drops
    every later one (reporting it done) and keeps the error, so HDF5 can still close the file.

    Why: on its own driver, once a write has failed (a full disk), HDF5 cannot close the file: every
    close retries the failing flush, and the half-closed file crashes the interpreter when it is
    finally freed (SIGSEGV), after its temporary file has been deleted."""

    def __init__(self, path):
        super().__init__()
        self.fh = open(path, "w+b", buffering=0)
        self.error = None

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        return self.fh.seek(pos, whence)

    def tell(self):
        return self.fh.tell()

    def readinto(self, buffer):
        return self.fh.readinto(buffer)

    def write(self, buffer):
        view = memoryview(buffer).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):           # a short write (the disk filling up) is finished or fails
                    done += self.fh.write(view[done:])
            except OSError as err:
                self.error = err
                raise
        return len(view)

    def truncate(self, size=None):
        if self.error is None:
            try:
                return self.fh.truncate(size)
            except OSError as err:
                self.error = err
                raise
        return size

    def flush(self):
        pass

    def close(self):
        if not self.closed:
            try:
                self.fh.close()
            except OSError as err:               # a network file system may report a full disk only now
                self.error = self.error or err
            super().close()


@contextlib.contextmanager
def create_hdf5(path):
    """A new HDF5 file at `path`, open for writing, always closed on leaving the ``with`` block.

    A failed write (full disk, I/O error) raises the system's OSError (ENOSPC, EIO, ...) once the file
    is closed, so `cuptycho.atomic` can delete it safely; other exceptions propagate unchanged."""
    h5py = h5py_module()
    disk = _DiskFile(path)
    try:
        f = h5py.File(disk, "w")
    except BaseException:
        disk.close()
        if disk.error is not None:
            raise disk.error from None
        raise
    failure = None
    try:
        yield f
    except BaseException as err:
        failure = err
    for _ in range(3):                           # a close that failed on a write succeeds once writes are dropped
        try:
            f.close()
            break
        except Exception as err:
            failure = failure or err
    del f
    disk.close()
    if disk.error is not None and not isinstance(failure, (KeyboardInterrupt, SystemExit)):
        raise disk.error from None
    if failure is not None:
        raise failure


def new_entry(f):
    """The CXI skeleton every file we write starts with: (entry_1, its source_1, its detector_1)."""
    f.create_dataset("cxi_version", data=CXI_VERSION)
    f.create_dataset("number_of_entries", data=1)
    e = f.create_group("entry_1")
    write_str(e, "start_time", now())
    return e, e.create_group("instrument_1/source_1"), e.create_group("instrument_1/detector_1")


def _write_frames(parent, name, frames, dtype, compression, convert=None):
    """`frames` (J, Ny, Nx), held or streamed, as parent[name], chunked per frame and written a slab of about
    WRITE_SLAB_BYTES at a time (never whole in memory); `convert(slab)` gives the stored values (default: as
    float32)."""
    n, ny, nx = frames.shape
    d = parent.create_dataset(name, shape=(n, ny, nx), dtype=dtype, chunks=(1, ny, nx), compression=compression)
    slab = max(1, WRITE_SLAB_BYTES // (4 * ny * nx))
    for s in range(0, n, slab):
        block = np.asarray(frames[s:s + slab], dtype=np.float32)
        d[s:s + slab] = block if convert is None else convert(block)
    return d


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
    same Dataset. Patterns and per-frame masks are written in slabs: a streamed dataset (`cuptycho.patterns`,
    e.g. a TIFF folder read with ``stream=True``) is converted without being held.
    """
    h5py = h5py_module()
    if not isinstance(dataset, Dataset):
        raise TypeError(f"write_cxi needs a cuptycho.Dataset, got {type(dataset).__name__}")
    n, ny, nx = dataset.data.shape
    with atomic_path(path, overwrite=overwrite) as tmp, create_hdf5(tmp) as f:
        e, src, det = new_entry(f)
        if dataset.wavelength is not None:
            src.create_dataset("energy", data=dataset.energy)
            src.create_dataset("wavelength", data=dataset.wavelength)
        d = _write_frames(det, "data", dataset.data, np.float32, compression)
        mask = dataset.mask
        if mask is not None:
            def bits(w):
                return np.where(np.asarray(w) == 0, PIXEL_INVALID, 0).astype(np.uint32)
            if len(mask.shape) == 3:             # per frame (held or streamed): in slabs like the data
                _write_frames(det, "mask", mask, np.uint32, compression, bits)
            else:
                det.create_dataset("mask", data=bits(mask), compression=compression)
        if dataset.detector_distance is not None:
            det.create_dataset("distance", data=dataset.detector_distance)
        if dataset.detector_pixel_size is not None:
            py, px = dataset.detector_pixel_size
            det.create_dataset("x_pixel_size", data=px)
            det.create_dataset("y_pixel_size", data=py)
        basis = dataset.metadata.get("basis_vectors") if dataset.metadata else None
        if basis is None and dataset.detector_pixel_size is not None:
            basis = units.DEFAULT_BASIS * np.asarray(dataset.detector_pixel_size)[None, :]
        if basis is not None:
            det.create_dataset("basis_vectors", data=np.asarray(basis, dtype=np.float64))
        pixel = None if dataset.pixel_size is None else validation.length_pair("pixel_size", dataset.pixel_size)
        positions_m = dataset.positions_m
        if positions_m is None and pixel is not None:
            positions_m = dataset.positions * np.asarray(pixel)
        data_1 = e.create_group("data_1")
        data_1["data"] = h5py.SoftLink(d.name)
        if positions_m is not None:
            geo = e.create_group("sample_1/geometry_1")
            t = geo.create_dataset("translation", data=units.positions_to_translations(positions_m, basis))
            t.attrs["units"] = "m"
            data_1["translation"] = h5py.SoftLink(t.name)
        g = e.create_group(GROUP)
        g.attrs["format"] = FORMAT
        g.create_dataset("positions", data=dataset.positions)
        write_str(g, "propagator", dataset.propagator)
        write_str(g, "geometry_kind", dataset.geometry_kind)
        g.create_dataset("focus_distance", data=np.nan if dataset.focus_distance is None else dataset.focus_distance)
        if pixel is not None:
            g.create_dataset("pixel_size", data=np.asarray(pixel))
        g.create_dataset("z", data=np.nan if dataset.z is None else dataset.z)
        g.create_dataset("padding", data=np.broadcast_to(np.asarray(dataset.padding, dtype=np.int64).reshape(-1), (2,)))
        g.create_dataset("margin", data=int(dataset.margin))
        g.create_dataset("obj_shape", data=np.asarray(dataset.obj_shape, dtype=np.int64))
        if mask is not None and len(mask.shape) == 3:
            _write_frames(g, "weights", mask, np.float32, compression)
        elif mask is not None:
            g.create_dataset("weights", data=np.asarray(mask, dtype=np.float32), compression=compression)
        if dataset.probe is not None:
            g.create_dataset("probe", data=np.asarray(dataset.probe))
    return Path(os.fspath(path))


# --------------------------------------------------------------------------- info

def info_hdf5(path) -> str:
    """The tree of an HDF5 / CXI file (shapes, dtypes, small values) and, for CXI data, the geometry."""
    h5py = h5py_module()
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
