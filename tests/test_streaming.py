"""Streamed data: patterns read from their file as the engines need them (`cuptycho.patterns`).

A streamed dataset must give what the loaded one gives: the same rows through every indexing the engines
use, the same preprocessing (crop, centre, bin, fftshift, dark, frame selection, saturation weights), the
same checks of bad frames when the file is opened, and the same reconstructions (bit for bit when a step is
one part; to rounding when a step is summed in parts). Its reads follow the epoch's plan, one block ahead."""
from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from cuptycho import Config, Group, budget, engines, io, patterns, preprocess, simulate
from cuptycho.io import DataError

gpu = pytest.mark.gpu


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    exp = simulate.preset("small_farfield", seed=1)
    path = tmp_path_factory.mktemp("stream") / "scan.cxi"
    io.write_cxi(path, exp.measurement())
    return path


def test_streamed_rows_index_like_the_loaded_array(scan):
    held, streamed = io.load(scan, stream=False), io.load(scan, stream=True)
    assert streamed.streamed and not held.streamed
    a, s = held.data, streamed.data
    assert isinstance(s, patterns.StreamedPatterns) and s.shape == a.shape and s.dtype == np.float32
    for key in (3, -1, slice(None), slice(2, 40, 7), np.array([5, 3, 3, 0, 48]), [7, 1], np.arange(49) % 3 == 0,
                (4, slice(10, 20)), (np.array([2, 9]), 5)):
        np.testing.assert_array_equal(s[key], a[key], err_msg=repr(key))
    np.testing.assert_array_equal(np.asarray(s), a)
    np.testing.assert_allclose(patterns.frame_sums(s), patterns.frame_sums(a), rtol=1e-12)
    assert patterns.maximum(s) == patterns.maximum(a)
    with pytest.raises(IndexError, match="out of range"):
        s[np.array([49])]
    with pytest.raises(IndexError, match="integers"):
        s[np.array([1.5])]
    assert "streamed" in streamed.describe()
    s.prefetch([4, 2])                                   # a read ahead is taken by the same rows only
    np.testing.assert_array_equal(s.read(np.array([4, 2])), a[[4, 2]])
    s.prefetch([4, 2])
    np.testing.assert_array_equal(s.read(np.array([1])), a[[1]])
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s[0]


def test_preprocessing_streamed_equals_loaded(scan):
    peak = float(io.load(scan).data.max())
    options = dict(frames=[30, 2, 2, 17, 40, 8], crop=(40, 36), center="mass", bin=2, dark=np.full((64, 64), 0.5),
                   saturation=0.4 * peak)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", preprocess.NegativeCountsWarning)
        held, streamed = io.load(scan, stream=False, **options), io.load(scan, stream=True, **options)
    assert streamed.streamed and patterns.is_streamed(streamed.mask)
    np.testing.assert_array_equal(np.asarray(streamed.data), held.data)
    np.testing.assert_array_equal(np.asarray(streamed.mask), held.mask)
    assert 0 < held.mask.mean() < 1                      # the saturation weights matter
    np.testing.assert_array_equal(streamed.positions, held.positions)


def test_tiff_streams_as_cxi_does(scan, tmp_path):
    held = io.load(scan)
    io.write_tiff(tmp_path / "scan.tif", held)
    streamed = io.load(tmp_path / "scan.tif", stream=True, fftshift=False)
    assert streamed.streamed
    np.testing.assert_array_equal(streamed.data[np.array([40, 3, 3])], held.data[[40, 3, 3]])


def test_bad_frames_are_found_when_a_streamed_file_is_opened(tmp_path):
    path = io.write_cxi(tmp_path / "bad.cxi", simulate.preset("small_farfield", seed=2).measurement())
    with h5py.File(path, "r+") as f:
        f["entry_1/data_1/data"][5, 3, 3] = np.nan
    with pytest.raises(DataError, match=r"1 frame\(s\) contain NaN or Inf values \(frame 5\)"):
        io.load(path, stream=True)


def test_negative_counts_warned_when_a_streamed_file_is_opened(tmp_path):
    exp = simulate.preset("small_farfield", seed=2)
    path = io.write_cxi(tmp_path / "neg.cxi", exp.measurement())
    with h5py.File(path, "r+") as f:
        f["entry_1/data_1/data"][9, 0, 0] = -4
    with pytest.warns(preprocess.NegativeCountsWarning, match="1 negative value"):
        ds = io.load(path, stream=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # reading the rows later says nothing more
        assert ds.data[9][0, 0] == 0


def test_stream_options(scan, tmp_path):
    assert io.load(scan, load_limit=1000).streamed            # "auto": larger than the limit
    assert not io.load(scan, load_limit="1G").streamed
    with pytest.raises(DataError, match="stream must be 'auto', true or false"):
        io.load(scan, stream="maybe")
    with pytest.raises(DataError, match="load_limit must be a number of bytes"):
        io.load(scan, load_limit="lots")
    npz = io.write_npz(tmp_path / "scan.npz", io.load(scan))
    with pytest.raises(DataError, match="read whole"):
        io.load(npz, stream=True)
    assert not io.load(npz, load_limit=1000).streamed          # "auto" loads what cannot be streamed


def test_read_plan_serves_the_planned_parts_from_blocks_read_ahead(scan):
    data = io.load(scan, stream=True).data
    reads = []
    inner = data._read
    data._read = lambda rows: (reads.append(rows.copy()), inner(rows))[1]
    parts = [np.array([4, 1]), np.array([7]), np.array([3, 30, 31]), np.array([2]), np.array([9, 10])]
    plan = patterns.ReadPlan(data, parts, nbytes=3 * 64 * 64 * 4)         # blocks of up to three rows
    assert [sum(len(p) for p in b) for b in plan.blocks] == [3, 3, 3]
    held = io.load(scan).data
    for part in parts[:3]:
        np.testing.assert_array_equal(plan.take(part), held[part])
    assert plan.take(np.array([5])) is None                 # not the next part: the caller reads it
    for part in parts[3:]:
        np.testing.assert_array_equal(plan.take(part), held[part])
    assert plan.take(np.array([2])) is None
    assert (plan.served, plan.missed) == (5, 2)
    assert len(reads) == 3                                  # one read per block, each the block's rows
    np.testing.assert_array_equal(reads[1], [3, 30, 31])


CASES = [("gradient", "full", True), ("gradient", 16, True), ("gradient", 8, False), ("rpie", None, False),
         ("mpie", 4, False)]


@pytest.mark.parametrize("engine,batch,in_parts", CASES)
def test_engines_on_streamed_data_match_loaded_data(scan, monkeypatch, engine, batch, in_parts):
    """Same reconstruction (positions, background, scale, a loss switch); a step in parts of 5 rows sums to
    rounding; every read of an epoch comes from its plan."""
    if in_parts:
        monkeypatch.setattr(budget, "STREAM_PART_BYTES", 5 * 64 * 64 * 4)
        monkeypatch.setattr(budget, "READ_AHEAD_BYTES", 12 * 64 * 64 * 4)
    results = {}
    for stream in (False, True):
        cfg = Config(epochs=3, backend="cpu", engine=engine, init_probe="data", probe=Group(enabled=True), batch=batch,
                     positions=Group(enabled=True, start_epoch=1), seed=3)
        if engine == "gradient":
            cfg.loss = [[0, "gaussian"], [2, "poisson"]]
            cfg.background, cfg.scale = Group(enabled=True), Group(enabled=True)
        rec = engines.create(io.load(scan, stream=stream), cfg)
        results[stream] = rec.run()
    held, streamed = results[False], results[True]
    if in_parts:
        np.testing.assert_allclose(streamed.object, held.object, rtol=0, atol=1e-5 * np.abs(held.object).max())
        np.testing.assert_allclose(streamed.positions, held.positions, rtol=0, atol=1e-5)
        np.testing.assert_allclose([h["loss"] for h in streamed.history], [h["loss"] for h in held.history], rtol=1e-6)
    else:
        np.testing.assert_array_equal(streamed.object, held.object)
        np.testing.assert_array_equal(streamed.probe, held.probe)
        np.testing.assert_array_equal(streamed.positions, held.positions)
        assert [h["loss"] for h in streamed.history] == [h["loss"] for h in held.history]
    assert rec.last_reads.missed == 0 and rec.last_reads.served >= 49 / max(1, 5 if in_parts else 49)


def test_a_streamed_step_never_holds_more_than_a_part(scan, monkeypatch):
    """A full batch on streamed data evaluates parts of at most STREAM_PART_BYTES of rows."""
    monkeypatch.setattr(budget, "STREAM_PART_BYTES", 5 * 64 * 64 * 4)
    rec = engines.create(io.load(scan, stream=True), Config(epochs=1, backend="cpu", probe=Group(enabled=True),
                                                            init_probe="data"))
    sizes = []
    evaluate = rec.evaluate
    rec.evaluate = lambda idx, *a, **k: (sizes.append(len(idx)), evaluate(idx, *a, **k))[1]
    rec.run()
    assert sizes == [5] * 9 + [4]


@gpu
def test_streamed_data_on_the_gpu_match_loaded_data(scan, monkeypatch):
    """On cuda (a real GPU, or the emulated one in CI) only a part's rows go to the device, and the run is the
    loaded run's to the spread of the GPU's atomics."""
    monkeypatch.setattr(budget, "STREAM_PART_BYTES", 7 * 64 * 64 * 4)
    results = {}
    for stream in (False, True):
        cfg = Config(epochs=2, backend="cuda", init_probe="data", probe=Group(enabled=True), batch=16)
        results[stream] = engines.create(io.load(scan, stream=stream), cfg).run()
    held, streamed = results[False], results[True]
    np.testing.assert_allclose(streamed.object, held.object, rtol=0, atol=1e-4 * np.abs(held.object).max())


def test_a_streamed_dataset_is_written_as_cxi_in_slabs(scan, tmp_path, monkeypatch):
    """write_cxi of streamed patterns with a per-frame (saturation) mask writes the loaded dataset's file without
    holding the data: a TIFF stack converted to CXI to stream it needs no memory for it."""
    import tracemalloc

    peak = float(io.load(scan).data.max())
    held = io.load(scan, stream=False, saturation=0.5 * peak)
    streamed = io.load(scan, stream=True, saturation=0.5 * peak)
    io.write_cxi(tmp_path / "held.cxi", held)
    from cuptycho.io import cxi

    monkeypatch.setattr(cxi, "WRITE_SLAB_BYTES", 5 * 64 * 64 * 4)      # slabs of 5 of the 49 frames
    tracemalloc.start()
    try:
        io.write_cxi(tmp_path / "streamed.cxi", streamed)
        written_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    a, b = io.load(tmp_path / "held.cxi"), io.load(tmp_path / "streamed.cxi")
    np.testing.assert_array_equal(b.data, a.data)
    np.testing.assert_array_equal(b.mask, a.mask)
    assert a.mask.ndim == 3 and 0 < a.mask.mean() < 1
    assert written_peak < 0.5 * held.data.nbytes, (written_peak, held.data.nbytes)
