"""Refinement of the focus-to-sample distance z1 ([focus], cuptycho.focus): its gradient through the effective
distance, the sample pixel size and the scan's pixel scale; recovery from 30 % off; the loss scan; state."""
from __future__ import annotations

import numpy as np
import pytest

from checks import resumed_through_a_checkpoint

from cuptycho import Config, Group, create, io, reconstruct, simulate
from cuptycho.dataset import Dataset

WAVELENGTH, Z2, DETECTOR_PIXEL, Z1 = 1e-10, 1.0, 50e-6, 5e-3        # magnification 201, sample pixels 249 nm


def experiment():
    """A divergent-beam near-field scan simulated in its parallel-beam equivalent (z_eff, p / M)."""
    m = (Z1 + Z2) / Z1
    return simulate.simulate(shape=(64, 64), probe="images", probe_options={"magnitude": "gravel", "phase": "grass",
                                                                            "amplitude_range": (0.2, 1.0)},
                             scan="fermat", scan_size=49, step=5.0, propagator="angular_spectrum",
                             wavelength=WAVELENGTH, z=Z2 / m, pixel_size=DETECTOR_PIXEL / m, photons=1e7, seed=0)


def dataset(exp, focus_factor):
    """What a measurement records (stage positions in metres, detector distance and pixel) with a focus
    distance `focus_factor` x the true one; the true probe as the guess."""
    m = (Z1 + Z2) / Z1
    return Dataset.from_measurement(exp.data, detector_pixel_size=DETECTOR_PIXEL, detector_distance=Z2,
                                    wavelength=WAVELENGTH, geometry_kind="nearfield", focus_distance=Z1 * focus_factor,
                                    positions_m=exp.positions * DETECTOR_PIXEL / m, propagator="angular_spectrum",
                                    probe=exp.probe, truth={"focus_distance": Z1})


def config(**kw):
    base = dict(epochs=100, batch=8, backend="cpu", object=Group(lr=0.05), focus=Group(enabled=True),
                fit_probe_scale=False, metrics_every=10, seed=0)
    return Config(**{**base, **kw})


@pytest.fixture(scope="module")
def exp():
    return experiment()


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_the_focus_gradient_matches_finite_differences(exp, backend):
    """dL/d(z1 / z1_given) through z_eff, the pixel size and the scan scale (with a [scan] affine in place),
    against a central difference of the whole-batch loss."""
    rec = create(dataset(exp, 1.1), config(dtype="complex128", backend=backend, scan=Group(enabled=True)))
    rec.affine[:] = [[0.01, -0.02], [0.015, 0.005]]
    rec.obj = rec.obj * np.exp(0.3j * np.random.default_rng(1).standard_normal(rec.obj.shape))
    idx = np.arange(rec.ds.n_patterns)

    def loss(rel):
        rec.focus_rel[:] = rel
        return rec.evaluate(idx, "gaussian", wanted=frozenset({"object", "probe"}))[0]

    rec.focus_rel[:] = 1.03
    _, grads = rec.evaluate(idx, "gaussian", wanted=frozenset({"object", "probe", "z", "positions"}))
    analytic = rec.focus_gradient(grads, idx)
    h = 1e-6
    numeric = (loss(1.03 + h) - loss(1.03 - h)) / (2 * h)
    assert abs(numeric - analytic) <= 1e-6 * abs(numeric), (numeric, analytic)


@pytest.mark.parametrize("factor", [0.7, 1.3])
def test_a_focus_distance_30_percent_off_is_recovered(exp, factor):
    """Acceptance: the simulated z1 from 0.7x and 1.3x within 0.5 % (measured 0.02-0.2 % after 100 epochs)."""
    with pytest.warns(UserWarning, match="the data favour a focus-to-sample distance of 0.00499"):
        result = reconstruct(dataset(exp, factor), config())
    assert abs(result.focus_distance / Z1 - 1) < 0.005, result.focus_distance
    assert abs(result.history[-1]["focus_error"]) < 0.005
    m = (Z1 + Z2) / Z1
    np.testing.assert_allclose(result.pixel_size, DETECTOR_PIXEL / m, rtol=0.006)
    assert result.z == pytest.approx(Z2 / m, rel=0.006)
    assert any(e["event"] == "focus_distance" for e in result.events)     # it moved far: said
    padded = [e for e in result.events if e["event"] == "object_padded"][0]["pixels"]
    assert result.object.shape[1:] == tuple(n + 2 * p for n, p in zip(dataset(exp, factor).obj_shape, padded))


def test_the_focus_search_lands_in_the_right_basin(exp):
    """From 0.6x, with the gradient held back until epoch 5, the loss scan alone must find the basin."""
    ds = dataset(exp, 0.6)
    rec = create(ds, config(epochs=1, focus=Group(enabled=True, start_epoch=5),
                            focus_search={"low": 1.0, "high": 2.5, "points": 10, "epochs": 5}))
    with pytest.warns(UserWarning, match="the data favour"):
        rec.run()
    event = [e for e in rec.events if e["event"] == "focus_search"][0]
    assert len(event["loss_per_pixel"]) == 10 and abs(event["chosen"] / Z1 - 1) < 0.07, event["chosen"]
    assert len(rec.history) == 1 and rec.timings["focus_search"] > 0       # the scan left no epochs behind


def test_resumed_focus_run_equals_an_uninterrupted_one_and_the_file_has_it(exp, tmp_path):
    ds = dataset(exp, 1.2)
    cfg = dict(epochs=6, dtype="complex128")
    with pytest.warns(UserWarning, match="the data favour"):
        straight = reconstruct(ds, config(**cfg))
    with pytest.warns(UserWarning, match="the data favour"):
        result = resumed_through_a_checkpoint(ds, config(**cfg), 3, tmp_path / "run.ckpt.npz")
    assert result.focus_distance == straight.focus_distance
    np.testing.assert_array_equal(result.object, straight.object)
    io.write_result(tmp_path / "r.cxi", result, ds)
    back = io.read_result(tmp_path / "r.cxi")
    assert back.focus_distance == result.focus_distance and back.pixel_size == pytest.approx(result.pixel_size)


def test_focus_is_refused_where_it_has_no_meaning(exp):
    ds = dataset(exp, 1.0)
    with pytest.raises(ValueError, match=r"\[focus\] refines z1 .* \[z\] refines the effective distance alone"):
        create(ds, config(z=Group(enabled=True)))
    with pytest.raises(ValueError, match="focus refinement needs engine = 'gradient'"):
        create(ds, Config(engine="epie", focus=Group(enabled=True)))
    with pytest.raises(ValueError, match="focus_search scans the focus distance for \\[focus\\]"):
        create(ds, Config(focus_search={}))
    far = simulate.preset("small_farfield").dataset()
    far.probe = np.ones((64, 64), np.complex64)
    with pytest.raises(ValueError, match="divergent-beam near-field geometry"):
        create(far, Config(focus=Group(enabled=True)))
    plain = create(ds, Config(epochs=1, backend="cpu"))
    assert "focus_rel" not in plain.state_dict()["arrays"] and plain.result().focus_distance is None
