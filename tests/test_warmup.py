"""`cuptycho.warmup` (and `cuptycho warmup`) compiles the kernels ahead; FFTW plans are kept in the cache
folder as wisdom, so every process on a machine plans (and rounds) the same way."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cuptycho
from cuptycho import _build, cli, fft

pyfftw = pytest.importorskip("pyfftw", reason="FFTW wisdom needs pyFFTW (the 'fftw' extra)")


def test_warmup_loads_the_cpu_library_of_this_machine():
    done = cuptycho.warmup("cpu")
    assert done["backend"] == "cpu" and done["compiled"] == [str(_build.cpu_library_path())]
    assert _build.cpu_library_path().is_file() and done["seconds"] >= 0


def test_the_numpy_reference_has_nothing_to_compile(capsys):
    assert cuptycho.warmup("numpy")["compiled"] == []
    assert cli.main(["warmup", "--backend", "numpy"]) == 0
    assert "numpy kernels ready" in capsys.readouterr().out


def test_the_command_line_names_the_library(capsys):
    assert cli.main(["warmup", "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cuptycho: cpu kernels ready in ") and str(_build.cpu_library_path()) in out


PLAN = """
import sys, numpy as np
from cuptycho import fft
plan = fft.FFTWPlan((4, 2, 96, 96), np.complex64)
x = np.random.default_rng(0).standard_normal((2, 4, 2, 96, 96)).astype(np.float32)
plan.buffer[...] = x[0] + 1j * x[1]
sys.stdout.buffer.write(np.asarray(plan.forward(plan.buffer)).tobytes())
"""


def _plan_in_a_process(cache):
    env = {**os.environ, "CUPTYCHO_CACHE_DIR": str(cache), "CUPTYCHO_FFT": "fftw"}
    return subprocess.run([sys.executable, "-c", PLAN], env=env, capture_output=True, check=True).stdout


def test_fftw_plans_are_measured_once_per_machine_and_reused(tmp_path):
    cache = tmp_path / "cache"
    first = _plan_in_a_process(cache)
    wisdom = cache / fft.WISDOM_FILE
    assert wisdom.is_file() and wisdom.stat().st_size > 0
    stored, mtime = wisdom.read_bytes(), wisdom.stat().st_mtime_ns
    second = _plan_in_a_process(cache)
    assert second == first                                   # the same plan, so the same rounding
    assert wisdom.read_bytes() == stored and wisdom.stat().st_mtime_ns == mtime   # nothing new to store


def test_a_cache_folder_others_can_write_is_not_trusted_and_planning_still_works(tmp_path):
    cache = tmp_path / "shared"
    cache.mkdir()
    os.chmod(cache, 0o777)
    out = _plan_in_a_process(cache)
    assert len(out) == 4 * 2 * 96 * 96 * 8 and not (cache / fft.WISDOM_FILE).exists()
