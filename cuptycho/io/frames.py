"""TIFF frame sources: a multipage TIFF or a folder of single-frame TIFFs, read one frame at a time.

`TiffFrames` gives random access to the frames (the TIFF reader streams them through
`cuptycho.io.Pipeline`; `cuptycho.io.info` describes them); `read_frames` reads them all (dark
frames, masks). Folders are read in natural order of the file names (``frame_2.tif`` before
``frame_10.tif``). tifffile is imported only when a TIFF is opened.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ._common import DataError, claimed_bytes

TIFF_SUFFIXES = (".tif", ".tiff")


def _tifffile():
    import tifffile
    return tifffile


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _check_page(path, page, what):
    """Refuse an uncompressed page whose header claims more pixels than its file holds (a damaged
    header would otherwise make the reader allocate what it claims)."""
    if page.compression == 1:                                 # COMPRESSION.NONE
        claimed_bytes(path, what, page.shape, page.dtype, file_bytes=Path(path).stat().st_size, memory=False)


def tiff_files(folder) -> list[Path]:
    """The TIFF files of `folder` in natural order of their names."""
    files = [p for p in Path(folder).iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file()]
    return sorted(files, key=_natural_key)


class TiffFrames:
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
                    _check_page(self.files[0], page, "the TIFF")
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
                elif len(shape) == 3:                # one page holding the whole stack: read whole, bounded first
                    _check_page(self.path, pages[0], "the TIFF's page")
                    claimed_bytes(self.path, "the TIFF's page", shape, series.dtype)
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
                    _check_page(self.path, page, f"page {j} of the TIFF")
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
                with _tifffile().TiffFile(self.files[j]) as tif:   # its header checked before its pixels are read
                    page = tif.pages[0]
                    if tuple(page.shape) != self.frame_shape:
                        raise DataError(self.path, f"frame {j} ({self.files[j]}) has shape {tuple(page.shape)}, "
                                                   f"the first {self.frame_shape}")
                    _check_page(self.files[j], page, "the TIFF")
                    a = tif.asarray()
            else:
                a = self._tif.pages[j].asarray()
        except DataError:
            raise
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
    with TiffFrames(path) as src:
        claimed_bytes(src.path, "the TIFF", (src.n, *src.frame_shape), src.dtype)    # read whole: bounded first
        return src.read(slice(None))
