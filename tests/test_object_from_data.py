"""init_object = "data": the object's power and phase read from each far-field pattern's counts and centre
of mass (`initial.object_from_data`)."""
from __future__ import annotations

import numpy as np
import pytest

from cuptycho import Config, Group, engine, initial, metrics, simulate
from cuptycho.patch_means import PatchMeans


def smooth_object(shape=200):
    """A smooth phase bump of 3 rad with a milder second one, and an absorbing patch (transmission 0.7)."""
    yy, xx = np.mgrid[:shape, :shape] / shape
    phase = np.exp(-((yy - .5) ** 2 + (xx - .45) ** 2) / (2 * .15 ** 2)) + \
        .3 * np.exp(-((yy - .3) ** 2 + (xx - .7) ** 2) / (2 * .05 ** 2))
    amplitude = 1 - 0.3 * np.exp(-((yy - .6) ** 2 + (xx - .3) ** 2) / (2 * .08 ** 2))
    return amplitude, phase


@pytest.fixture(scope="module")
def smooth():
    amplitude, phase = smooth_object()
    return simulate.preset("small_farfield", seed=1, magnitude=amplitude, amplitude_range=(0.7, 1.0), phase=phase,
                           phase_range=(0, 3), scan_size=(9, 9), photons=None, dtype=np.complex128)


def without_plane(values, region):
    """Values over `region` less their least-squares plane: a scan-wide phase ramp is not in the moments
    (it is the probe's own tilt)."""
    ys, xs = np.nonzero(region)
    basis = np.column_stack([np.ones(len(ys)), ys, xs])
    coef, *_ = np.linalg.lstsq(basis, values[region], rcond=None)
    return values[region] - basis @ coef


def agreement(estimate, truth):
    """Correlation, and the least-squares factor that takes the truth to the estimate."""
    return float(np.corrcoef(estimate, truth)[0, 1]), float(estimate @ truth / (truth @ truth))


def test_patch_means_have_an_exact_adjoint():
    rng = np.random.default_rng(0)
    power = rng.random((12, 10))
    pos = rng.uniform(0, [28, 30], size=(17, 2))
    means = PatchMeans(pos, power, (40, 40))
    f, v = rng.standard_normal((40, 40)), rng.standard_normal(17)
    lhs, rhs = float(means(f) @ v), float(np.sum(f * means.adjoint(v)))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    # and S is the weighted patch mean at the rounded corners
    y, x = np.rint(pos[3]).astype(int)
    assert np.isclose(means(f)[3], np.sum(power * f[y:y + 12, x:x + 10]) / power.sum(), rtol=1e-12)
    g = rng.standard_normal((2, 40, 40))
    assert abs(np.sum(initial._diff(f) * g) - np.sum(f * initial._diff_adjoint(g))) <= 1e-12 * np.abs(g).sum()


def test_exact_slopes_integrate_to_the_phase(smooth):
    exp = smooth
    power = np.sum(np.abs(exp.probe) ** 2, axis=0)
    means = PatchMeans(exp.positions, power, exp.obj.shape[-2:])
    truth = np.angle(exp.obj[0])
    g = initial._diff(truth)
    phase = initial._least_squares(means, np.column_stack([means(g[0]), means(g[1])]), gradient=True, start=0.0)
    lit = metrics.illuminated(exp.probe, exp.positions, exp.obj.shape[-2:], 0.3)
    corr, factor = agreement(phase[lit] - phase[lit].mean(), truth[lit] - truth[lit].mean())
    assert corr > 0.998 and abs(factor - 1) < 0.01      # measured 0.9989, 1.0002 (the smoothing term)


@pytest.mark.parametrize("masked", [False, True])
def test_the_phase_and_power_of_a_smooth_object_are_read_from_the_data(smooth, masked):
    exp = smooth
    mask = None
    if masked:              # dead pixels and a dead column (a beam stop on the bright field would hide the slopes)
        mask = np.ones(exp.data.shape[-2:])
        mask[5:9, 40:44] = 0
        mask[:, 50] = 0
    obj = initial.object_from_data(exp.data, exp.positions, exp.probe, exp.obj.shape[-2:], mask=mask,
                                   dtype=np.complex128)
    assert obj.shape == (1, *exp.obj.shape[-2:]) and obj.dtype == np.complex128
    lit = metrics.illuminated(exp.probe, exp.positions, exp.obj.shape[-2:], 0.5)
    corr, factor = agreement(without_plane(np.angle(obj[0]), lit), without_plane(np.angle(exp.obj[0]), lit))
    assert corr > 0.97 and 0.8 < factor < 1.2, (corr, factor)
    power, truth = np.abs(obj[0]) ** 2, np.abs(exp.obj[0]) ** 2
    corr, _ = agreement(power[lit] - power[lit].mean(), truth[lit] - truth[lit].mean())
    assert corr > 0.97, corr
    assert np.all(np.isfinite(obj))


def test_the_engine_starts_from_it_and_gets_ahead_of_a_flat_start(smooth):
    exp = smooth
    ds = exp.dataset().replace(probe=exp.probe)
    base = dict(epochs=8, backend="cpu", dtype="complex128", batch=16, object=Group(lr=0.04), metrics_every=8)
    rec = engine.Reconstruction(ds, Config(init_object="data", fit_probe_scale=False, **base))
    direct = initial.object_from_data(ds.data, ds.positions, exp.probe, ds.obj_shape, dtype=np.complex128)
    np.testing.assert_array_equal(rec.obj, direct)
    flat = engine.Reconstruction(ds, Config(**base)).run().history[-1]["object_correlation"]
    ours = rec.run().history[-1]["object_correlation"]
    assert 1 - ours < 0.5 * (1 - flat), (ours, flat)    # measured 0.9935 against 0.9814


def test_it_is_refused_in_the_near_field_and_for_bad_input():
    exp = simulate.preset("small_nearfield")
    with pytest.raises(ValueError, match="init_object = 'data' reads the phase slope .* far field only"):
        engine.Reconstruction(exp.dataset().replace(probe=exp.probe), Config(init_object="data", epochs=0))
    with pytest.raises(ValueError, match="init_object"):
        Config(init_object="patterson").check()
    data, pos, probe = np.ones((4, 8, 8)), np.zeros((4, 2)), np.ones((8, 8), complex)
    with pytest.raises(ValueError, match="every pattern is zero"):
        initial.object_from_data(0 * data, pos, probe, (12, 12))
    with pytest.raises(ValueError, match="3 positions for 4 patterns"):
        initial.object_from_data(data, pos[:3], probe, (12, 12))
    with pytest.raises(ValueError, match="probe must be a non-zero"):
        initial.object_from_data(data, pos, np.ones((6, 6), complex), (12, 12))
    with pytest.raises(ValueError, match="puts the patch outside the object"):
        initial.object_from_data(data, pos + 5, probe, (12, 12))
