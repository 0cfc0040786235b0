"""Atomic writes: no partial file when a writer fails midway, no overwriting without permission."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from cuptycho import Dataset
from cuptycho import io as cio
from cuptycho import atomic


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_failing_writer_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.bin"

    def half_then_fail(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"x" * 1000)                       # half written ...
        raise RuntimeError("disk full")                 # ... then the writer dies

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.write_atomic(target, half_then_fail)
    assert listing(tmp_path) == []                      # neither the output nor a temporary file


def test_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ZeroDivisionError):
        with atomic.open_atomic(target, "w", overwrite=True) as fh:
            fh.write("new, half")
            1 / 0
    assert target.read_text() == "old" and listing(tmp_path) == ["out.txt"]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileExistsError, match=r"out\.txt already exists; refusing to overwrite it"):
        with atomic.open_atomic(target, "w") as fh:
            fh.write("new")
    assert target.read_text() == "old" and listing(tmp_path) == ["out.txt"]
    with atomic.open_atomic(target, "w", overwrite=True) as fh:
        fh.write("new")
    assert target.read_text() == "new" and listing(tmp_path) == ["out.txt"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic.write_atomic(tmp_path / "missing" / "x", lambda p: None)


def test_a_file_appearing_during_the_write_is_not_clobbered(tmp_path):
    target = tmp_path / "out.txt"

    def racing(tmp):
        tmp.write_text("mine")
        target.write_text("theirs")                     # another process got there first

    with pytest.raises(FileExistsError, match="appeared while it was being written"):
        atomic.write_atomic(target, racing)
    assert target.read_text() == "theirs" and listing(tmp_path) == ["out.txt"]


def test_cxi_writer_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ds = Dataset(rng.poisson(5.0, (4, 8, 8)).astype(np.float32), rng.uniform(0, 5, (4, 2)))
    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def flaky(self, name, *args, **kwargs):             # the fourth dataset fails: the file is half written
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("simulated I/O error")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", flaky)
    with pytest.raises(OSError, match="simulated"):
        cio.write_cxi(tmp_path / "m.cxi", ds)
    assert listing(tmp_path) == []
    monkeypatch.undo()
    cio.write_cxi(tmp_path / "m.cxi", ds)
    with pytest.raises(FileExistsError):
        cio.write_cxi(tmp_path / "m.cxi", ds)
    cio.write_cxi(tmp_path / "m.cxi", ds, overwrite=True)
    for writer in (cio.write_npz, cio.write_tike):
        writer(tmp_path / "d.npz", ds, overwrite=True)
        with pytest.raises(FileExistsError):
            writer(tmp_path / "d.npz", ds)
    assert listing(tmp_path) == ["d.npz", "m.cxi"]


def test_written_files_get_the_permissions_open_would_give(tmp_path):
    import os

    from cuptycho.atomic import open_atomic

    old = os.umask(0o022)
    try:
        with open_atomic(tmp_path / "out.bin", "wb") as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "out.bin").st_mode & 0o777) == 0o644
