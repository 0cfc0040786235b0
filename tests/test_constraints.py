"""Per-epoch projections: each gauge fix leaves exit waves / intensities unchanged; bounds; bad input."""
from __future__ import annotations

import numpy as np
import pytest
from checks import random_complex
from conftest import gpu

import cuptycho
from cuptycho import constraints, reference, simulate

DTYPES = [np.complex64, np.complex128]
TOL = {np.dtype(np.complex64): 1e-5, np.dtype(np.complex128): 1e-12}


def smooth_complex(rng, shape, width=0.05):
    """Periodic random complex field, Gaussian low-pass (width in cycles/pixel)."""
    z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[-2])[:, None]
    fx = np.fft.fftfreq(shape[-1])[None, :]
    out = np.fft.ifft2(np.fft.fft2(z) * np.exp(-(fy**2 + fx**2) / (2 * width**2)))
    return out / np.abs(out).max()


def gaussian_probe(shape, centre, sigma, curvature=0.0):
    y = np.arange(shape[0])[:, None] - centre[0]
    x = np.arange(shape[1])[None, :] - centre[1]
    r2 = y**2 + x**2
    return np.exp(-r2 / (2 * sigma**2) + 1j * curvature * r2 + 0.3j * x)


def exit_waves(obj, probe, positions):
    """psi[j, m, k] = probe[k] * o[j, m] (reference sampling), (J, Mo, K, Ny, Nx)."""
    obj = obj if obj.ndim == 3 else obj[None]
    probe = probe if probe.ndim == 3 else probe[None]
    return reference.exitwave_fwd(obj, probe, positions)


def assert_close_scaled(actual, expected, tol):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


def centre_of_mass(probe):
    i = (np.abs(probe.astype(np.complex128)) ** 2).reshape(-1, *probe.shape[-2:]).sum(axis=0)
    y, x = np.indices(i.shape)
    return np.array([(i * y).sum(), (i * x).sum()]) / i.sum()


# --------------------------------------------------------------------------- orthogonalize_modes

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 24, 20), (3, 17, 31), (1, 16, 16)])
def test_orthogonalize_modes_invariants(dtype, shape):
    rng = np.random.default_rng(shape)
    probe = random_complex(rng, shape, dtype) * np.array([0.3, 2.0, 1.0, 0.7][:shape[0]])[:, None, None]
    tol = TOL[np.dtype(dtype)]
    out = constraints.orthogonalize_modes(probe)
    assert out.shape == probe.shape and out.dtype == probe.dtype
    o = out.astype(np.complex128).reshape(shape[0], -1)
    p = probe.astype(np.complex128).reshape(shape[0], -1)
    # mutually orthogonal (scale-free)
    norms = np.linalg.norm(o, axis=1)
    gram = np.abs(o.conj() @ o.T) / np.outer(norms, norms)
    np.testing.assert_array_less(gram[~np.eye(shape[0], dtype=bool)], tol)
    # sorted by power, descending
    power = norms**2
    assert np.all(np.diff(power) <= 0)
    # incoherent intensity preserved pixel by pixel, and with it the total power
    inc_in, inc_out = (np.abs(p) ** 2).sum(0), (np.abs(o) ** 2).sum(0)
    assert_close_scaled(inc_out, inc_in, 10 * tol)
    assert abs(power.sum() - (np.abs(p) ** 2).sum()) <= 10 * tol * power.sum()


def test_orthogonalize_modes_keeps_modelled_intensity_and_is_idempotent():
    rng = np.random.default_rng(3)
    probe = random_complex(rng, (3, 16, 16)) * gaussian_probe((16, 16), (8, 8), 3.0)
    obj = 1.0 + 0.3 * random_complex(rng, (1, 30, 30))
    positions = rng.uniform(0, 14, (5, 2))
    out = constraints.orthogonalize_modes(probe)
    # a unitary mix of the modes: every far-field intensity is unchanged
    before = cuptycho.forward(obj, probe, positions, backend="numpy")
    after = cuptycho.forward(obj, out, positions, backend="numpy")
    assert_close_scaled(after, before, 1e-12)
    # idempotent: orthogonal, sorted modes come back unchanged (phases included)
    assert_close_scaled(constraints.orthogonalize_modes(out), out, 1e-12)
    # so are the orthogonal modes of the simulator, and a single mode
    modes = simulate.probe_modes(gaussian_probe((16, 16), (8, 8), 3.0), 4)
    assert_close_scaled(constraints.orthogonalize_modes(modes), modes, 1e-12)
    assert_close_scaled(constraints.orthogonalize_modes(probe[0]), probe[0], 1e-12)
    assert constraints.orthogonalize_modes(probe[0]).shape == (16, 16)


def test_orthogonalize_modes_sorts_orthogonal_modes_and_keeps_zero_modes():
    modes = simulate.probe_modes(gaussian_probe((16, 16), (8, 8), 3.0), 3, power_fractions=[0.6, 0.3, 0.1])
    shuffled = modes[[2, 0, 1]] * np.exp(1j * np.array([0.4, -1.0, 2.0]))[:, None, None]
    out = constraints.orthogonalize_modes(shuffled)
    # the same modes, sorted; each up to a phase (mode k is aligned with input k, here orthogonal to it)
    overlap = np.abs(np.sum(np.conj(out) * modes, axis=(-2, -1)))
    np.testing.assert_allclose(overlap, np.sum(np.abs(modes) ** 2, axis=(-2, -1)), rtol=1e-12)
    # a zero mode stays zero (and finite); sorted last
    with_zero = np.concatenate([modes[:1], np.zeros((1, 16, 16), complex)])
    out = constraints.orthogonalize_modes(with_zero)
    assert np.all(np.isfinite(out))
    assert_close_scaled(out, with_zero, 1e-12)
    out = constraints.orthogonalize_modes(with_zero[::-1])
    assert_close_scaled(np.abs(out), np.abs(with_zero), 1e-12)


@pytest.mark.parametrize("bad", [np.ones((2, 8, 8)), np.ones(8, complex), np.ones((1, 2, 8, 8), complex),
                                 np.ones((0, 8, 8), complex)])
def test_orthogonalize_modes_bad_input(bad):
    with pytest.raises(ValueError, match="probe"):
        constraints.orthogonalize_modes(bad)


# --------------------------------------------------------------------------- recentre_probe

@pytest.mark.parametrize("dtype", DTYPES)
def test_recentre_probe_centres_and_keeps_farfield_intensities(dtype):
    rng = np.random.default_rng(7)
    # A probe ~0 at the window edges (> 8 sigma away) and band-limited fields: both periodic
    # shifts then act like true translations (see the docstring's caveats).
    shape = (64, 64)
    centre = (28.3, 35.6)
    probe = np.stack([gaussian_probe(shape, centre, 3.5, 0.01),
                      0.4 * gaussian_probe(shape, centre, 3.5) * (np.arange(64)[None, :] - centre[1]) / 3.5])
    obj = np.stack([np.exp(0.8j * smooth_complex(rng, (128, 128), 0.03).real)
                    * (0.8 + 0.2 * smooth_complex(rng, (128, 128), 0.03).real),
                    0.3 * smooth_complex(rng, (128, 128), 0.03)])
    probe, obj = probe.astype(dtype), obj.astype(dtype)
    # integer positions: the bilinear sampling is then an exact crop (see the docstring)
    positions = np.array([(y, x) for y in (10, 34, 58) for x in (12, 35, 60)], dtype=np.float64)
    new_probe, new_obj, shift = constraints.recentre_probe(probe, obj)
    assert new_probe.shape == probe.shape and new_probe.dtype == probe.dtype
    assert new_obj.shape == obj.shape and new_obj.dtype == obj.dtype
    assert shift.shape == (2,) and shift.dtype == np.float64
    com = centre_of_mass(probe)
    np.testing.assert_allclose(shift, np.array([32.0, 32.0]) - com, atol=1e-12)
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(centre_of_mass(new_probe), [32.0, 32.0], atol=max(1e-9, 10 * tol))
    before = cuptycho.forward(obj, probe, positions, backend="numpy")
    after = cuptycho.forward(new_obj, new_probe, positions, backend="numpy")
    # smooth, localised fields: the product of the shifted fields is the shifted exit wave to
    # the rounding of the precision (measured 7e-16 in complex128, 4e-7 in complex64)
    assert_close_scaled(after, before, 10 * tol)
    # the object moved by the same shift: each exit wave is a translated copy
    psi = exit_waves(obj.astype(np.complex128), probe.astype(np.complex128), positions)
    psi_new = exit_waves(new_obj.astype(np.complex128), new_probe.astype(np.complex128), positions)
    from cuptycho.registration import fourier_shift
    # (to ~1e-11 in complex128: the product of two shifted fields carries the spectral tails of
    # both, so it is the shifted product only to the size of those tails)
    assert_close_scaled(psi_new, fourier_shift(psi, shift), max(10 * tol, 1e-10))


def test_recentre_probe_centred_and_zero_probes():
    probe = gaussian_probe((33, 32), (16, 16), 3.0)[None]             # already centred (odd/even axes)
    obj = np.ones((40, 40), complex)
    p, o, s = constraints.recentre_probe(probe, obj)
    # 1e-9: on the even axis pixel 0 has no mirror partner about 16 (its weight is ~exp(-28))
    np.testing.assert_allclose(s, 0.0, atol=1e-9)
    assert_close_scaled(p, probe, 1e-12)
    assert o.shape == (40, 40)
    p, o, s = constraints.recentre_probe(np.zeros((2, 8, 8), complex), obj)
    assert np.all(s == 0) and np.all(p == 0) and np.all(o == obj)


def test_recentre_probe_bad_input():
    with pytest.raises(ValueError, match="probe"):
        constraints.recentre_probe(np.ones((8, 8)), np.ones((10, 10), complex))
    with pytest.raises(ValueError, match="obj"):
        constraints.recentre_probe(np.ones((8, 8), complex), np.ones(10, complex))


# --------------------------------------------------------------------------- zero_probe_phase

@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_probe_phase(dtype):
    rng = np.random.default_rng(11)
    base = gaussian_probe((16, 16), (8, 8), 3.0, 0.05)
    # the dominant mode is mode 1 here (not sorted): its phase is the one removed
    probe = np.stack([0.2 * random_complex(rng, (16, 16)), base * np.exp(2.5j), 0.1 * base]).astype(dtype)
    obj = (random_complex(rng, (2, 24, 24))).astype(dtype)
    new_probe, new_obj = constraints.zero_probe_phase(probe, obj)
    assert new_probe.dtype == probe.dtype and new_obj.dtype == obj.dtype
    assert new_probe.shape == probe.shape and new_obj.shape == obj.shape
    p1 = new_probe[1].astype(np.complex128)
    assert abs(np.angle(np.sum(p1 * np.abs(p1)))) < TOL[np.dtype(dtype)]
    positions = np.array([[0.0, 0.0], [3.0, 5.0], [8.0, 2.0]])
    tol = TOL[np.dtype(dtype)]
    assert_close_scaled(exit_waves(new_obj, new_probe, positions), exit_waves(obj, probe, positions), 10 * tol)
    # a probe whose phase is already zero is unchanged; 2-D arrays keep their shape
    p, o = constraints.zero_probe_phase(np.abs(base).astype(complex), obj[0].astype(complex))
    assert p.shape == (16, 16) and o.shape == (24, 24)
    assert_close_scaled(p, np.abs(base), 1e-15)


def test_zero_probe_phase_bad_input():
    with pytest.raises(ValueError, match="obj"):
        constraints.zero_probe_phase(np.ones((8, 8), complex), np.ones((10, 10)))


# --------------------------------------------------------------------------- renormalise

@pytest.mark.parametrize("dtype", DTYPES)
def test_renormalise(dtype):
    rng = np.random.default_rng(5)
    obj = (2.5 * random_complex(rng, (2, 30, 30))).astype(dtype)
    probe = random_complex(rng, (3, 12, 12)).astype(dtype)
    tol = TOL[np.dtype(dtype)]
    positions = np.array([[0.0, 0.0], [10.0, 17.0], [18.0, 4.0]])
    amp = np.sqrt((np.abs(obj.astype(np.complex128)) ** 2).sum(0))
    for weights in (None, rng.uniform(0, 1, (30, 30)) * (rng.uniform(size=(30, 30)) > 0.3)):
        w = np.ones((30, 30)) if weights is None else weights
        new_obj, new_probe, c = constraints.renormalise(obj, probe, weights)
        assert new_obj.dtype == obj.dtype and new_probe.dtype == probe.dtype
        np.testing.assert_allclose(float(c), (w * amp).sum() / w.sum(), rtol=1e-12)
        new_amp = np.sqrt((np.abs(new_obj.astype(np.complex128)) ** 2).sum(0))
        np.testing.assert_allclose((w * new_amp).sum() / w.sum(), 1.0, rtol=10 * tol)
        assert_close_scaled(exit_waves(new_obj, new_probe, positions), exit_waves(obj, probe, positions), 10 * tol)
    # a single mode: c is the mean of |O|; a zero object is left alone (c = 1)
    o, p, c = constraints.renormalise(obj[0], probe[0])
    assert o.shape == (30, 30) and p.shape == (12, 12)
    np.testing.assert_allclose(float(c), np.abs(obj[0].astype(np.complex128)).mean(), rtol=10 * tol)
    o, p, c = constraints.renormalise(np.zeros((5, 5), complex), probe[0])
    assert float(c) == 1.0 and np.all(p == probe[0])


@pytest.mark.parametrize("weights, match", [
    (np.ones((29, 30)), "shape"),
    (-np.ones((30, 30)), ">= 0"),
    (np.zeros((30, 30)), "positive sum"),
    (np.full((30, 30), np.nan), "finite"),
    (np.ones((30, 30), complex), "real"),
])
def test_renormalise_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        constraints.renormalise(np.ones((30, 30), complex), np.ones((4, 4), complex), weights)


# --------------------------------------------------------------------------- clamps

@pytest.mark.parametrize("dtype", DTYPES)
def test_clamp_phase(dtype):
    rng = np.random.default_rng(2)
    amp = rng.uniform(0.1, 2.0, (2, 20, 20))
    phase = rng.uniform(-np.pi, np.pi, (2, 20, 20))
    obj = (amp * np.exp(1j * phase)).astype(dtype)
    tol = TOL[np.dtype(dtype)]
    out = constraints.clamp_phase(obj, -0.5, 1.0)
    assert out.dtype == obj.dtype and out.shape == obj.shape
    got = np.angle(out)
    inside = (np.angle(obj) >= -0.5) & (np.angle(obj) <= 1.0)
    assert np.all(got >= -0.5 - 10 * tol) and np.all(got <= 1.0 + 10 * tol)
    np.testing.assert_allclose(got[~inside], np.where(np.angle(obj) < -0.5, -0.5, 1.0)[~inside], atol=10 * tol)
    assert np.array_equal(out[inside], obj[inside])                  # untouched pixels are exact
    np.testing.assert_allclose(np.abs(out), np.abs(obj), rtol=10 * tol)
    # one-sided bounds
    assert np.all(np.angle(constraints.clamp_phase(obj, None, 0.0)) <= 10 * tol)
    assert np.array_equal(constraints.clamp_phase(obj, None, None), obj)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clamp_amplitude(dtype):
    rng = np.random.default_rng(4)
    obj = (rng.uniform(0.0, 2.0, (20, 20)) * np.exp(1j * rng.uniform(-3, 3, (20, 20)))).astype(dtype)
    obj[0, 0] = 0
    tol = TOL[np.dtype(dtype)]
    out = constraints.clamp_amplitude(obj, 0.5, 1.0)
    assert out.dtype == obj.dtype and out.shape == obj.shape
    a = np.abs(obj)
    np.testing.assert_allclose(np.abs(out), np.clip(a, 0.5, 1.0), rtol=10 * tol)
    nonzero = a > 0
    np.testing.assert_allclose(np.angle(out[nonzero] / obj[nonzero]), 0.0, atol=10 * tol)   # phase kept
    inside = (a >= 0.5) & (a <= 1.0)
    assert np.array_equal(out[inside], obj[inside])
    assert out[0, 0] == 0.5                                           # a zero pixel gets phase 0
    assert np.all(np.abs(constraints.clamp_amplitude(obj, 0, 1)) <= 1 + 10 * tol)
    assert np.array_equal(constraints.clamp_amplitude(obj, 0.0, None), obj)


@pytest.mark.parametrize("func, low, high, match", [
    (constraints.clamp_phase, 1.0, 0.0, "low <= high"),
    (constraints.clamp_phase, np.nan, 0.0, "low <= high"),
    (constraints.clamp_phase, "a", 0.0, "real numbers"),
    (constraints.clamp_amplitude, 2.0, 1.0, "low <= high"),
    (constraints.clamp_amplitude, -0.1, 1.0, ">= 0"),
])
def test_clamp_bad_bounds(func, low, high, match):
    with pytest.raises(ValueError, match=match):
        func(np.ones((4, 4), complex), low, high)


@pytest.mark.parametrize("func", [constraints.clamp_phase, constraints.clamp_amplitude])
@pytest.mark.parametrize("bad", [np.ones((4, 4)), np.ones((4, 4), np.complex256) if hasattr(np, "complex256")
                                 else np.ones((4, 4), np.float16), np.ones((1, 1, 4, 4), complex)])
def test_clamp_bad_obj(func, bad):
    with pytest.raises(ValueError, match="obj"):
        func(bad, 0.0, 1.0)


# --------------------------------------------------------------------------- CuPy

@gpu
def test_cupy_matches_numpy():
    import cupy

    rng = np.random.default_rng(0)
    probe = (random_complex(rng, (3, 16, 16)) * gaussian_probe((16, 16), (6.2, 9.1), 3.0)).astype(np.complex64)
    obj = (1 + 0.2 * smooth_complex(rng, (2, 40, 40))).astype(np.complex64)
    weights = rng.uniform(0, 1, (40, 40))
    cases = [
        (constraints.orthogonalize_modes, (probe,)),
        (constraints.recentre_probe, (probe, obj)),
        (constraints.zero_probe_phase, (probe, obj)),
        (constraints.renormalise, (obj, probe, weights)),
        (constraints.clamp_phase, (obj, -0.1, 0.1)),
        (constraints.clamp_amplitude, (obj, 0.9, 1.0)),
    ]
    for func, args in cases:
        host = func(*args)
        dev = func(*(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args))
        host = host if isinstance(host, tuple) else (host,)
        dev = dev if isinstance(dev, tuple) else (dev,)
        for h, d in zip(host, dev):
            assert isinstance(d, cupy.ndarray), func.__name__
            assert d.dtype == np.asarray(h).dtype, func.__name__
            assert_close_scaled(d.get(), np.asarray(h), 1e-5)


def test_probe_support_keeps_the_centre_and_damps_the_corners():
    window = constraints.probe_window((64, 64), radius=0.9, width=0.1)
    assert window[32, 32] == 1.0 and window[32, 4] == 1.0           # within 0.9 of the half-width
    assert window[0, 0] < 1e-6                                      # a corner: r = 1.41
    probe = np.ones((2, 64, 64), np.complex64) * (1 + 1j)
    out = constraints.apply_probe_support(probe, 0.9)
    assert out.dtype == np.complex64 and out.shape == probe.shape
    np.testing.assert_array_equal(out[:, 32, 32], probe[:, 32, 32])
    with pytest.raises(ValueError, match="radius and width must be positive"):
        constraints.probe_window((8, 8), radius=0.0)


def test_the_engine_applies_the_probe_support_every_epoch():
    from cuptycho import Config, Group, create, simulate

    exp = simulate.preset("small_farfield", seed=1)
    ds = exp.dataset()
    rec = create(ds, Config(epochs=3, backend="cpu", init_probe="data", probe=Group(enabled=True),
                            constraints={"probe_support": 0.9}))
    rec.run()
    corner = np.abs(rec.probe[:, :4, :4]) ** 2
    assert corner.sum() < 1e-9 * (np.abs(rec.probe) ** 2).sum()


def test_the_probe_support_never_cuts_a_probe_that_is_not_refined():
    from cuptycho import Config, Group, create, simulate

    exp = simulate.preset("small_farfield", seed=1)
    ds = exp.dataset()
    ds.probe = exp.probe
    with pytest.raises(ValueError, match=r"probe_support cuts the probe each epoch, but \[probe\] enabled = false"):
        create(ds, Config(backend="cpu", constraints={"probe_support": 0.9}))
    rec = create(ds, Config(epochs=2, backend="cpu", probe=Group(enabled=True, start_epoch=5),
                            constraints={"probe_support": 0.9}))
    start = rec.probe.copy()
    rec.run()
    np.testing.assert_array_equal(rec.probe, start)            # not before the probe's group starts
