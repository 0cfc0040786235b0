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
not overwritten either). Only a regular file or a symbolic link is ever replaced: a folder, device,
FIFO or socket is refused even with ``overwrite=True``, and a symbolic link (dangling or not) is
replaced itself; its target is never written. A failed write (a full disk, a read-only mount) raises
an `OSError` naming the destination, with the temporary file gone.

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
import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "open_atomic", "write_atomic", "check_writable", "check_folder", "same_file"]

# errors that mean "this destination cannot take the file" (rather than a bug or a bad input)
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _refuse_kind(path: Path, st) -> None:
    """Refuse to replace anything but a regular file or a symbolic link (to something other than a folder)."""
    if stat.S_ISDIR(st.st_mode) or (stat.S_ISLNK(st.st_mode) and path.is_dir()):
        raise IsADirectoryError(f"{path} is a folder, not a file that can be written")
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise FileExistsError(f"{path} is {kind}, not a regular file; refusing to replace it (overwriting, "
                                  "--force on the command line, replaces regular files only)")


def check_writable(path, *, overwrite: bool = False, probe: bool = False) -> Path:
    """`path` as a Path, after checking that a write to it may go ahead.

    With `probe`, also create and remove a file in its folder (`check_folder`), so a read-only or
    otherwise unwritable folder is found now rather than when the output is written.

    Raises
    ------
    FileExistsError
        `path` exists (a dangling symbolic link included) and `overwrite` is False; or it is a device,
        FIFO or socket, which are never replaced.
    FileNotFoundError
        The folder that would hold `path` does not exist.
    IsADirectoryError
        `path` is a folder (or a symbolic link to one).
    OSError
        `probe` and the folder cannot take a new file (PermissionError, read-only file system, ...).
    """
    path = Path(os.fspath(path))
    try:
        st = os.lstat(path)
    except OSError:                              # absent (or its folder is): the folder check says which
        st = None
    if st is not None:
        _refuse_kind(path, st)
        if not overwrite:
            if stat.S_ISLNK(st.st_mode) and not path.exists():
                raise FileExistsError(f"{path} is a dangling symbolic link (to {os.readlink(path)}); refusing to "
                                      "replace it (pass overwrite=True, or --force on the command line, to replace "
                                      "the link itself; its target is never written)")
            raise FileExistsError(f"{path} already exists; refusing to overwrite it (pass overwrite=True, "
                                  "or --force on the command line, to replace it)")
    folder = _folder(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist")
    if probe:
        check_folder(folder)
    return path


def check_folder(folder) -> Path:
    """Create and remove a file in `folder`: an OSError saying why now if no output can be written there
    (read-only mount, no permission), rather than after the work that makes the output."""
    folder = Path(os.fspath(folder))
    try:
        fd, name = tempfile.mkstemp(prefix=".cuptycho-probe.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise _named(err, f"cannot write in the folder {folder}: {err.strerror or err}") from None
    os.close(fd)
    os.unlink(name)
    return folder


def same_file(a, b) -> bool:
    """Whether `a` and `b` are one file (the same device and inode: through symbolic and hard links too)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, TypeError, ValueError):     # either absent (or not a path): not the same file
        return False


def _named(err: OSError, message: str) -> OSError:
    """`err` again (same class and errno) with a message that names what could not be written."""
    new = type(err)(message)
    new.errno = err.errno                        # not strerror: str() then stays `message`
    return new


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
        with contextlib.suppress(FileNotFoundError):
            _refuse_kind(path, os.lstat(path))   # again: a FIFO may have been made there meanwhile
        os.replace(tmp, path)                    # replaces a symbolic link itself, never its target
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
        deleted, `path` is left as it was, and the exception propagates (an OSError of the disk, such
        as ENOSPC, EIO or EROFS, with a message naming `path` rather than the temporary file).
    """
    path = check_writable(path, overwrite=overwrite)
    folder = _folder(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as err:
        raise _named(err, f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes 0600; give what open() would give
        yield tmp
        _fsync(tmp)
        _commit(tmp, path, overwrite)
        _fsync_folder(folder)
    except OSError as err:
        if err.errno in WRITE_ERRORS and err.filename in (None, str(tmp)):
            raise _named(err, f"cannot write {path}: {err.strerror or err}") from err
        raise
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
