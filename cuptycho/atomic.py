"""Atomic file writes: the one place cuptycho turns "write a file" into "never leave half a file".

Every writer in cuptycho (CXI, TIFF, NumPy, results, checkpoints) writes to a temporary file in the
destination's own folder and moves it into place with one rename, so a reader, a crash or a full
disk never sees a partially written output: the destination either keeps its old content or holds
the complete new file. The temporary file lives in the same folder because a rename is atomic only
within one file system.

Standard library only (it imports nothing from cuptycho), so every floor of the package may use it:
the kernel build (`cuptycho._build`), checkpoints, reports and the writers of `cuptycho.io`.

An existing destination is replaced only with ``overwrite=True``; otherwise the write is refused
with a `FileExistsError` before anything is written (and, where the file system has hard links, the
final step is a no-clobber link, so a file that appears while the temporary one is being written is
not overwritten either).

Examples
--------
>>> with atomic_path("out.cxi") as tmp:          # doctest: +SKIP
...     with h5py.File(tmp, "w") as f:
...         f["x"] = 1
>>> with open_atomic("positions.csv", "w") as fh:  # doctest: +SKIP
...     fh.write("y_m,x_m\\n")
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "open_atomic", "write_atomic", "check_writable"]


def check_writable(path, *, overwrite: bool = False) -> Path:
    """`path` as a Path, after checking that a write to it may go ahead.

    Raises
    ------
    FileExistsError
        `path` exists and `overwrite` is False.
    FileNotFoundError
        The folder that would hold `path` does not exist.
    IsADirectoryError
        `path` is a folder.
    """
    path = Path(os.fspath(path))
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file that can be written")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it (pass overwrite=True, "
                              "or --force on the command line, to replace it)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist")
    return path


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_folder(folder: Path) -> None:
    try:                                         # makes the rename itself durable (POSIX only)
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished temporary file onto `path` (no-clobber unless `overwrite`)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)                       # fails if path appeared meanwhile: never clobbers
    except FileExistsError:
        raise FileExistsError(f"{path} appeared while it was being written; refusing to overwrite it "
                              "(pass overwrite=True to replace it)") from None
    except OSError:                              # no hard links here (some network / FAT file systems)
        if path.exists():
            raise FileExistsError(f"{path} already exists; refusing to overwrite it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _umask() -> int:
    """The process umask (reading it means setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, *, overwrite: bool = False):
    """Context manager yielding a temporary path to write; on success it becomes `path`.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    overwrite : bool
        Replace an existing `path` (default False: `FileExistsError`, nothing written).

    Yields
    ------
    pathlib.Path
        A new, empty file in the destination's folder (hidden name ``.<name>.<random>.tmp``). Write it
        completely (close it) inside the ``with`` block. If the block raises, the temporary file is
        deleted, `path` is left as it was, and the exception propagates.
    """
    path = check_writable(path, overwrite=overwrite)
    folder = path.parent if str(path.parent) else Path(".")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())           # mkstemp makes 0600; give what open() would give
    try:
        yield tmp
        _fsync(tmp)
        _commit(tmp, path, overwrite)
        _fsync_folder(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def open_atomic(path, mode: str = "wb", *, overwrite: bool = False, **open_kwargs):
    """`open()` for writing whose result appears at `path` only if the ``with`` block succeeds.

    `mode` must be a write mode ("w", "wb", "wt", "x" variants are treated as "w"); keywords go to
    `open` (e.g. ``encoding="utf-8", newline=""``).
    """
    if not any(c in mode for c in "wx") or "+" in mode or "a" in mode:
        raise ValueError(f"open_atomic needs a plain write mode ('w', 'wb', 'wt'), got {mode!r}")
    mode = mode.replace("x", "w")
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()


def write_atomic(path, write, *, overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result onto `path` atomically; returns `path`.

    `write` receives the temporary file's path and must write the whole file to it. Any exception it
    raises leaves `path` untouched and no temporary file behind.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        write(tmp)
    return Path(os.fspath(path))
