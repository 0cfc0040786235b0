"""Outputs under attack (issue 11): a full disk or a read-only folder never loses a finished run nor crashes
the interpreter, a second Ctrl-C never cuts the last write short, --force replaces regular files only and
never an input, and a dangling symbolic link at -o gets a clear answer.

The file-system cases mount small tmpfs folders (a full disk, a read-only one): they need root (as in CI)
and are skipped, saying why, where mounting is not permitted. Every mount is undone by its fixture.
"""
from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from cuptycho import atomic, checkpoint, cli
from cuptycho import io as cio
from cuptycho import run as runmod
from cuptycho.io import cxi, read_result

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file systems and signals")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cuptycho(*args):
    return [sys.executable, "-m", "cuptycho", *map(str, args)]


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def error_lines(text):
    lines = [line for line in text.splitlines() if line.startswith("cuptycho: error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """sim.cxi (the attack's setup) and a 1-epoch result r.cxi of it."""
    d = tmp_path_factory.mktemp("safety")
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(d / "sim.cxi")]) == 0
    assert cli.main(["reconstruct", str(d / "sim.cxi"), "-o", str(d / "r.cxi"), "--epochs", "1", "--backend", "cpu",
                     "--progress", "none"]) == 0
    return d


@pytest.fixture
def mount(tmp_path):
    """mount(name, options): a fresh tmpfs at tmp_path/name (skips where mounting is not permitted)."""
    done = []

    def make(name, options):
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs these as root)")
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        folder = tmp_path / name
        folder.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
        done.append(folder)
        return folder

    yield make
    for folder in reversed(done):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder, leave):
    """Fill `folder` (a tmpfs) until about `leave` bytes are free."""
    st = os.statvfs(folder)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    with open(folder / "fill", "wb") as fh:
        fh.write(b"\0" * size)


# --------------------------------------------------------------------------- 1: a full disk

def test_full_disk_at_the_result_keeps_the_run_and_never_crashes(work, mount, tmp_path):
    """Used to end in SIGSEGV (139) after an h5py traceback, the finished reconstruction gone."""
    full = mount("full", "size=600k")
    fill(full, 40 * 1024)
    spare = tmp_path / "spare"
    spare.mkdir()
    proc = subprocess.run(cuptycho("reconstruct", work / "sim.cxi", "-o", full / "out.cxi", "--epochs", "2",
                                   "--backend", "cpu", "--progress", "none"),
                          cwd=work, env={**ENV, "TMPDIR": str(spare)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == cli.EXIT_IOERR, (proc.returncode, proc.stderr)
    warned = proc.stderr.find(f"warning: {full} has ")          # said before the first epoch
    assert 0 <= warned < proc.stderr.find("reconstructing") and "MB free but the result needs about" in proc.stderr
    line = error_lines(proc.stderr)
    assert f"its result could not be written to {full / 'out.cxi'} (No space left on device)" in line
    saved = [p for p in spare.iterdir() if p.name.endswith(".ckpt.npz")]
    assert len(saved) == 1 and f"the run's state was saved to {saved[0]}" in line
    assert f"could not save the state at {full / 'out.ckpt.npz'} either (No space left on device)" in proc.stderr
    assert listing(full) == ["fill"]                           # no result, no checkpoint, no temporary file
    assert checkpoint.load(saved[0])["epoch"] == 2

    # room again: the printed command only writes the result
    (full / "fill").unlink()
    command = [line.split("write the result with: ", 1)[1] for line in proc.stderr.splitlines()
               if "write the result with: " in line]
    argv = shlex.split(command[0])
    assert argv[:2] == ["cuptycho", "reconstruct"] and argv[argv.index("-o") + 1] == str(full / "out.cxi")
    again = subprocess.run(cuptycho(*argv[1:], "--progress", "none"), cwd=work, env=ENV, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "2 epochs (0 now)" in again.stdout and len(read_result(full / "out.cxi").history) == 2


def test_full_disk_in_simulate_is_one_line(work, mount):
    full = mount("full", "size=100k")
    fill(full, 20 * 1024)
    proc = subprocess.run(cuptycho("simulate", "small_farfield", "-o", full / "s.cxi"), env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot write {full / 's.cxi'}: No space left on device" in error_lines(proc.stderr)
    assert listing(full) == ["fill"]


class _Budget(cxi._DiskFile):
    """A disk with room for `budget` bytes: a short write at the limit, then ENOSPC (like a full tmpfs)."""
    budget = 0

    def __init__(self, path):
        super().__init__(path)
        real = self.fh

        class Limited:
            def __getattr__(_, name):
                return getattr(real, name)

            def write(_, data):
                room = self.budget - real.tell()
                if room <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real.write(memoryview(data)[:room])

        self.fh = Limited()


def _small_result():
    rng = np.random.default_rng(0)
    return {"object": (rng.random((1, 80, 80)) * np.exp(1j * rng.random((1, 80, 80)))).astype(np.complex64),
            "probe": rng.random((2, 24, 24)).astype(np.complex64), "positions": rng.uniform(0, 50, (30, 2)),
            "history": [{"epoch": i, "loss": 1.0 / (i + 1)} for i in range(20)], "device": "cpu"}


def test_hdf5_writers_survive_the_disk_filling_at_any_byte(tmp_path, monkeypatch):
    """Wherever the disk fills (a dataset, the metadata flushed at close), the writer raises ENOSPC naming the
    output, with the HDF5 file closed and its temporary file deleted; before, HDF5 kept the file half-open and
    the interpreter crashed when it was freed. Needs no mount: the disk's size is simulated."""
    result = _small_result()
    size = cio.write_result(tmp_path / "whole.cxi", result).stat().st_size
    monkeypatch.setattr(cxi, "_DiskFile", _Budget)
    for budget in sorted({0, 1, 512, 2048, 8192, size // 3, size // 2, size - 4096, size - 600, size - 1}):
        _Budget.budget = budget
        out = tmp_path / "out.cxi"
        with pytest.raises(OSError, match=r"cannot write .*out\.cxi: No space left on device") as info:
            cio.write_result(out, result)
        assert info.value.errno == errno.ENOSPC
        assert listing(tmp_path) == ["whole.cxi"], budget
    _Budget.budget = size + 4096                    # and with room enough it is the same file
    back = read_result(cio.write_result(tmp_path / "out.cxi", result))
    np.testing.assert_array_equal(back.object, result["object"])
    assert back.history == result["history"]


# --------------------------------------------------------------------------- 2: a read-only folder, Ctrl-C twice

def test_a_read_only_output_folder_is_refused_before_the_first_epoch(work, mount, capsys):
    """Used to be found after the last epoch (300 epochs run, then exit 2)."""
    ro = mount("ro", "ro,size=100k")
    argv = ["reconstruct", str(work / "sim.cxi"), "-o", str(ro / "out.cxi"), "--epochs", "300", "--backend", "cpu",
            "--progress", "log"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot write in the folder {ro}: Read-only file system" in error_lines(err)
    assert "epoch 1/300" not in err and "reconstructing" not in err          # no work was done
    for argv in (["simulate", "-o", str(ro / "s.cxi")], ["show", str(work / "r.cxi"), "-o", str(ro / "r.png")]):
        assert cli.main(argv) == 2
        assert f"cannot write in the folder {ro}: Read-only file system" in error_lines(capsys.readouterr().err)


def test_a_folder_going_read_only_during_the_run_keeps_the_state(work, mount, tmp_path, monkeypatch):
    out_dir = mount("out", "size=2m")
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    run = runmod.ResumableRun(work / "sim.cxi", overrides={"epochs": 2, "backend": "cpu"}, output=out_dir / "o.cxi")
    subprocess.run(["mount", "-o", "remount,ro", str(out_dir)], check=True)
    with pytest.raises(runmod.WriteFailed) as info:
        run.execute(handle_signals=False)
    err = info.value
    assert err.errno == errno.EROFS and err.saved.parent == spare and err.result is not None
    assert f"could not be written to {out_dir / 'o.cxi'} (Read-only file system)" in str(err)
    assert listing(out_dir) == []
    done = runmod.reconstruct_file(resume=err.saved, output=tmp_path / "o.cxi", handle_signals=False)
    assert done.complete and len(read_result(tmp_path / "o.cxi").history) == 2


def test_a_failed_result_write_saves_a_checkpoint_and_exits_74(work, monkeypatch, capsys):
    """Any failure of the last write (here EIO) keeps the run: no root needed."""
    def broken(path, *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(runmod.io, "write_result", broken)
    out = work / "eio.cxi"
    assert cli.main(["reconstruct", str(work / "sim.cxi"), "-o", str(out), "--epochs", "2", "--backend", "cpu",
                     "--progress", "none"]) == cli.EXIT_IOERR
    err = capsys.readouterr().err
    line = error_lines(err)
    assert f"could not be written to {out} (Input/output error); the run's state was saved to " \
           f"{work / 'eio.ckpt.npz'}" in line
    command = shlex.split(err.split("write the result with: ", 1)[1].splitlines()[0])
    assert command[command.index("--resume") + 1] == str(work / "eio.ckpt.npz")
    monkeypatch.undo()
    assert cli.main([*command[1:], "--progress", "none"]) == 0
    assert len(read_result(out).history) == 2


def test_a_stopped_run_whose_checkpoint_cannot_be_written_saves_it_elsewhere(work, tmp_path, monkeypatch):
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    own = work / "elsewhere.ckpt.npz"
    real = checkpoint.save

    def save(state, path):
        if os.fspath(path) == os.fspath(own):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(state, path)

    monkeypatch.setattr(runmod.checkpoint, "save", save)
    notes = []
    run = runmod.ResumableRun(work / "sim.cxi", overrides={"epochs": 50, "backend": "cpu"},
                              output=work / "elsewhere.cxi", note=notes.append)
    outcome = run.execute(lambda rec: rec["epoch"] == 1 and os.kill(os.getpid(), signal.SIGTERM))
    assert outcome.stopped_by == signal.SIGTERM and outcome.checkpoint.parent == spare
    assert any(f"could not be written to {own} (No space left on device); the run's state was saved to "
               f"{outcome.checkpoint}" in line for line in notes)
    assert f"--resume {outcome.checkpoint} " in outcome.resume_command() and not own.exists()
    assert checkpoint.load(outcome.checkpoint)["epoch"] == 2


def test_when_no_place_takes_the_state_the_error_says_so(work, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runmod.io, "write_result", broken)
    monkeypatch.setattr(runmod.checkpoint, "save", broken)
    out = work / "nowhere.cxi"
    assert cli.main(["reconstruct", str(work / "sim.cxi"), "-o", str(out), "--epochs", "1", "--backend", "cpu",
                     "--progress", "none"]) == cli.EXIT_IOERR
    err = capsys.readouterr().err
    assert f"could not be written to {out} (Input/output error); its state could not be saved" in error_lines(err)
    for place in (work / "nowhere.ckpt.npz", spare, tmp_path):
        assert f"could not save the state at {place} either (Input/output error)" in err
    assert "with: " not in err and listing(spare) == [] and listing(tmp_path) == ["spare"]


def _sigint_during(monkeypatch, module, name, count):
    """Replace module.name by a wrapper that sends SIGINT `count` times to this process, then calls it."""
    real = getattr(module, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        for _ in range(count):
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_a_second_ctrl_c_during_the_result_write_waits_for_it(work, monkeypatch, capsys):
    """Used to raise KeyboardInterrupt inside the write: no result and no checkpoint."""
    calls = _sigint_during(monkeypatch, runmod.io, "write_result", 2)
    out = work / "twice.cxi"
    assert cli.main(["reconstruct", str(work / "sim.cxi"), "-o", str(out), "--epochs", "2", "--backend", "cpu",
                     "--progress", "none"]) == 0
    assert len(calls) == 1 and "SIGINT came after the last epoch: the result is complete" in capsys.readouterr().err
    assert len(read_result(out).history) == 2 and not list(work.glob(".*.tmp"))


def test_a_second_ctrl_c_during_the_stop_checkpoint_waits_for_it(work, monkeypatch):
    _sigint_during(monkeypatch, runmod.checkpoint, "save", 1)
    run = runmod.ResumableRun(work / "sim.cxi", overrides={"epochs": 50, "backend": "cpu"}, output=work / "stop.cxi")

    def first_ctrl_c(rec):
        if rec["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    try:
        outcome = run.execute(first_ctrl_c)
    except KeyboardInterrupt:                         # not out of pytest: a plain failure
        pytest.fail("the second SIGINT cut the checkpoint's write short: the run is lost")
    assert outcome.stopped_by == signal.SIGINT and outcome.result is None
    assert checkpoint.load(work / "stop.ckpt.npz")["epoch"] == 2 and not (work / "stop.cxi").exists()


# --------------------------------------------------------------------------- 7: --force replaces regular files only

def _special_files(folder):
    """{kind as the error names it: path} of what --force must never replace."""
    made = {}
    os.mkfifo(folder / "fifo")
    made["a FIFO"] = folder / "fifo"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(folder / "sock"))
        made["a socket"] = folder / "sock"
    except OSError:                                   # a path too long for AF_UNIX: no socket case
        pass
    finally:
        sock.close()
    try:
        os.mknod(folder / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        made["a character device"] = folder / "null"
    except (OSError, AttributeError):                 # not root: no device node
        pass
    (folder / "dir").mkdir()
    made["a folder"] = folder / "dir"
    return made


def test_force_replaces_regular_files_only(work, tmp_path, capsys):
    for kind, path in _special_files(tmp_path).items():
        before = os.lstat(path)
        for argv in (["simulate", "-o", str(path), "--force"],
                     ["show", str(work / "r.cxi"), "-o", str(path), "--force"],
                     ["reconstruct", str(work / "sim.cxi"), "-o", str(path), "--force", "--epochs", "300",
                      "--progress", "log"]):
            assert cli.main(argv) == 2, (kind, argv)
            err = capsys.readouterr().err
            assert f"{path} is {kind}" in error_lines(err) and "epoch 1/300" not in err
            after = os.lstat(path)
            assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
        with pytest.raises((FileExistsError, IsADirectoryError), match=f"is {kind}"):
            atomic.write_atomic(path, lambda tmp: tmp.write_text("x"), overwrite=True)
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_output_is_never_an_input(work, tmp_path, capsys):
    sim = work / "sim.cxi"
    (tmp_path / "link.cxi").symlink_to(sim)
    os.link(sim, tmp_path / "hard.cxi")
    stamp = sim.read_bytes()
    toml = tmp_path / "run.toml"
    toml.write_text("epochs = 1\n")
    (tmp_path / "c.ckpt.npz").write_text("epochs = 1\n")           # a TOML named like c.cxi's checkpoint
    cases = [
        (["reconstruct", str(sim), "-o", str(tmp_path / "link.cxi")], "is the input data file"),
        (["reconstruct", str(sim), "-o", str(tmp_path / "hard.cxi")], "is the input data file"),
        (["reconstruct", str(tmp_path / "hard.cxi"), "-o", str(sim)], "is the input data file"),
        (["reconstruct", str(sim), "--config", str(toml), "-o", str(toml)], "is the --config file"),
        (["reconstruct", str(sim), "--config", str(tmp_path / "c.ckpt.npz"), "-o", str(tmp_path / "c.cxi")],
         "the checkpoint .*c.ckpt.npz is the --config file"),
        (["reconstruct", str(tmp_path / "d.ckpt.npz"), "-o", str(tmp_path / "d.cxi")],
         "the checkpoint .*d.ckpt.npz is the input data file"),
        (["show", str(work / "r.cxi"), "-o", str(work / "r.cxi")], "the report .*r.cxi is the result file"),
        (["show", str(tmp_path / "link.r.cxi"), "-o", str(work / "r.cxi")], "the report .*r.cxi is the result file"),
    ]
    shutil.copy(sim, tmp_path / "d.ckpt.npz")
    (tmp_path / "link.r.cxi").symlink_to(work / "r.cxi")
    result = (work / "r.cxi").read_bytes()
    for argv, message in cases:
        assert cli.main([*argv, "--force"]) == 2, argv
        assert re.search(message, error_lines(capsys.readouterr().err)), argv
    assert sim.read_bytes() == stamp and (work / "r.cxi").read_bytes() == result
    assert (tmp_path / "link.cxi").is_symlink() and toml.read_text() == "epochs = 1\n"
    # a resumed run writes its own checkpoint, but its -o is never the checkpoint it resumes
    assert cli.main(["reconstruct", str(sim), "-o", str(tmp_path / "e.cxi"), "--epochs", "1", "--checkpoint-every",
                     "1", "--backend", "cpu", "--progress", "none"]) == 0
    ckpt = tmp_path / "e.ckpt.npz"
    assert cli.main(["reconstruct", "--resume", str(ckpt), "-o", str(ckpt), "--force"]) == 2
    assert "is the checkpoint being resumed" in error_lines(capsys.readouterr().err)
    assert cli.main(["reconstruct", "--resume", str(ckpt), "-o", str(tmp_path / "e.cxi"), "--epochs", "2",
                     "--force", "--progress", "none"]) == 0


# --------------------------------------------------------------------------- 10c: a dangling symbolic link at -o

def test_a_dangling_symlink_output(tmp_path, capsys):
    """Used to say the file 'appeared while it was being written'. Without --force it is refused as a dangling
    link; with --force the link itself is replaced, its target never written."""
    link = tmp_path / "out.cxi"
    link.symlink_to(tmp_path / "elsewhere" / "target.cxi")
    assert cli.main(["simulate", "-o", str(link)]) == 2
    line = error_lines(capsys.readouterr().err)
    assert f"{link} is a dangling symbolic link (to {tmp_path / 'elsewhere' / 'target.cxi'})" in line
    assert "appeared" not in line and link.is_symlink()
    (tmp_path / "elsewhere").mkdir()
    assert cli.main(["simulate", "-o", str(link), "--force"]) == 0
    assert not link.is_symlink() and link.is_file() and listing(tmp_path / "elsewhere") == []
    assert cio.load(link).n_patterns == 49
