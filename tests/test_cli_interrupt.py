"""SIGINT / SIGTERM in the middle of `cuptycho reconstruct`: the run stops after the current epoch,
writes a checkpoint, says how to resume and exits with 130 / 143, leaving no output behind; the resumed
run ends with exactly the result of an uninterrupted one.

Why exact equality: the checkpoint holds every piece of state bit for bit (parameters, Adam moments and
step counts, schedule states, the minibatch RNG, loss scale, TV weight, early-stop counters), and the CPU
backend computes the same floats in the same order for a fixed thread count (its kernels reduce without
atomics in a fixed order). The FFTs are pinned to scipy.fft (CUPTYCHO_FFT=scipy) in these subprocesses:
FFTW plans with FFTW_MEASURE, which picks an algorithm by timing it, so two processes could round
differently. Any difference at all therefore means some state was not checkpointed.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

from cuptycho import checkpoint, cli
from cuptycho.io import read_result

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUPTYCHO_FFT": "scipy", "PYTHONUNBUFFERED": "1"}
EPOCHS = 150
TOML = f"""
epochs = {EPOCHS}
batch = 8
seed = 5
backend = "cpu"
init_probe = "data"
loss = [[0, "gaussian"], [60, "poisson"]]
[object]
lr = 0.1
schedule = {{kind = "step", every = 50, gamma = 0.7}}
[probe]
enabled = true
lr = 0.05
[positions]
enabled = true
lr = 0.1
start_epoch = 5
[tv]
ratio = 0.01
eps = 1e-3
"""


def cuptycho(*args):
    return [sys.executable, "-m", "cuptycho", *map(str, args)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("interrupt")
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(d / "sim.cxi")]) == 0
    (d / "run.toml").write_text(TOML)
    return d


def interrupt(d, out, signum, after=1):
    """Start a reconstruction, send `signum` once a progress line at epoch >= `after` is out, wait."""
    proc = subprocess.Popen(cuptycho("reconstruct", d / "sim.cxi", "--config", d / "run.toml", "-o", out,
                                     "--progress", "log"),
                            cwd=d, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:                      # "epoch 1/150 ...", then every 7 epochs
        seen.append(line)
        if line.startswith("epoch ") and int(line.split()[1].split("/")[0]) >= after:
            proc.send_signal(signum)
            break
    try:
        stdout, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, stdout, "".join(seen) + rest


def test_sigint_checkpoints_and_the_resumed_run_matches_an_uninterrupted_one(setup):
    d = setup
    straight = subprocess.run(cuptycho("reconstruct", "sim.cxi", "--config", "run.toml", "-o", "straight.cxi",
                                       "--progress", "none"), cwd=d, env=ENV, capture_output=True, text=True,
                              timeout=300)
    assert straight.returncode == 0, straight.stderr

    # past the schedule's step (50), the loss switch (60) and the start of position refinement (5)
    code, stdout, stderr = interrupt(d, "resumed.cxi", signal.SIGINT, after=62)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    state = checkpoint.load(d / "resumed.ckpt.npz")
    assert 62 <= state["epoch"] < EPOCHS                         # stopped mid-run, after a whole epoch
    assert len(state["history"]) == state["epoch"] and state["events"][-1]["event"] == "interrupted"
    assert f"SIGINT: stopped after epoch {state['epoch']} of {EPOCHS}" in stderr
    assert not (d / "resumed.cxi").exists()                     # no result, and no half-written file
    assert not list(d.glob(".*.tmp"))

    command = [line.split("resume with: ", 1)[1] for line in stderr.splitlines() if "resume with: " in line]
    assert len(command) == 1
    argv = shlex.split(command[0])
    assert argv[:2] == ["cuptycho", "reconstruct"] and "--resume" in argv
    resumed = subprocess.run(cuptycho(*argv[1:], "--progress", "none"), cwd=d, env=ENV, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at epoch {state['epoch']}" in resumed.stderr

    a, b = read_result(d / "straight.cxi"), read_result(d / "resumed.cxi")
    assert [h["epoch"] for h in b.history] == list(range(EPOCHS))
    np.testing.assert_array_equal(b.loss, a.loss)
    np.testing.assert_array_equal(b.object, a.object)
    np.testing.assert_array_equal(b.probe, a.probe)
    np.testing.assert_array_equal(b.positions, a.positions)
    assert np.abs(b.object - state["arrays"]["object"]).max() > 1e-3    # and the resumed part did real work


def test_sigterm_checkpoints_and_exits_143(setup):
    d = setup
    code, stdout, stderr = interrupt(d, "term.cxi", signal.SIGTERM)
    assert code == 143, stderr
    assert "SIGTERM: stopped after epoch" in stderr and "resume with: " in stderr and "Traceback" not in stderr
    assert 0 < checkpoint.load(d / "term.ckpt.npz")["epoch"] < EPOCHS
    assert not (d / "term.cxi").exists() and not list(d.glob(".*.tmp"))
