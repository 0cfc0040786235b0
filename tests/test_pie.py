"""The classical engines (cuptycho.pie): textbook agreement, mechanisms and convergence on simulated data."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from conftest import ENGINE_BACKEND, to_host
from cuptycho import pie, reference, simulate
from cuptycho import Config, Group, create, reconstruct
from cuptycho.pie import PIEReconstruction


@pytest.fixture(scope="module")
def farfield():
    exp = simulate.preset("small_farfield", seed=1)
    ds = exp.dataset()
    ds.probe = exp.probe
    return exp, ds


def integer_dataset(n_probe_modes=2, propagator=None):
    """complex128, integer positions (patches are plain crops), two probe modes: textbook territory."""
    kw = {} if propagator is None else dict(preset="small_nearfield")
    exp = simulate.preset(kw.get("preset", "small_farfield"), seed=1, jitter=0.0, dtype=np.complex128,
                          n_probe_modes=n_probe_modes)
    ds = exp.dataset()
    ds.probe = exp.probe
    ds.positions = np.round(ds.positions)
    return ds


# --------------------------------------------------------------------------- independent NumPy loops

def fourier_update(psi, data, fwd, inv):
    """psi' - psi: the propagated modes rescaled to the measured amplitude (with the loss's EPS)."""
    big = fwd(psi)
    intensity = np.sum(np.abs(big) ** 2, axis=tuple(range(big.ndim - 2)))
    ratio = np.sqrt((data + reference.EPS) / (intensity + reference.EPS))
    return inv(big * ratio) - psi


def farfield_ops(ds):
    fwd = (lambda x: np.fft.fft2(x, norm="ortho"))
    inv = (lambda x: np.fft.ifft2(x, norm="ortho"))
    return fwd, inv, (lambda j: np.fft.ifftshift(ds.data[j]).astype(np.float64))


def textbook_sequential(ds, obj, probe, order, alpha, beta, update_probe):
    """M-rPIE one position at a time (M-ePIE at alpha = beta = 1), written from the papers."""
    obj, probe = obj[0].copy(), probe.copy()
    fwd, inv, measured = farfield_ops(ds)
    ny, nx = probe.shape[-2:]
    for j in order:
        y, x = ds.positions[j].astype(int)
        o = obj[y:y + ny, x:x + nx].copy()
        dpsi = fourier_update(probe * o, measured(j), fwd, inv)
        p2 = np.sum(np.abs(probe) ** 2, axis=0)
        o2 = np.abs(o) ** 2
        obj[y:y + ny, x:x + nx] = o + np.sum(np.conj(probe) * dpsi, axis=0) / ((1 - alpha) * p2 + alpha * p2.max())
        if update_probe:
            probe = probe + np.conj(o) * dpsi / ((1 - beta) * o2 + beta * o2.max())
    return obj, probe


def textbook_batched(ds, obj, probe, batches, alpha, beta):
    """The parallel update: every position of a batch from the same state, summed, divided by the
    batch's summed powers (object frame for the object, probe frame for the probe)."""
    obj, probe = obj[0].copy(), probe.copy()
    fwd, inv, measured = farfield_ops(ds)
    ny, nx = probe.shape[-2:]
    for batch in batches:
        num_o, w_o = np.zeros_like(obj), np.zeros(obj.shape)
        num_p, w_p = np.zeros_like(probe), np.zeros(probe.shape[-2:])
        p2 = np.sum(np.abs(probe) ** 2, axis=0)
        for j in batch:
            y, x = ds.positions[j].astype(int)
            o = obj[y:y + ny, x:x + nx]
            dpsi = fourier_update(probe * o, measured(j), fwd, inv)
            num_o[y:y + ny, x:x + nx] += np.sum(np.conj(probe) * dpsi, axis=0)
            w_o[y:y + ny, x:x + nx] += p2
            num_p += np.conj(o) * dpsi
            w_p += np.abs(o) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            d_o = np.maximum((1 - alpha) * w_o + alpha * w_o.max(), pie.REL_FLOOR * w_o.max())
            obj = obj + num_o / d_o
        probe = probe + num_p / ((1 - beta) * w_p + beta * w_p.max())
    return obj, probe


def engine_order(seed, n, epochs=1):
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def relative_error(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("backend", ["numpy", ENGINE_BACKEND])
def test_sequential_epie_is_the_textbook_m_epie(backend):
    """Our M-ePIE with two probe modes equals an independent loop over positions (one epoch, probe
    refined). Phase retrieval amplifies rounding where the model intensity is ~0 (the phase of
    sqrt(d / I) Psi), so agreement is to 1e-6, not to the last bit."""
    ds = integer_dataset()
    cfg = Config(engine="epie", epochs=1, backend=backend, dtype="complex128", probe=Group(enabled=True),
                 fit_probe_scale=False, seed=3)
    rec = create(ds, cfg)
    assert isinstance(rec, PIEReconstruction)
    obj0, probe0 = to_host(rec.obj).copy(), to_host(rec.probe).copy()
    rec.run()
    (order,) = engine_order(3, ds.n_patterns)
    obj, probe = textbook_sequential(ds, obj0, probe0, order, 1.0, 1.0, update_probe=True)
    assert relative_error(to_host(rec.obj[0]), obj) < 1e-6
    assert relative_error(to_host(rec.probe), probe) < 1e-6
    assert relative_error(obj, obj0[0]) > 0.1                # the epoch did change the object


def test_sequential_rpie_is_the_textbook_m_rpie():
    ds = integer_dataset()
    cfg = Config(engine="rpie", epochs=1, backend=ENGINE_BACKEND, dtype="complex128", probe=Group(enabled=True),
                 fit_probe_scale=False, seed=5, pie={"alpha": 0.3, "beta": 0.6})
    rec = create(ds, cfg)
    obj0, probe0 = to_host(rec.obj).copy(), to_host(rec.probe).copy()
    rec.run()
    (order,) = engine_order(5, ds.n_patterns)
    obj, probe = textbook_sequential(ds, obj0, probe0, order, 0.3, 0.6, update_probe=True)
    assert relative_error(to_host(rec.obj[0]), obj) < 1e-6
    assert relative_error(to_host(rec.probe), probe) < 1e-6


@pytest.mark.parametrize("backend", ["numpy", ENGINE_BACKEND])
def test_batched_variant_is_the_independent_parallel_loop(backend):
    ds = integer_dataset()
    cfg = Config(engine="rpie", epochs=1, batch=7, backend=backend, dtype="complex128", probe=Group(enabled=True),
                 fit_probe_scale=False, seed=2, pie={"alpha": 0.4, "beta": 0.7})
    rec = create(ds, cfg)
    obj0, probe0 = to_host(rec.obj).copy(), to_host(rec.probe).copy()
    rec.run()
    (order,) = engine_order(2, ds.n_patterns)
    batches = [np.sort(order[s:s + 7]) for s in range(0, ds.n_patterns, 7)]
    obj, probe = textbook_batched(ds, obj0, probe0, batches, 0.4, 0.7)
    assert relative_error(to_host(rec.obj[0]), obj) < 1e-6
    assert relative_error(to_host(rec.probe), probe) < 1e-6
    assert relative_error(obj, obj0[0]) > 0.1


def identical(rtol):
    """Bit for bit on the CPU; on a GPU the object update's atomic sums (patch_adj) vary in the last bits from
    run to run, so there two runs agree to `rtol`."""
    if ENGINE_BACKEND == "cpu":
        return np.testing.assert_array_equal
    return lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_m_rpie_with_beta_gamma_one_is_m_epie_update_for_update(farfield):
    """M-rPIE with both weights 1 takes exactly M-ePIE's steps (subpixel positions, two probe modes,
    probe refined), bit for bit, epoch after epoch."""
    _, ds = farfield
    common = dict(epochs=3, backend=ENGINE_BACKEND, probe=Group(enabled=True), n_probe_modes=2, seed=4)
    a = create(ds, Config(engine="epie", **common))
    b = create(ds, Config(engine="rpie", pie={"alpha": 1.0, "beta": 1.0}, **common))
    same = identical(rtol=1e-3)          # complex64, 3 epochs: runs on a GPU differ by ~1e-5
    for epoch in range(1, 4):
        a.run(until=epoch)
        b.run(until=epoch)
        same(to_host(a.obj), to_host(b.obj))
        same(to_host(a.probe), to_host(b.probe))
    c = create(ds, Config(engine="rpie", pie={"alpha": 0.5, "beta": 1.0}, **common))
    c.run(until=1)
    assert not np.array_equal(to_host(c.obj), create(ds, Config(engine="epie", **{**common, "epochs": 1})).run().object)


def test_sequential_step_touches_only_its_patch(farfield):
    _, ds = farfield
    rec = create(ds, Config(engine="rpie", epochs=1, backend=ENGINE_BACKEND, probe=Group(enabled=True)))
    before = rec.obj.copy()
    rec.step(np.array([10]), 0)
    y, x = np.floor(rec.positions()[10]).astype(int)
    ny, nx = ds.patch_shape
    changed = np.argwhere(np.any(rec.obj != before, axis=0))
    assert len(changed)
    assert changed.min(axis=0).tolist() >= [y, x] and changed.max(axis=0).tolist() <= [y + ny, x + nx]


def test_crop_box_keeps_the_bilinear_taps():
    from cuptycho.launchers import sampling
    rng = np.random.default_rng(0)
    obj = (rng.standard_normal((1, 50, 60)) + 1j * rng.standard_normal((1, 50, 60))).astype(np.complex128)
    for pos in (np.array([[0.0, 0.0]]), np.array([[34.0, 44.0]]), np.array([[3.3, 40.7], [20.5, 9.25]]),
                np.array([[33.999, 43.5]])):
        y0, y1, x0, x1 = pie.crop_box(pos, (16, 16), (50, 60))
        crop = np.ascontiguousarray(obj[:, y0:y1, x0:x1])
        local = np.ascontiguousarray(pos - [y0, x0])
        np.testing.assert_array_equal(sampling.patch_fwd(crop, local, (16, 16)), sampling.patch_fwd(obj, pos, (16, 16)))


def test_mpie_momentum_every_t_updates(farfield):
    """v <- friction v + (X - X_then); X += feedback v, once every momentum_every position updates."""
    _, ds = farfield
    cfg = Config(engine="mpie", epochs=1, backend=ENGINE_BACKEND, dtype="complex128",
                 pie={"momentum_every": 3, "friction": 0.5, "feedback": 0.25})
    rec = create(ds, cfg)
    then = rec.obj.copy()
    rec.step(np.array([0]), 0)
    rec.step(np.array([1]), 0)
    assert np.array_equal(rec.momentum["object"][0], then) and rec.since_momentum == 2
    # the third update triggers momentum: replay it by hand from a copy of the state
    mirror = create(ds, dataclasses.replace(cfg, engine="rpie", pie={"alpha": 0.25, "beta": 1.0}))
    mirror.obj[...] = rec.obj
    mirror.step(np.array([2]), 0)
    rec.step(np.array([2]), 0)
    velocity = mirror.obj - then
    np.testing.assert_allclose(to_host(rec.obj), to_host(mirror.obj + 0.25 * velocity), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_host(rec.momentum["object"][1]), to_host(velocity), rtol=1e-12, atol=1e-12)
    assert rec.since_momentum == 0


def test_fixed_groups_do_not_move(farfield):
    _, ds = farfield
    rec = create(ds, Config(engine="epie", epochs=1, backend=ENGINE_BACKEND, object=Group(enabled=False),
                                    probe=Group(enabled=True)))
    obj, probe = rec.obj.copy(), rec.probe.copy()
    rec.run()
    assert np.array_equal(rec.obj, obj) and not np.array_equal(rec.probe, probe)
    rec = create(ds, Config(engine="epie", epochs=1, backend=ENGINE_BACKEND))
    probe = rec.probe.copy()
    rec.run()
    assert np.array_equal(rec.probe, probe)


def test_bad_pie_configuration_names_the_setting(farfield):
    _, ds = farfield
    cases = [
        (dict(engine="epie", loss="poisson"), "loss must be 'gaussian'"),
        (dict(engine="rpie", z=Group(enabled=True)), "z refinement needs engine = 'gradient'"),
        (dict(engine="mpie", tv={"ratio": 0.1}), "the tv regulariser needs engine = 'gradient'"),
        (dict(engine="epie", pie={"alpha": 0.5}), "ePIE divides by the maxima"),
        (dict(engine="rpie", pie={"friction": 0.5}), "pie.friction is an mPIE setting"),
        (dict(engine="rpie", pie={"alhpa": 0.5}), r"unknown pie setting\(s\) \['alhpa'\]"),
        (dict(engine="rpie", pie={"alpha": 1.5}), r"pie.alpha must lie in \[0, 1\]"),
        (dict(engine="mpie", pie={"momentum_every": 2.5}), "momentum_every must be an integer"),
        (dict(engine="rpie", pie={"object_step": 0}), "pie.object_step must be positive"),
        (dict(engine="gradient", pie={"alpha": 0.5}), "apply to the PIE engines"),
        (dict(engine="dm"), "engine must be one of"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            reconstruct(ds, Config(epochs=1, backend=ENGINE_BACKEND, **kw))


def test_default_batch_is_sequential_for_pie_and_full_for_gradient(farfield):
    _, ds = farfield
    assert reconstruct(ds, Config(engine="epie", epochs=1, backend=ENGINE_BACKEND)).history[0]["batch"] == 1
    assert reconstruct(ds, Config(epochs=1, backend=ENGINE_BACKEND)).history[0]["batch"] == ds.n_patterns


def test_resumed_pie_run_matches_an_uninterrupted_one(farfield):
    exp = simulate.preset("small_farfield", seed=1, position_error=2.0)
    ds = exp.dataset()
    ds.probe = exp.probe
    cfg = dict(engine="mpie", epochs=6, backend=ENGINE_BACKEND, dtype="complex128", probe=Group(enabled=True),
               positions=Group(lr=0.2, start_epoch=1), pie={"momentum_every": 7})
    whole = create(ds, Config(**cfg)).run()
    first = create(ds, Config(**cfg))
    first.run(until=3)
    state = first.state_dict()
    resumed = create(ds, Config(**cfg))
    resumed.load_state_dict(state)
    result = resumed.run()
    if ENGINE_BACKEND == "cpu":
        np.testing.assert_array_equal(result.object, whole.object)
        np.testing.assert_array_equal(result.probe, whole.probe)
        np.testing.assert_array_equal(result.positions, whole.positions)
    else:   # on a GPU two uninterrupted runs differ too (atomic sums, amplified): resume must not add to that
        spread = np.abs(create(ds, Config(**cfg)).run().object - whole.object).max()
        assert np.abs(result.object - whole.object).max() <= 100 * spread + 1e-12
        np.testing.assert_allclose(result.positions, whole.positions, rtol=0, atol=1e-6)
    gradient = create(ds, Config(epochs=6, backend=ENGINE_BACKEND, dtype="complex128", probe=Group(enabled=True),
                                         positions=Group(lr=0.2)))
    with pytest.raises(ValueError, match="checkpoint is of a run of the 'mpie' engine"):
        gradient.load_state_dict(state)


def test_divergence_halves_the_pie_steps(farfield, monkeypatch):
    _, ds = farfield
    rec = create(ds, Config(engine="rpie", epochs=3, backend=ENGINE_BACKEND))
    calls = {"n": 0}
    original = PIEReconstruction.run_epoch

    def flaky(self, epoch):
        calls["n"] += 1
        loss, size, profile = original(self, epoch)
        return (float("nan") if calls["n"] == 2 else loss), size, profile

    monkeypatch.setattr(PIEReconstruction, "run_epoch", flaky)
    result = rec.run()
    events = [e for e in result.events if e["event"] == "divergence"]
    assert len(events) == 1 and events[0]["lr_scale"] == 0.5 and rec.step_scale == 0.5
    assert len(result.history) == 3


def test_profile_times_the_pie_stages(farfield):
    exp = simulate.preset("small_farfield", seed=1, position_error=2.0)
    ds = exp.dataset()
    ds.probe = exp.probe
    result = reconstruct(ds, Config(engine="epie", epochs=1, backend=ENGINE_BACKEND, profile=True,
                                    probe=Group(enabled=True),
                                    positions=Group(lr=0.1)))
    for stage in ("exitwave", "fft", "likelihood", "exitwave_adj", "scatter", "pie_update", "registration"):
        assert result.timings.get(stage, 0) > 0, stage


# --------------------------------------------------------------------------- convergence (CPU, seconds each)

@pytest.mark.long_reconstruction
@pytest.mark.parametrize("engine, epochs, batch", [("epie", 100, None), ("rpie", 60, None), ("mpie", 40, None),
                                                   ("mpie", 200, 8)])
def test_each_engine_reconstructs_the_farfield_object(farfield, engine, epochs, batch):
    _, ds = farfield
    result = reconstruct(ds, Config(engine=engine, epochs=epochs, batch=batch, backend=ENGINE_BACKEND,
                                    metrics_every=20))
    assert result.history[-1]["object_correlation"] >= 0.95
    assert result.loss[-1] < 0.1 * result.loss[0]


def test_nearfield_rpie_reconstructs_the_object():
    exp = simulate.preset("small_nearfield", seed=1)
    ds = exp.dataset()
    ds.probe = exp.probe
    result = reconstruct(ds, Config(engine="rpie", epochs=30, backend=ENGINE_BACKEND, metrics_every=10))
    assert result.history[-1]["object_correlation"] >= 0.95


@pytest.mark.long_reconstruction
def test_blind_mpie_refines_three_probe_modes():
    exp = simulate.preset("small_farfield", seed=1, n_probe_modes=3)
    ds = exp.dataset()
    result = reconstruct(ds, Config(engine="mpie", epochs=60, backend=ENGINE_BACKEND, probe=Group(enabled=True),
                                    init_probe="data", n_probe_modes=3, metrics_every=20,
                                    constraints={"orthogonalize_probe": True}))
    assert result.history[-1]["object_correlation"] >= 0.95


def test_blind_multi_mode_position_refinement_warns():
    """Measured: blind with 3 probe modes, the cross-correlation refinement takes positions from 3.8 to
    10-13 px RMS; the engine says so instead of failing silently (the known-probe case stays quiet)."""
    exp = simulate.preset("small_farfield", seed=1, n_probe_modes=3)
    ds = exp.dataset()
    blind = Config(engine="rpie", backend=ENGINE_BACKEND, probe=Group(enabled=True), init_probe="data", n_probe_modes=3,
                   positions=Group(enabled=True))
    with pytest.warns(UserWarning, match="reliable with a known probe only: with 3 probe modes"):
        create(ds, blind)
    ds.probe = exp.probe
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create(ds, Config(engine="rpie", backend=ENGINE_BACKEND, positions=Group(enabled=True)))


@pytest.mark.long_reconstruction
def test_position_refinement_from_5_px_rms():
    """128 px patterns, 6 x 6 raster (~9.6 px steps), positions 5 px RMS off: the registration of each
    position's update drives a per-position Adam to < 0.5 px RMS."""
    exp = simulate.preset("small_farfield", seed=2, shape=(128, 128), probe_options={"width": 32.0, "defocus": 5e-3},
                          scan_size=(6, 6), position_error=5.0)
    ds = exp.dataset()
    ds.probe = exp.probe
    result = reconstruct(ds, Config(engine="mpie", epochs=80, backend=ENGINE_BACKEND, metrics_every=20,
                                    positions=Group(lr=0.3, start_epoch=5)))
    assert result.history[0]["position_error_rms"] > 4.5
    assert result.history[-1]["position_error_rms"] < 0.5
    assert result.history[-1]["object_correlation"] >= 0.9


def test_object_modes_follow_their_own_group(farfield):
    """Object modes take the same PIE step as the first mode, and stay put while their group is off."""
    _, ds = farfield
    rec = create(ds, Config(engine="rpie", epochs=2, backend=ENGINE_BACKEND, n_object_modes=2))
    start = rec.obj.copy()
    rec.run(until=1)
    assert not np.array_equal(rec.obj[1], start[1]) and not np.array_equal(rec.obj[0], start[0])
    rec = create(ds, Config(engine="rpie", epochs=2, backend=ENGINE_BACKEND, n_object_modes=2,
                                    object_modes=Group(start_epoch=1)))
    start = rec.obj.copy()
    rec.run(until=1)
    assert np.array_equal(rec.obj[1], start[1]) and not np.array_equal(rec.obj[0], start[0])
    rec.run(until=2)
    assert not np.array_equal(rec.obj[1], start[1])
