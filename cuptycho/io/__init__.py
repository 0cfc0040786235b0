"""Data in, results out: readers and writers of measured ptychography data and reconstructions.

`load(path, **options)` reads any supported file as a `cuptycho.Dataset`, choosing the reader by
the file's type; `info(path)` describes what a file holds. Formats:

========================  =================================  =========================================
format                    read                               write
========================  =================================  =========================================
CXI 1.6 / HDF5            `read_cxi` (.cxi .h5 .hdf5 .nxs)   `write_cxi` (a measurement),
                                                             `write_result` (a reconstruction, the
                                                             ptychodus layout plus our group),
                                                             `read_result`
TIFF                      `read_tiff` (multipage file or     `write_tiff` (+ positions CSV, mask TIFF)
                          folder, + positions CSV/TXT)
NumPy                     `read_npz` (.npz with documented   `write_npz`, `write_tike`
                          keys; tike's .npz / .npz.bz2)
========================  =================================  =========================================

Every reader accepts the streaming preprocessing options of `Pipeline` (``frames``, ``dark``,
``fftshift``, ``crop``, ``center``, ``bin``, ``saturation``, ``chunk_bytes``) and geometry keywords
(``wavelength`` or ``energy``, ``detector_distance``, ``detector_pixel_size``, ``geometry_kind``,
``focus_distance``, ``propagator``, ...) that override what the file records. Keywords, like the
file's values, describe the data as recorded: binning scales the detector pixel size, and the
sample pixel size and the positions in pixels are derived after cropping and binning.

Every problem with a file (unreadable, truncated, missing keys, counts that do not match, NaN frames,
missing geometry) is a `DataError` (a ValueError) whose message names the file and the problem.
Sizes are checked before anything is read: an array whose header claims more than its file stores
uncompressed, or more than the memory budget (`cuptycho.budget`, ``CUPTYCHO_MEMORY_LIMIT``), a frame
selection that selects nothing, and a scan far larger than its patterns cover are DataErrors naming
the array and its claimed shape, the option, or the stray positions.
Every writer is atomic (`cuptycho.atomic`, re-exported here) and refuses to replace an existing file unless
``overwrite=True``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..atomic import atomic_path, check_writable, open_atomic, write_atomic
from ._common import DataError
from .cxi import info_hdf5, read_cxi, write_cxi
from .frames import TiffFrames
from .npz import info_npz, read_npz, write_npz, write_tike
from .pipeline import Pipeline
from .results import read_result, write_result
from .tiff import read_positions, read_tiff, write_positions, write_tiff

__all__ = ["load", "info", "detect_format", "DataError", "Pipeline", "read_cxi", "write_cxi", "write_result",
           "read_result", "read_tiff", "write_tiff", "read_positions", "write_positions", "read_npz", "write_npz",
           "write_tike", "atomic_path", "open_atomic", "write_atomic", "check_writable"]

_HDF5_SUFFIXES = (".cxi", ".h5", ".hdf5", ".hdf", ".nxs", ".nx5")
_MAGIC = ((b"\x89HDF\r\n\x1a\n", "hdf5"), (b"PK\x03\x04", "npz"), (b"BZh", "npz"), (b"II*\x00", "tiff"),
          (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"))


def detect_format(path) -> str:
    """"hdf5", "npz" or "tiff" from the path's suffix, else from the file's first bytes."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataError(p, "no such file or folder")
    if p.is_dir():
        return "tiff"
    suffixes = [s.lower() for s in p.suffixes]
    last = suffixes[-1] if suffixes else ""
    if last in _HDF5_SUFFIXES:
        return "hdf5"
    if last == ".npz" or suffixes[-2:] == [".npz", ".bz2"]:
        return "npz"
    if last in (".tif", ".tiff"):
        return "tiff"
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as err:
        raise DataError(p, f"cannot read the file ({err})") from None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    raise DataError(p, "unknown file type: cuptycho reads CXI/HDF5 (.cxi .h5 .hdf5), NumPy (.npz, .npz.bz2) "
                       "and TIFF (.tif .tiff or a folder of them)")


def load(path, **options):
    """Read a measurement as a `cuptycho.Dataset`, choosing the reader by the file's type.

    Parameters
    ----------
    path : str or os.PathLike
        A CXI / HDF5 file, a .npz or .npz.bz2 archive, a multipage TIFF or a folder of TIFFs.
    **options
        Passed to `read_cxi`, `read_npz` or `read_tiff` (geometry keywords, preprocessing, and for
        TIFF the ``positions`` file).

    Raises
    ------
    DataError
        Anything wrong with the file, with a message naming the file and the problem.
    """
    kind = detect_format(path)
    reader = {"hdf5": read_cxi, "npz": read_npz, "tiff": read_tiff}[kind]
    return reader(path, **options)


def info(path) -> str:
    """A description of what `path` holds: its structure (keys, shapes, dtypes, small values) and,
    when it reads as a dataset without further options, the derived geometry (`Dataset.describe`)."""
    kind = detect_format(path)
    if kind == "hdf5":
        text = info_hdf5(path)
    elif kind == "npz":
        text = info_npz(path)
    else:
        with TiffFrames(path) as src:
            text = (f"{os.fspath(path)}: TIFF {'folder' if src.files is not None else 'file'}, {src.n} frame(s) "
                    f"of {src.frame_shape[0]} x {src.frame_shape[1]} ({src.dtype})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load(path)
    except (DataError, TypeError) as err:
        return f"{text}\n(not read as a dataset without more options: {err})"
    return f"{text}\n\nAs a dataset:\n{ds.describe()}"
