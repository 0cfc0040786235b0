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


@pytest.mark.parametrize("search", [None, {"start_epoch": 20, "every": 20, "radius": 12.0, "step": 1.0}],
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
