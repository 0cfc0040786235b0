"""The GPU memory plan (cuptycho.memory_plan) against the emulated GPU's allocator, and `cuptycho plan`."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EMULATED_GPU, gpu
from cuptycho import Config, Group, fft, memory_plan, model, reconstruct, simulate

CASES = {
    "far field, full batch": (dict(preset="small_farfield"), dict(epochs=2)),
    "far field, batch 8, 2 probe modes": (dict(preset="small_farfield"), dict(epochs=2, batch=8, n_probe_modes=2)),
    "far field, 128 px, complex128": (dict(preset="small_farfield", shape=(128, 128)),
                                      dict(epochs=2, batch=16, dtype="complex128")),
    "near field, z refined": (dict(preset="small_nearfield"), dict(epochs=2, batch=8, z=Group(lr=1e-2))),
    # GPU chunks of 5 positions: a batch of 16 runs in chunks of 5, 5, 5 and 1
    "far field, chunked batches": (dict(preset="small_farfield"), dict(epochs=2, batch=16, n_probe_modes=2)),
}


def predicted_and_measured(ds, cfg):
    """(the plan's GPU bytes, the emulated allocator's high-water mark over a reconstruction)."""
    import cupy

    pool = cupy.get_default_memory_pool()
    model.release_buffers()
    base = pool.used_bytes()
    pool.reset_high_water()
    reconstruct(ds, cfg)
    return sum(t.bytes for t in memory_plan.plan(ds, cfg)["device"].values()), pool.high_water() - base


@gpu
@pytest.mark.skipif(not EMULATED_GPU, reason="the device's high-water mark is read from the emulated allocator")
@pytest.mark.parametrize("name", CASES)
def test_the_gpu_plan_predicts_the_peak_within_20_percent(name, monkeypatch):
    if "chunked" in name:
        monkeypatch.setattr(model, "GPU_CHUNK_BYTES", 5 * 2 * 64 * 64 * 8)

    sim, options = CASES[name]
    sim = dict(sim)
    ds = simulate.preset(sim.pop("preset"), seed=1, **sim).dataset()
    cfg = Config(backend="cuda", init_probe="data", probe=Group(enabled=True), positions=Group(lr=0.1), **options)
    predicted, measured = predicted_and_measured(ds, cfg)
    assert abs(predicted / measured - 1) <= 0.2, (name, predicted, measured)


@gpu
@pytest.mark.skipif(not EMULATED_GPU, reason="the device's high-water mark is read from the emulated allocator")
@pytest.mark.parametrize("batch", ["full", 16])
def test_the_gpu_plan_predicts_the_peak_of_a_streamed_run(batch, tmp_path, monkeypatch):
    """Streamed data (parts of 6 patterns): only a part's rows are on the device."""
    from cuptycho import budget, io

    monkeypatch.setattr(budget, "STREAM_PART_BYTES", 6 * 64 * 64 * 4)
    path = io.write_cxi(tmp_path / "scan.cxi", simulate.preset("small_farfield", seed=1).measurement())
    ds = io.load(path, stream=True)
    cfg = Config(backend="cuda", init_probe="data", probe=Group(enabled=True), epochs=2, batch=batch)
    predicted, measured = predicted_and_measured(ds, cfg)
    held = sum(t.bytes for t in memory_plan.plan(io.load(path, stream=False), cfg)["device"].values())
    assert abs(predicted / measured - 1) <= 0.2 and predicted < held, (predicted, measured, held)


@gpu
@pytest.mark.skipif(not EMULATED_GPU, reason="the device's high-water mark is read from the emulated allocator")
def test_the_gpu_plan_predicts_the_peak_on_measured_data():
    """The PETRA III near-field scan with the command line's defaults for it (5 epochs)."""
    from cuptycho import config, io
    from cuptycho.run import new_run_config

    path = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "petra3_p25_nearfield" / \
        "PETRAIII_P25_Near_Field_Ptycho.cxi"
    if not path.exists():
        pytest.skip(f"{path.resolve()} is absent (../shared/data sits next to a development checkout; CI has it)")
    ds = io.load(path)
    cfg = dataclasses.replace(new_run_config(config.RunConfig(), ds), epochs=5, backend="cuda")
    predicted, measured = predicted_and_measured(ds, cfg)
    assert abs(predicted / measured - 1) <= 0.2, (predicted, measured)


@pytest.mark.parametrize("padding, refine_z", [(0, False), (64, True)])
def test_the_production_case_fits_a_40_gb_gpu(padding, refine_z):
    """10k patterns of 256^2 with 3 probe modes and a 4096^2 object, full batch."""
    terms = memory_plan.device_estimate(10_000, (256, 256), (4096, 4096), n_probe_modes=3, padding=padding,
                                        refine_z=refine_z)
    total = sum(t.bytes for t in terms.values())
    assert 4e9 < total < 40e9
    # the cached FFT buffers stay bounded by the cache, whatever the number of patterns
    bigger = memory_plan.device_estimate(40_000, (256, 256), (4096, 4096), n_probe_modes=3, padding=padding,
                                         refine_z=refine_z)
    assert 0 < bigger["waves"].bytes <= fft.CACHE_BYTES


def test_the_plan_command_prints_host_and_gpu_memory(tmp_path):
    path = tmp_path / "sim.cxi"
    ok = subprocess.run([sys.executable, "-m", "cuptycho", "simulate", "small_farfield", "-o", str(path)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    out = subprocess.run([sys.executable, "-m", "cuptycho", "plan", str(path), "--set", "batch=8"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "host memory, CPU backend:" in out.stdout and "GPU memory, cuda backend (peak):" in out.stdout
    assert "the data, 49 patterns of 64 x 64 as float32" in out.stdout


@gpu
def test_a_run_that_cannot_fit_the_gpu_is_refused_before_anything_is_allocated(monkeypatch):
    """The engine checks the plan against the GPU's memory first: one error naming the largest term."""
    import cupy

    from cuptycho import budget, engine

    ds = simulate.preset("small_farfield", seed=1).dataset()
    cfg = Config(backend="cuda", init_probe="data", epochs=1)
    need = sum(t.bytes for t in memory_plan.plan(ds, cfg)["device"].values())
    pool = cupy.get_default_memory_pool()
    before = pool.used_bytes()
    monkeypatch.setattr(cupy.cuda.Device, "mem_info", property(lambda self: (need // 2, need // 2)))
    with pytest.raises(budget.MemoryBudgetError, match=r"of GPU memory; the run needs about .* and the GPU has"):
        engine.Reconstruction(ds, cfg)
    assert pool.used_bytes() == before
    monkeypatch.setattr(cupy.cuda.Device, "mem_info", property(lambda self: (need, need)))
    engine.Reconstruction(ds, cfg)                                  # exactly enough: it runs
