"""Host memory: reading a file and setting up and running a reconstruction hold the data once, plus chunks
whose size is bounded by constants, never a second copy of the data (a float64 copy for the probe guess,
a data x mask product, four read slabs alive at once, the loss of a whole batch in float64). The chunk
constants are shrunk here so that a small file shows what a large one would (`benchmarks/bench_memory.py`
measures the real thing: 1.41x the data's size over the interpreter's baseline at 4000 patterns of
128 x 128, 3.08x before)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from cuptycho import (Config, Group, budget, defaults, detector, divergence, engines, guesses, initial, io, patterns,
                      simulate, validation)

SMALL = 1 << 18          # 256 KiB chunks (and read slabs), a small part of the data below


def write(path, side):
    """A dense scan (90 % overlap): the object and its optimiser state stay small beside the data."""
    exp = simulate.preset("small_farfield", scan_size=(side, side), overlap=0.9, seed=1)
    io.write_cxi(path, exp.measurement())
    return path, exp.data.astype(np.float32).nbytes


@pytest.fixture(scope="module")
def measurement(tmp_path_factory):
    return write(tmp_path_factory.mktemp("memory") / "scan.cxi", 16)


def excess(path, data_bytes, **options):
    """(peak traced bytes over the data while reading, peak over what reading left while a 2-epoch run of the
    command line's defaults with the detector model is set up and run)."""
    tracemalloc.start()
    try:
        ds = io.load(path, chunk_bytes=SMALL, **options)
        current, peak = tracemalloc.get_traced_memory()
        reading = peak - data_bytes
        tracemalloc.reset_peak()
        cfg = defaults.apply(Config(epochs=2, backend="cpu", init_probe="data", probe=Group(enabled=True)),
                             ds.n_patterns, {"epochs"})[0]
        cfg.background, cfg.scale = Group(enabled=True), Group(enabled=True)
        engines.create(ds, cfg).run()
        return reading, tracemalloc.get_traced_memory()[1] - current
    finally:
        tracemalloc.stop()


def test_reading_setting_up_and_running_hold_the_data_once(measurement, tmp_path, monkeypatch):
    """Four times the patterns: what reading and running hold beyond the data grows by less than half the
    data's growth (before, a run held another 2-3 copies)."""
    for module, name in ((validation, "CHECK_CHUNK_BYTES"), (initial, "MOMENT_CHUNK_BYTES"),
                         (guesses, "FIT_CHUNK_BYTES"), (divergence, "LOSS_CHUNK_BYTES")):
        monkeypatch.setattr(module, name, SMALL)
    small_path, small_bytes = measurement
    large_path, large_bytes = write(tmp_path / "large.cxi", 32)
    assert large_bytes > 20 * SMALL
    small, large = excess(small_path, small_bytes), excess(large_path, large_bytes)
    growth = large_bytes - small_bytes
    assert large[0] < 0.25 * large_bytes and large[0] - small[0] < 0.1 * growth, (small, large, growth)
    assert large[1] - small[1] < 0.5 * growth, (small, large, growth)


def test_a_streamed_run_holds_a_bounded_part_of_the_data(measurement, tmp_path, monkeypatch):
    """Streamed (`cuptycho.patterns`): reading holds 16 bytes per pattern, and a run's peak over the engine's own
    state is bounded chunks, whatever the number of patterns."""
    for module, name in ((validation, "CHECK_CHUNK_BYTES"), (initial, "MOMENT_CHUNK_BYTES"),
                         (guesses, "FIT_CHUNK_BYTES"), (divergence, "LOSS_CHUNK_BYTES"), (patterns, "CHUNK_BYTES"),
                         (detector, "COUNT_CHUNK_BYTES"), (budget, "STREAM_PART_BYTES"),
                         (budget, "READ_AHEAD_BYTES")):
        monkeypatch.setattr(module, name, SMALL)
    small_path, small_bytes = measurement
    large_path, large_bytes = write(tmp_path / "large.cxi", 32)
    small, large = (excess(p, 0, stream=True) for p in (small_path, large_path))
    assert large[0] < 0.05 * large_bytes, (large, large_bytes)
    # the run: 5.8 MB over reading for 16.8 MB of data (1.0 MB more than for 4.2 MB: the larger object's state)
    assert large[1] < 0.5 * large_bytes and large[1] - small[1] < 0.15 * (large_bytes - small_bytes), (small, large)


def test_reading_reorders_repeated_and_unsorted_frames(measurement):
    path, _ = measurement
    whole = io.load(path).data
    picked = io.load(path, frames=[5, 2, 2, 9], chunk_bytes=SMALL).data
    np.testing.assert_array_equal(picked, whole[[5, 2, 2, 9]])


def test_data_checks_in_chunks_still_name_the_first_bad_value(monkeypatch):
    monkeypatch.setattr(validation, "CHECK_CHUNK_BYTES", 64 * 4)      # one 8 x 8 float32 pattern per chunk
    data = np.ones((5, 8, 8), np.float32)
    data[3, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"data contains NaN or Inf \(first at index \(3, 2, 1\)\)"):
        validation.data(data, 5, (8, 8), np.float32)
    data[3, 2, 1], data[1, 0, 0], data[4, 7, 7] = 1, -2, -1
    with pytest.raises(ValueError, match=r"data has 2 negative value\(s\) \(min -2\)"):
        validation.data(data, 5, (8, 8), np.float32)


def test_the_mean_pattern_in_chunks_is_the_mean(monkeypatch):
    rng = np.random.default_rng(0)
    d = rng.random((7, 6, 5)).astype(np.float32)
    w = (rng.random((7, 6, 5)) > 0.3).astype(np.float64)
    whole_plain, whole_masked = initial._mean_pattern(d, None), initial._mean_pattern(d, w)
    monkeypatch.setattr(initial, "MOMENT_CHUNK_BYTES", 2 * 6 * 5 * 8)       # two patterns per chunk
    np.testing.assert_allclose(initial._mean_pattern(d, None), d.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(initial._mean_pattern(d, None), whole_plain, rtol=1e-12)
    np.testing.assert_allclose(initial._mean_pattern(d, w), whole_masked, rtol=1e-12)
