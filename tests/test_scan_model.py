"""The affine scan model ([scan]): positions = nominal + A (nominal - centre) + corrections, with A
refined by the chain rule through the position gradients; its gradient against central differences,
its recovery of a scaled and rotated scan, the split between A and the corrections, checkpoints and
the result file."""
from __future__ import annotations

import numpy as np
import pytest

from cuptycho import Config, Group, checkpoint, create, io, ops, simulate


def distorted(scale=1.02, degrees=1.0, seed=1):
    """The small far-field simulation whose stage reports a scan shrunk by `scale` and turned by
    `-degrees` about its centre: the truth is M (nominal - c) + c with M the scale and rotation."""
    exp = simulate.preset("small_farfield", seed=seed)
    true = np.asarray(exp.positions, dtype=np.float64)
    centre = true.mean(axis=0)
    th = np.deg2rad(degrees)
    m = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    nominal = centre + (true - centre) @ np.linalg.inv(m).T
    ds = exp.dataset().replace(positions=nominal, probe=exp.probe)
    ds.truth = {**ds.truth, "positions": true}
    return ds, m


def test_the_affine_gradient_matches_central_differences():
    ds, _ = distorted()
    rec = create(ds, Config(backend="numpy", dtype="complex128", scan=Group(enabled=True), fit_probe_scale=False))
    rng = np.random.default_rng(0)
    rec.obj = rec.obj * np.exp(0.3j * rng.standard_normal(rec.obj.shape))       # an object with structure
    rec.affine[...] = [[0.01, -0.004], [0.006, -0.008]]
    idx = np.arange(ds.n_patterns)

    def loss():
        pos = rec.batch_positions(idx)
        data, mask = rec.batch_data(idx)
        return ops.evaluate("numpy", rec.obj, rec.probe, pos, data, mask, loss="gaussian",
                            wanted=frozenset(), **rec.model_kwargs())[0]

    data, mask = rec.batch_data(idx)
    _, grads = ops.evaluate("numpy", rec.obj, rec.probe, rec.batch_positions(idx), data, mask, loss="gaussian",
                            wanted=frozenset({"positions"}), **rec.model_kwargs())
    analytic = grads["positions"].T @ (rec.nominal - rec.scan_centre)
    h, numeric = 1e-6, np.zeros((2, 2))
    for a in range(2):
        for b in range(2):
            rec.affine[a, b] += h
            up = loss()
            rec.affine[a, b] -= 2 * h
            down = loss()
            rec.affine[a, b] += h
            numeric[a, b] = (up - down) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7 * np.abs(numeric).max())


def run(positions_from=None):
    """60 epochs from a 3% / 2 degree distorted scan: the scan model from epoch 5, and the positions'
    own corrections from `positions_from` (None: not refined)."""
    ds, m = distorted(scale=1.03, degrees=2.0)
    cfg = Config(epochs=60, batch=8, backend="cpu", object=Group(lr=0.1),
                 scan=Group(enabled=True, lr=2e-3, start_epoch=5),
                 positions=Group(enabled=positions_from is not None, lr=0.02, start_epoch=positions_from or 0),
                 metrics_every=59)
    rec = create(ds, cfg)
    return rec, rec.run(), m, ds


def initial_error(ds):
    return np.sqrt(np.mean(np.sum((ds.positions - ds.truth["positions"]) ** 2, axis=1)))


def test_a_scaled_and_rotated_scan_is_recovered_by_the_scan_model():
    rec, result, m, ds = run()
    assert initial_error(ds) > 0.5                         # the setup: a distortion worth refining
    np.testing.assert_allclose(result.scan_matrix, m, atol=2e-3)
    assert result.history[-1]["position_error_rms"] < 0.05
    assert result.history[-1]["object_correlation"] > 0.97


@pytest.fixture(scope="module")
def recovered():
    # the scan model first, the positions' local residuals once the object has structure: started
    # together (epoch 5) the corrections lock into a wrong minimum that holds A back (0.5 px left)
    return run(positions_from=30)


def test_with_local_corrections_on_top_the_scan_model_still_holds(recovered):
    rec, result, m, ds = recovered
    np.testing.assert_allclose(result.scan_matrix, m, atol=3e-3)
    assert result.history[-1]["position_error_rms"] < 0.2 * initial_error(ds)


def test_the_corrections_keep_only_what_is_local(recovered):
    rec, _, _, _ = recovered
    d = rec.nominal - rec.scan_centre
    fit, *_ = np.linalg.lstsq(d, rec.correction - rec.correction.mean(axis=0), rcond=None)
    assert np.abs(fit).max() < 1e-9                       # their affine part moved into A after the epoch


def test_the_scan_model_is_checkpointed_and_written(recovered, tmp_path):
    rec, result, _, ds = recovered
    state = rec.state_dict()
    path = tmp_path / "run.ckpt.npz"
    checkpoint.save(state, path)
    other = create(ds, rec.cfg)
    other.load_state_dict(checkpoint.load(path))
    np.testing.assert_array_equal(other.affine, rec.affine)
    np.testing.assert_array_equal(other.positions(), rec.positions())
    io.write_result(tmp_path / "r.cxi", result, ds)
    np.testing.assert_array_equal(io.read_result(tmp_path / "r.cxi").scan_matrix, result.scan_matrix)


def test_without_scan_nothing_changes_in_the_state():
    ds, _ = distorted()
    rec = create(ds, Config(epochs=1, backend="cpu"))
    rec.run()
    assert "affine" not in rec.state_dict()["arrays"] and rec.result().scan_matrix is None


def test_the_pie_engines_refuse_the_scan_model():
    ds, _ = distorted()
    with pytest.raises(ValueError, match="scan .* needs engine = 'gradient'"):
        create(ds, Config(engine="epie", scan=Group(enabled=True)))


def test_absorbing_the_affine_part_ignores_outliers():
    """Positions 15-40 px off pulled a plain least-squares fit of the corrections' affine part."""
    ds, _ = distorted()
    rec = create(ds, Config(backend="cpu", scan=Group(enabled=True)))
    d = rec.nominal - rec.scan_centre
    b = np.array([[0.02, -0.017], [0.017, 0.02]])
    rng = np.random.default_rng(3)
    rec.correction[...] = d @ b.T + rng.normal(0, 0.1, d.shape)
    outliers = rng.choice(len(d), 5, replace=False)
    rec.correction[outliers] += rng.choice([-1, 1], (5, 2)) * rng.uniform(15, 40, (5, 2))
    before = rec.positions()
    plain = np.linalg.lstsq(d, rec.correction - rec.correction.mean(axis=0), rcond=None)[0].T
    assert np.abs(plain - b).max() > 0.02                          # what the outliers do to a plain fit
    rec.absorb_affine()
    np.testing.assert_allclose(rec.affine, b, atol=5e-3)            # 0.1 px noise over a 35 px scan
    np.testing.assert_allclose(rec.positions(), before, atol=1e-9)
    assert np.linalg.norm(rec.correction[outliers], axis=1).min() > 10    # outliers stay in their corrections


def test_max_scan_scale_bounds_the_scale_and_leaves_the_rotation():
    ds, _ = distorted()
    th = np.deg2rad(10.0)
    turn = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    rec = create(ds, Config(backend="cpu", scan=Group(enabled=True), max_scan_scale=0.05))
    rec.affine = 0.8 * turn - np.eye(2)                    # a scan shrunk by 20 % and turned by 10 degrees
    before = rec.positions()
    rec.absorb_affine()                                    # corrections are zero: only the bound acts
    np.testing.assert_allclose(np.eye(2) + rec.affine, 0.95 * turn, atol=1e-12)
    centre = rec.scan_centre
    np.testing.assert_allclose(rec.positions() - centre, (before - centre) * 0.95 / 0.8, atol=1e-9)  # they move
    free = create(ds, Config(backend="cpu", scan=Group(enabled=True)))                # the default: unbounded
    free.affine = 0.8 * turn - np.eye(2)
    free.absorb_affine()
    np.testing.assert_allclose(np.eye(2) + free.affine, 0.8 * turn, atol=1e-12)
