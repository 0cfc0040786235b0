"""The reconstruction engine: its mechanisms (unit tests) and its convergence on simulated data."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import ENGINE_BACKEND, to_host
from cuptycho import engine, model, ops, optimiser, settings, simulate
from cuptycho import Config, Group, reconstruct


@pytest.fixture(scope="module")
def farfield():
    exp = simulate.preset("small_farfield", seed=1)
    ds = exp.dataset()
    ds.probe = exp.probe
    return exp, ds


def quick(**kw):
    return Config(**{"epochs": 3, "batch": 16, "backend": ENGINE_BACKEND, **kw})


# --------------------------------------------------------------------------- mechanisms

def test_batch_sizes_grow_and_cap():
    spec = {"start": 4, "factor": 2, "every": 3, "max": 20}
    sizes = [settings.batch_size(spec, e, 49) for e in range(12)]
    assert sizes == [4, 4, 4, 8, 8, 8, 16, 16, 16, 20, 20, 20]
    assert settings.batch_size("full", 5, 49) == 49 and settings.batch_size(64, 0, 49) == 49
    with pytest.raises(ValueError, match="batch"):
        settings.batch_size({"begin": 4}, 0, 49)


def test_growing_batches_are_used_and_every_pattern_is_seen(farfield, monkeypatch):
    _, ds = farfield
    seen = []
    original = engine.Reconstruction.evaluate

    def spy(self, idx, loss, profile=None, wanted=model.GRADIENTS, n_total=None):
        seen.append(np.array(idx))
        return original(self, idx, loss, profile, wanted, n_total)

    monkeypatch.setattr(engine.Reconstruction, "evaluate", spy)
    result = reconstruct(ds, quick(epochs=3, batch={"start": 8, "factor": 2, "every": 1}, fit_probe_scale=False))
    assert [h["batch"] for h in result.history] == [8, 16, 32]
    per_epoch = np.split(np.concatenate(seen), 3)
    for idx in per_epoch:                                     # each epoch is a permutation of all patterns
        assert np.array_equal(np.sort(idx), np.arange(ds.n_patterns))


def test_engine_adam_matches_the_reference_formulation():
    """The kernel-backed optimiser of a group equals the NumPy reference Adam step for step."""
    rng = np.random.default_rng(0)
    param = (rng.standard_normal((3, 5)) + 1j * rng.standard_normal((3, 5))).astype(np.complex128)
    a, b = param.copy(), param.copy()
    opt_kernel = optimiser.Adam(a, Group(lr=0.1), "cpu")
    opt_ref = optimiser.Adam(b, Group(lr=0.1), "numpy")
    for _ in range(5):
        g = rng.standard_normal(param.shape) + 1j * rng.standard_normal(param.shape)
        opt_kernel.update(a, g)
        opt_ref.update(b, g)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_loss_switch_keeps_the_gradient_norm_continuous(farfield):
    _, ds = farfield
    rec = engine.Reconstruction(ds, quick(epochs=4, loss=[(0, "gaussian"), (2, "poisson")]))
    result = rec.run()
    switch = [e for e in result.events if e["event"] == "loss_switch"]
    assert len(switch) == 1 and switch[0]["epoch"] == 2 and switch[0]["to"] == "poisson"
    # at the current state: scale * |grad poisson| == |grad gaussian| (continuity, checked afresh)
    idx = np.arange(ds.n_patterns)
    rec.loss_scale = 1.0
    rec.switch_loss(2)
    _, g_old = rec.evaluate(idx, "gaussian")
    _, g_new = rec.evaluate(idx, "poisson")
    np.testing.assert_allclose(rec.loss_scale * np.linalg.norm(to_host(g_new["object"])),
                               np.linalg.norm(to_host(g_old["object"])),
                               rtol=1e-6)
    assert [h["loss_name"] for h in result.history] == ["gaussian", "gaussian", "poisson", "poisson"]


def test_position_corrections_stay_clipped(farfield):
    exp, _ = farfield
    ds = simulate.preset("small_farfield", seed=1, position_error=3.0).dataset()
    ds.probe = exp.probe
    cfg = quick(epochs=4, positions=Group(lr=5.0), max_position_correction=0.75)
    rec = engine.Reconstruction(ds, cfg)
    result = rec.run()
    assert np.abs(rec.correction).max() <= 0.75 + 1e-12
    assert np.abs(rec.correction).max() > 0.5                 # the large step did push against the limit
    ny, nx = ds.patch_shape
    assert np.all(result.positions >= 0)
    assert np.all(result.positions <= np.array(ds.obj_shape) - (ny, nx))


def test_position_l1_pulls_corrections_to_zero(farfield):
    _, ds = farfield                                          # no position error: gradients are small
    free = engine.Reconstruction(ds, quick(epochs=4, positions=Group(lr=0.5)))
    free.run()
    pulled = engine.Reconstruction(ds, quick(epochs=4, positions=Group(lr=0.5), position_l1=1e9))
    pulled.run()
    assert np.sqrt(np.mean(pulled.correction ** 2)) < np.sqrt(np.mean(free.correction ** 2))


def test_divergence_restores_the_last_good_state_and_halves_learning_rates(farfield, monkeypatch):
    _, ds = farfield
    calls = {"n": 0}
    original = ops.evaluate

    def flaky(*args, **kw):                # the 4th batch of the run returns NaN loss and gradients once
        calls["n"] += 1
        value, grads = original(*args, **kw)
        if calls["n"] == 4:
            return math.nan, {k: v * np.nan for k, v in grads.items()}
        return value, grads

    monkeypatch.setattr(ops, "evaluate", flaky)
    result = reconstruct(ds, quick(epochs=3))
    events = [e for e in result.events if e["event"] == "divergence"]
    assert len(events) == 1 and events[0]["epoch"] == 0
    assert len(result.history) == 3 and all(math.isfinite(h["loss"]) for h in result.history)
    assert result.history[0]["lr"]["object"] == pytest.approx(0.5 * 1e-2)


def test_repeated_divergence_stops_with_a_reason(farfield, monkeypatch):
    _, ds = farfield
    original = ops.evaluate
    monkeypatch.setattr(ops, "evaluate", lambda *a, **k: (math.inf, original(*a, **k)[1]))
    result = reconstruct(ds, quick(epochs=3, max_divergences=2))
    assert result.history == []
    assert result.events[-1] == {"epoch": 0, "event": "stopped", "reason": "diverged too often"}
    assert np.all(np.isfinite(result.object))


def test_early_stopping_and_progress_callback(farfield):
    _, ds = farfield
    records = []
    result = reconstruct(ds, quick(epochs=50, object=Group(lr=1e-9), early_stop={"patience": 3, "min_delta": 1e-3},
                                   progress=records.append))
    assert len(result.history) == len(records) < 10
    assert result.events[-1]["reason"] == "loss plateau"
    stopped = reconstruct(ds, quick(epochs=10, progress=lambda rec: rec["epoch"] == 1))
    assert len(stopped.history) == 2 and stopped.events[-1]["reason"] == "progress callback"


def test_profile_times_every_stage(farfield):
    _, ds = farfield
    result = reconstruct(ds, quick(epochs=2, profile=True, positions=Group(lr=0.1)))
    for stage in (*model.STAGES[:2], "likelihood", "exitwave_adj", "scatter", "posgrad", "optimiser", "total"):
        assert result.timings.get(stage, 0) > 0, stage


def test_tv_weight_keeps_its_ratio_to_the_data_loss(farfield):
    _, ds = farfield
    rec = engine.Reconstruction(ds, quick(epochs=3, tv={"ratio": 0.05, "p": 2, "q": 1, "eps": 1e-3}))
    result = rec.run()
    tv = rec.regs["tv"][0]
    np.testing.assert_allclose(tv.weight * tv.value(rec.obj, weighted=False), 0.05 * result.history[-1]["loss"],
                               rtol=1e-6)


def test_constraints_run_every_epoch(farfield):
    exp, ds = farfield
    ds2 = exp.dataset()
    ds2.probe = exp.probe
    cfg = quick(epochs=2, n_probe_modes=2, probe=Group(lr=1e-2),
                constraints={"orthogonalize_probe": True, "zero_probe_phase": True, "phase_range": (-1.0, 1.0)})
    rec = engine.Reconstruction(ds2, cfg)
    rec.run()
    gram = np.einsum("kyx,lyx->kl", rec.probe.conj(), rec.probe)
    assert abs(gram[0, 1]) <= 1e-5 * np.sqrt(abs(gram[0, 0] * gram[1, 1]))
    assert np.linalg.norm(rec.probe[0]) >= np.linalg.norm(rec.probe[1])
    assert np.all(np.abs(np.angle(rec.obj)) <= 1.0 + 1e-6)


def test_bad_configuration_names_the_setting(farfield):
    _, ds = farfield
    for cfg, message in [(quick(loss="l1"), "loss must be one of"), (quick(object=Group(lr=-1)), "object.lr"),
                         (quick(batch=0), "batch must be"), (quick(constraints={"flip": True}), "unknown constraint"),
                         (quick(init_probe="guess"), "init_probe")]:
        with pytest.raises(ValueError, match=message):
            reconstruct(ds, cfg)


# --------------------------------------------------------------------------- convergence (CPU, < 1 min each)

def test_farfield_object_from_a_flat_start(farfield):
    _, ds = farfield
    result = reconstruct(ds, Config(epochs=40, batch=8, object=Group(lr=0.2), backend=ENGINE_BACKEND))
    assert result.history[-1]["object_correlation"] >= 0.95
    assert result.loss[-1] < 0.05 * result.loss[0]


def test_nearfield_object_from_a_flat_start():
    exp = simulate.preset("small_nearfield", seed=1)
    ds = exp.dataset()
    ds.probe = exp.probe
    result = reconstruct(ds, Config(epochs=20, batch=8, object=Group(lr=0.1), backend=ENGINE_BACKEND))
    assert result.history[-1]["object_correlation"] >= 0.95


def test_z_refinement_from_20_percent_off():
    exp = simulate.preset("small_nearfield", seed=1, z_error=0.2)
    ds = exp.dataset()
    ds.probe = exp.probe
    result = reconstruct(ds, Config(epochs=30, batch=8, object=Group(lr=0.05), z=Group(lr=3e-2),
                                    backend=ENGINE_BACKEND))
    assert abs(result.z / exp.z - 1) < 0.01
    assert result.history[0]["z_error"] > 0.05                # it did start far off


@pytest.mark.long_reconstruction
def test_position_refinement_from_3_px_rms():
    exp = simulate.preset("small_farfield", seed=1, position_error=3.0)
    ds = exp.dataset()
    ds.probe = exp.probe
    result = reconstruct(ds, Config(epochs=100, batch=8, object=Group(lr=0.2), backend=ENGINE_BACKEND,
                                    positions=Group(lr=0.2, start_epoch=5,
                                                    schedule={"kind": "step", "every": 40, "gamma": 0.5})))
    assert result.history[0]["position_error_rms"] > 2.5
    assert result.history[-1]["position_error_rms"] < 0.5


def test_numpy_backend_runs_the_same_engine(farfield):
    _, ds = farfield
    a = reconstruct(ds, quick(epochs=2, backend="numpy", dtype="complex128"))
    b = reconstruct(ds, quick(epochs=2, backend=ENGINE_BACKEND, dtype="complex128"))
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-9)
    np.testing.assert_allclose(a.object, b.object, rtol=1e-8, atol=1e-8)


@pytest.mark.long_reconstruction
def test_blind_farfield_object_and_probe_from_the_data():
    """Probe from the mean pattern (DAP), refined with the object: no knowledge of the illumination."""
    exp = simulate.preset("small_farfield", seed=1)
    result = reconstruct(exp.dataset(), Config(epochs=150, batch=8, object=Group(lr=0.1), probe=Group(lr=0.05),
                                               init_probe="data", backend=ENGINE_BACKEND))
    assert result.history[-1]["object_correlation"] >= 0.95


def test_stages_are_nvtx_ranges_on_the_gpu(monkeypatch):
    """With the nvtx package, each stage of a cuda step is one push/pop pair named like Result.timings."""
    calls = []

    class FakeNvtx:
        @staticmethod
        def push_range(message, domain):
            calls.append(("push", message, domain))

        @staticmethod
        def pop_range(domain):
            calls.append(("pop", domain))

    monkeypatch.setattr(model, "nvtx_module", lambda: FakeNvtx)
    with model.stage(None, "likelihood", "cuda"):
        pass
    with model.stage(None, "fft", "cpu"):                     # no ranges off the GPU
        pass
    assert calls == [("push", "likelihood", "cuptycho"), ("pop", "cuptycho")]


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(farfield, tmp_path):
    """Checkpoint after 3 epochs, resume in a fresh Reconstruction, finish: the same result."""
    from cuptycho import checkpoint

    exp, _ = farfield
    ds = simulate.preset("small_farfield", seed=1, position_error=2.0).dataset()
    ds.probe = exp.probe
    cfg = dict(epochs=6, batch=8, object=Group(lr=0.1), probe=Group(lr=0.02), positions=Group(lr=0.1, start_epoch=2),
               loss=[(0, "gaussian"), (4, "poisson")], tv={"ratio": 0.01, "eps": 1e-3}, seed=3, backend=ENGINE_BACKEND,
               dtype="complex128", metrics_every=1, object_modes=Group(lr=0.01), n_object_modes=2)
    straight = reconstruct(ds, Config(**cfg))

    first = engine.Reconstruction(ds, Config(**cfg))
    first.run(until=3)
    path = tmp_path / "run.ckpt.npz"
    checkpoint.save(first.state_dict(), path)
    resumed = engine.Reconstruction(ds, Config(**cfg))
    resumed.load_state_dict(checkpoint.load(path))
    result = resumed.run()

    assert [h["epoch"] for h in result.history] == list(range(6))
    np.testing.assert_allclose(result.loss, straight.loss, rtol=1e-9)
    np.testing.assert_allclose(result.object, straight.object, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(result.positions, straight.positions, rtol=0, atol=1e-9)


def test_stop_request_ends_the_run_after_the_epoch(farfield):
    _, ds = farfield
    rec = engine.Reconstruction(ds, quick(epochs=10))
    cfg_progress = []

    def progress(r):
        cfg_progress.append(r["epoch"])
        if r["epoch"] == 2:
            rec.stop()                                       # as a SIGINT handler would
    rec.cfg.progress = progress
    result = rec.run()
    assert len(result.history) == 3 and result.events[-1] == {"epoch": 2, "event": "interrupted"}
    assert len(rec.run().history) == 10                     # and it can continue to the end


def test_checkpoint_files_are_validated(tmp_path):
    from cuptycho import checkpoint

    bad = tmp_path / "x.npz"
    np.savez(bad, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a readable cuptycho checkpoint"):
        checkpoint.load(bad)


def test_fixed_groups_skip_their_gradients(farfield, monkeypatch):
    """No position reduction while positions are fixed: the stage never runs."""
    _, ds = farfield
    result = reconstruct(ds, quick(epochs=2, profile=True))
    assert "posgrad" not in result.timings


def test_a_given_probe_that_is_rescaled_to_the_data_says_by_how_much(farfield):
    """fit_probe_scale rescaled a supplied probe without a word; the factor is now an event."""
    exp, ds = farfield
    given = ds.replace(probe=3.0 * exp.probe)
    rec = engine.Reconstruction(given, quick(epochs=0, init_probe="dataset"))
    (event,) = [e for e in rec.events if e["event"] == "probe_scale"]
    (plain,) = [e for e in engine.Reconstruction(ds, quick(epochs=0, init_probe="dataset")).events
                if e["event"] == "probe_scale"]
    assert event["probe"] == "given" and event["factor"] == pytest.approx(plain["factor"] / 3, rel=1e-5)
    np.testing.assert_allclose(np.linalg.norm(to_host(rec.probe)), event["factor"] * np.linalg.norm(3.0 * exp.probe),
                               rtol=1e-5)
    kept = engine.Reconstruction(given, quick(epochs=0, init_probe="dataset", fit_probe_scale=False))
    assert not [e for e in kept.events if e["event"] == "probe_scale"]
    np.testing.assert_allclose(to_host(kept.probe), 3.0 * exp.probe, rtol=1e-6)


@pytest.mark.parametrize("loss", ["gaussian", "poisson"])
def test_the_loss_per_pixel_is_the_whole_datasets_loss_per_detector_pixel(farfield, loss):
    """Beside the raw per-epoch value: the loss's own definition over every pattern, per valid pixel."""
    from cuptycho import forward, reference

    _, ds = farfield
    mask = np.ones(ds.data.shape[1:])
    mask[:3] = 0                                               # dead rows are not counted
    masked = ds.replace(mask=mask)
    result = reconstruct(masked, quick(epochs=3, batch=16, loss=loss, metrics_every=2, dtype="complex128"))
    assert [("loss_per_pixel" in h) for h in result.history] == [True, False, True]
    intensity = forward(result.object, result.probe, result.positions, **ds.forward_kwargs())
    terms = reference.loss_terms(loss, np.asarray(intensity, np.float64), np.asarray(ds.data, np.float64)) * mask
    expected = terms.sum() / (mask.sum() * ds.n_patterns)
    assert result.history[-1]["loss_per_pixel"] == pytest.approx(expected, rel=1e-9)


def test_the_probe_scale_fit_works_a_chunk_of_patterns_at_a_time(farfield, monkeypatch):
    """It modelled every pattern at once and copied them to float64 (~21 GB at 10k x 256^2 x 3 modes)."""
    from cuptycho import guesses, initial

    exp, ds = farfield
    given = ds.replace(probe=3.0 * exp.probe)
    whole = to_host(engine.Reconstruction(given, quick(epochs=0, init_probe="dataset")).probe)
    monkeypatch.setattr(guesses, "FIT_CHUNK_BYTES", 5 * 64 * 64 * 4)           # 5 patterns per chunk
    chunked = to_host(engine.Reconstruction(given, quick(epochs=0, init_probe="dataset")).probe)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    # the one-shot least squares (float64 throughout) on the same model agrees
    reference_probe = initial.fit_probe_scale(np.ones((1, *ds.obj_shape), np.complex64), 3.0 * exp.probe,
                                              ds.positions, ds.data, backend=ENGINE_BACKEND)
    np.testing.assert_allclose(chunked, to_host(reference_probe), rtol=1e-5)


def test_a_rough_probe_guess_that_is_never_refined_is_warned_about(farfield):
    """init_probe 'data' with the probe off (a library Config's default) kept the mean-pattern guess all run."""
    _, ds = farfield
    with pytest.warns(UserWarning, match=r"init_probe = 'data' is a rough guess of the probe, and \[probe\] enabled"):
        engine.Reconstruction(ds, quick(epochs=0, init_probe="data"))
    with pytest.warns(UserWarning, match=r"init_probe = \{'aperture': 10.0\} is a rough guess"):
        engine.Reconstruction(ds, quick(epochs=0, init_probe={"aperture": 10.0}))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.Reconstruction(ds, quick(epochs=0, init_probe="data", probe=Group(enabled=True)))
        engine.Reconstruction(ds, quick(epochs=0, init_probe="dataset"))      # the user's probe, kept on purpose


def test_buffers_are_released_after_the_set_up_and_when_the_run_ends():
    """The set-up's full-batch forward (probe scale fit) and a finished run leave no FFT plan, scratch buffer
    or transfer function cached; between the segments of a run (run(until=...)) they stay for reuse."""
    from cuptycho import fft

    exp = simulate.preset("small_nearfield", seed=1)
    ds = exp.dataset()
    ds.probe = exp.probe
    rec = engine.Reconstruction(ds, Config(epochs=3, batch=8, backend=ENGINE_BACKEND))
    cached = (lambda: (fft._plan.bytes, model._device_scratch.bytes, model._device_transfer.cache_info().currsize))
    assert cached() == (0, 0, 0)
    rec.run(until=1)
    assert all(n > 0 for n in cached())
    rec.run()
    assert cached() == (0, 0, 0)
