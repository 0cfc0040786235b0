"""[position_search]: positions too far off for the gradient are found on a grid of shifts, and
positions that are right stay where they are."""
from __future__ import annotations

import numpy as np
import pytest

from cuptycho import Config, Group, create, position_search, simulate

OUTLIERS = [3, 17, 30, 41]


def scan_with_outliers(jitter=1.0, seed=0):
    """The small far-field simulation with the true probe, every position off by `jitter` px RMS and
    four of them 10-13 px off (towards the scan's centre, so their patches stay on the object)."""
    exp = simulate.preset("small_farfield", seed=1)
    ds = exp.dataset()
    true = np.asarray(exp.positions, dtype=np.float64)
    rng = np.random.default_rng(seed)
    nominal = true + rng.normal(0, jitter, true.shape)
    centre = true.mean(axis=0)
    nominal[OUTLIERS] += np.sign(centre - true[OUTLIERS]) * rng.uniform(6, 9, (len(OUTLIERS), 2))
    ds = ds.replace(positions=np.clip(nominal, 0, true.max(axis=0) + 2), probe=exp.probe)
    ds.truth = {**ds.truth, "positions": true}
    return ds, exp


def errors(rec):
    """Per-position errors against the truth, the global offset (invisible to the data) removed."""
    d = rec.positions() - rec.ds.truth["positions"]
    return np.linalg.norm(d - np.median(d, axis=0), axis=1)


def test_offsets_are_a_square_grid():
    grid = position_search.offsets(2.0, 1.0)
    assert grid.shape == (25, 2) and np.abs(grid).max() == 2.0 and [0.0, 0.0] in grid.tolist()


def test_with_the_true_object_the_outliers_are_found_and_the_rest_stay():
    ds, exp = scan_with_outliers(jitter=0.0)
    rec = create(ds, Config(backend="cpu", fit_probe_scale=False))
    rec.obj = np.asarray(exp.obj, dtype=rec.dtype).copy()
    before = errors(rec)
    assert before[OUTLIERS].min() > 9
    found = position_search.search(rec, radius=14.0, step=1.0, min_gain=0.1, loss="gaussian")
    after = errors(rec)
    assert found["moved"] == len(OUTLIERS)
    assert after[OUTLIERS].max() < 0.7                     # the grid's step: the gradient does the rest
    others = np.setdiff1d(np.arange(ds.n_patterns), OUTLIERS)
    np.testing.assert_array_equal(after[others], before[others])


def test_with_misfit_only_the_positions_that_stand_out_are_searched():
    ds, exp = scan_with_outliers(jitter=0.0)
    rec = create(ds, Config(backend="cpu", fit_probe_scale=False))
    rec.obj = np.asarray(exp.obj, dtype=rec.dtype).copy()
    found = position_search.search(rec, radius=14.0, step=1.0, min_gain=0.1, loss="gaussian", misfit=3.0)
    assert found["moved"] == len(OUTLIERS) and len(OUTLIERS) <= found["searched"] < ds.n_patterns // 4
    assert errors(rec)[OUTLIERS].max() < 0.7


@pytest.mark.parametrize("search", [None, {"start_epoch": 20, "every": 20, "radius": 12.0, "step": 0.5}],
                         ids=["gradient only", "with the search"])
def test_outliers_stuck_for_the_gradient_are_recovered_by_the_search(search):
    ds, _ = scan_with_outliers()
    cfg = Config(epochs=100, batch=8, backend="cpu", object=Group(lr=0.1),
                 positions=Group(enabled=True, lr=0.05, start_epoch=10), position_search=search, metrics_every=99)
    rec = create(ds, cfg)
    result = rec.run()
    err = errors(rec)
    searches = [e for e in result.events if e["event"] == "position_search"]
    if search is None:                                    # the failure the search exists for
        assert err[OUTLIERS].max() > 4 and not searches
    else:
        assert err[OUTLIERS].max() < 0.5 and np.sqrt(np.mean(err ** 2)) < 0.4
        assert [e["epoch"] for e in searches] == [20, 40, 60, 80] and searches[0]["moved"] >= len(OUTLIERS)
        assert result.history[-1]["object_correlation"] > 0.97


def test_a_search_without_position_refinement_is_refused():
    """Was accepted and silently never run: the search runs only while the positions are refined."""
    ds, _ = scan_with_outliers()
    with pytest.raises(ValueError, match=r"position_search moves the positions, but \[positions\] enabled = false"):
        create(ds, Config(backend="cpu", position_search={"radius": 8.0}))


def noise_pattern(ds, j, seed=0):
    """`ds` with pattern j replaced by Poisson noise of the same mean: a pattern that fits nowhere."""
    data = np.array(ds.data, copy=True)
    data[j] = np.random.default_rng(seed).poisson(data[j].mean(), data[j].shape)
    return ds.replace(data=data)


def test_a_pattern_that_fits_nowhere_is_left_out_of_the_loss():
    ds, exp = scan_with_outliers(jitter=0.0)
    ds = noise_pattern(ds, 10)
    rec = create(ds, Config(backend="cpu", fit_probe_scale=False))
    rec.obj = np.asarray(exp.obj, dtype=rec.dtype).copy()
    found = position_search.search(rec, radius=14.0, step=1.0, min_gain=0.1, loss="gaussian", misfit=3.0,
                                   exclude=True)
    assert found["excluded_positions"] == [10] and rec.excluded.tolist() == [i == 10 for i in range(ds.n_patterns)]
    assert errors(rec)[OUTLIERS].max() < 0.7                 # the outliers are placed, not left out
    value, grads = rec.evaluate(np.array([10]), "gaussian")    # out of the loss: no value, no gradient
    assert value == 0 and not np.any(grads["object"]) and not np.any(grads["probe"])
    value, _ = rec.evaluate(np.array([9, 10, 11]), "gaussian")
    assert value > 0
    # a search that finds the pattern's place (here: its data restored) takes it back into the loss
    rec.data[10] = np.asarray(scan_with_outliers(jitter=0.0)[0].data[10], dtype=rec.data.dtype)
    found = position_search.search(rec, radius=14.0, step=1.0, min_gain=0.1, loss="gaussian", misfit=3.0,
                                   exclude=True)
    assert found["excluded"] == 0 and not rec.excluded.any()


def test_without_exclude_nothing_is_left_out():
    ds, exp = scan_with_outliers(jitter=0.0)
    rec = create(noise_pattern(ds, 10), Config(backend="cpu", fit_probe_scale=False))
    rec.obj = np.asarray(exp.obj, dtype=rec.dtype).copy()
    found = position_search.search(rec, radius=14.0, step=1.0, min_gain=0.1, loss="gaussian", misfit=3.0)
    assert found["excluded"] == 0 and not rec.excluded.any()


def test_the_search_is_centred_on_the_scan_model_so_a_position_cannot_wander_off():
    """A position whose correction walked 30 px away is looked for around where the scan puts it."""
    ds, exp = scan_with_outliers(jitter=0.0)
    rec = create(ds, Config(backend="cpu", fit_probe_scale=False))
    rec.obj = np.asarray(exp.obj, dtype=rec.dtype).copy()
    rec.correction[OUTLIERS] = 0.0
    rec.correction[20] = [30.0, 0.0] if rec.nominal[20, 0] < 60 else [-30.0, 0.0]
    rec._clip_positions()
    assert errors(rec)[20] > 20
    position_search.search(rec, radius=14.0, step=1.0, min_gain=0.1, loss="gaussian", misfit=3.0)
    assert errors(rec)[20] < 0.7 and errors(rec)[OUTLIERS].max() < 0.7


def test_a_run_ending_with_positions_left_out_says_so(tmp_path):
    from cuptycho import io

    ds, _ = scan_with_outliers()
    ds = noise_pattern(ds, 10)
    cfg = Config(epochs=30, batch=8, backend="cpu", object=Group(lr=0.1), metrics_every=99,
                 positions=Group(enabled=True, lr=0.05, start_epoch=5), position_search={"start_epoch": 10})
    rec = create(ds, cfg)
    with pytest.warns(UserWarning, match=r"1 of 49 positions ended left out of the loss: .*\(positions 10;"):
        result = rec.run()
    assert rec.run().events == result.events                 # run() again on the finished run: said once
    assert result.excluded_positions.tolist() == [10]
    assert [e for e in result.events if e["event"] == "positions_excluded"] == \
        [{"epoch": 29, "event": "positions_excluded", "count": 1, "positions": [10]}]
    path = tmp_path / "out.cxi"
    io.write_result(path, result, ds)
    assert io.read_result(path).excluded_positions.tolist() == [10]


def test_a_resumed_run_keeps_what_was_left_out(tmp_path):
    from cuptycho import checkpoint

    ds, _ = scan_with_outliers()
    ds = noise_pattern(ds, 10)
    cfg = dict(epochs=8, batch=8, backend="cpu", dtype="complex128", object=Group(lr=0.1), metrics_every=99, seed=2,
               positions=Group(enabled=True, lr=0.05, start_epoch=1), position_search={"start_epoch": 2, "every": 3})
    straight = create(ds, Config(**cfg)).run()
    first = create(ds, Config(**cfg))
    first.run(until=4)
    assert first.excluded[10]                              # the checkpoint holds a pattern left out
    path = tmp_path / "run.ckpt.npz"
    checkpoint.save(first.state_dict(), path)
    resumed = create(ds, Config(**cfg))
    resumed.load_state_dict(checkpoint.load(path))
    assert resumed.excluded.tolist() == first.excluded.tolist()
    result = resumed.run()
    np.testing.assert_allclose(result.loss, straight.loss, rtol=1e-9)
    np.testing.assert_allclose(result.positions, straight.positions, rtol=0, atol=1e-9)
    assert result.excluded_positions.tolist() == straight.excluded_positions.tolist()


def test_a_pie_engine_leaves_a_pattern_out_without_a_nan():
    """A left-out pattern reaches the PIE step with a zero mask: no update, so no shift (it was inf x 0)."""
    import warnings

    ds, _ = scan_with_outliers()
    ds = noise_pattern(ds, 10)
    rec = create(ds, Config(engine="epie", epochs=30, backend="cpu", probe=Group(enabled=False), metrics_every=99,
                            positions=Group(enabled=True, start_epoch=5), position_search={"start_epoch": 10}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = rec.run()
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert result.excluded_positions.tolist() == [10] and np.all(np.isfinite(result.positions))
