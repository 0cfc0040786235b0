"""The detector model in the gradient engine: [background] and [scale] (cuptycho.detector).

The gradients themselves are checked against finite differences in test_reference.py and the kernel
against its twin in test_kernels_twins.py; here: the groups' state, bounds, gauge, checkpoints, files
and what they recover from simulated data with a known background and flux fluctuation."""
from __future__ import annotations

import numpy as np
import pytest

from checks import resumed_through_a_checkpoint

from cuptycho import Config, Group, create, io, reconstruct, simulate


def experiment(background=0.15, scale_jitter=0.1, **kw):
    exp = simulate.preset("small_farfield", background=background, scale_jitter=scale_jitter, **kw)
    ds = exp.dataset()
    ds.probe = exp.probe
    return exp, ds


def config(**kw):
    base = dict(epochs=4, batch=8, backend="cpu", probe=Group(enabled=True), background=Group(enabled=True),
                scale=Group(enabled=True), seed=1)
    return Config(**{**base, **kw})


def test_the_simulator_adds_the_background_and_scales_it_reports():
    exp, _ = experiment()
    plain = simulate.preset("small_farfield")
    assert exp.background.shape == exp.data.shape[1:] and exp.scale.shape == (exp.n_positions,)
    assert np.mean(exp.scale) == pytest.approx(1.0) and 0.05 < np.std(exp.scale) < 0.15
    coherent = plain.intensity_clean.astype(np.float64)
    np.testing.assert_allclose(exp.background.mean(), 0.15 * coherent.mean(), rtol=1e-6)
    np.testing.assert_allclose(exp.intensity_clean, exp.scale[:, None, None] * coherent + exp.background,
                               rtol=1e-5, atol=1e-3)
    assert np.array_equal(plain.data, simulate.preset("small_farfield", background=0.0, scale_jitter=0.0).data)


def test_without_the_groups_nothing_changes_in_the_state():
    _, ds = experiment()
    rec = create(ds, Config(epochs=1, backend="cpu"))
    rec.run()
    arrays = rec.state_dict()["arrays"]
    assert "background" not in arrays and "shot_scale" not in arrays
    assert rec.result().background is None and rec.result().scale is None


def test_background_stays_non_negative_and_scales_positive_with_a_huge_step():
    _, ds = experiment()
    rec = create(ds, config(epochs=2, background=Group(enabled=True, lr=50.0), scale=Group(enabled=True, lr=5.0),
                            max_divergences=0, divergence_factor=float("inf")))
    rec.run()
    assert float(rec.background.min()) >= 0 and rec.background.max() > 0
    assert rec.shot_scale.min() > 0 and np.all(np.isfinite(rec.shot_scale))


def test_the_gauge_moves_the_common_scale_into_the_probe_and_keeps_the_model():
    _, ds = experiment()
    rec = create(ds, config(epochs=1))
    rec.run()
    rec.shot_scale *= 1.7                                    # a common factor the probe could carry
    idx = np.arange(ds.n_patterns)
    before = rec.model_intensity(idx, rec.positions())
    rec.detector_gauge()
    assert np.mean(rec.shot_scale) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(rec.model_intensity(idx, rec.positions()), before, rtol=2e-5,
                               atol=1e-6 * float(before.max()))


def test_per_pattern_background_steps_only_the_batch_rows():
    _, ds = experiment(scale_jitter=0.0)
    rec = create(ds, config(epochs=0, background_per_pattern=True, scale=Group(enabled=False)))
    assert rec.background.shape == ds.data.shape
    idx = np.array([3, 7, 11])
    rec.step(idx, 0, None)
    changed = np.flatnonzero(np.abs(rec.background).reshape(len(rec.background), -1).max(axis=1))
    assert set(changed) <= set(idx) and len(changed) > 0


def test_the_pie_engines_refuse_the_detector_model():
    _, ds = experiment()
    for group in ("background", "scale"):
        with pytest.raises(ValueError, match=f"{group} .* needs engine = 'gradient'"):
            create(ds, Config(engine="epie", **{group: Group(enabled=True)}))


def test_resumed_run_equals_an_uninterrupted_one_and_the_file_keeps_the_model(tmp_path):
    _, ds = experiment()
    cfg = dict(epochs=5, dtype="complex128", background=Group(enabled=True, start_epoch=1),
               scale=Group(enabled=True, start_epoch=1))
    straight = reconstruct(ds, config(**cfg))
    result = resumed_through_a_checkpoint(ds, config(**cfg), 2, tmp_path / "run.ckpt.npz")
    np.testing.assert_array_equal(result.background, straight.background)
    np.testing.assert_array_equal(result.scale, straight.scale)
    np.testing.assert_array_equal(result.object, straight.object)
    io.write_result(tmp_path / "r.cxi", result, ds)
    back = io.read_result(tmp_path / "r.cxi")
    np.testing.assert_array_equal(back.background, result.background)
    np.testing.assert_array_equal(back.scale, result.scale)


def test_an_edited_checkpoint_with_a_negative_background_is_refused(tmp_path):
    _, ds = experiment()
    rec = create(ds, config(epochs=1))
    rec.run()
    state = rec.state_dict()
    state["arrays"]["background"] = state["arrays"]["background"] - 1.0
    with pytest.raises(ValueError, match="arrays.background"):
        rec.load_state_dict(state)


def test_a_background_and_flux_fluctuation_are_recovered():
    """Acceptance (issue: background and per-shot scale): 15 % background and 10 % RMS flux fluctuation on the
    7 x 7 far-field preset at 1e7 photons, probe known and refined, 800 epochs, the detector groups from epoch
    100. Measured over seeds 0-3: object correlation 0.984-0.993 with the detector model, 0.933 without; the
    background map 3.0-4.4 % off (its mean within 0.2 %); the scales' RMS error 0.026-0.043 of a 0.1 spread.

    At 1e6 photons the same run reaches 0.977-0.988 (0.9875 at seed 0), and the exact background given and
    fixed only 0.972-0.975: that case is limited by the background's Poisson noise over the weak high-q
    signal, not by the fit; its map error, 9 %, is 1.3x the 6.8 % floor of a per-pixel estimate from 49
    patterns. The scales trade off against a smooth object amplitude, so they are only partly identifiable."""
    exp, ds = experiment(photons=1e7)
    common = dict(epochs=800, object=Group(lr=0.03), probe=Group(enabled=True, lr=0.01), metrics_every=800)
    detector = reconstruct(ds, config(**common, background=Group(enabled=True, start_epoch=100),
                                      scale=Group(enabled=True, start_epoch=100)))
    plain = reconstruct(ds, config(**common, background=Group(enabled=False), scale=Group(enabled=False)))
    with_model, without = detector.history[-1], plain.history[-1]
    assert with_model["object_correlation"] >= 0.98, with_model
    assert without["object_correlation"] < with_model["object_correlation"] - 0.03, without
    assert with_model["background_error"] < 0.05, with_model
    assert abs(detector.background.mean() / exp.background.mean() - 1) < 0.01
    assert with_model["scale_error_rms"] < 0.06, with_model
    assert np.corrcoef(detector.scale, exp.scale)[0, 1] > 0.9


@pytest.mark.parametrize("per_pattern", [False, True])
def test_the_detector_gradients_add_up_over_chunks(monkeypatch, per_pattern):
    """The kernels process a batch in chunks of positions: the background's gradient is summed over them
    (one map) or written per pattern, the scales' per pattern; against the reference."""
    import cuptycho
    from cuptycho import model

    exp = simulate.preset("small_farfield", background=0.15, scale_jitter=0.1)
    rng = np.random.default_rng(2)
    n = exp.n_positions
    background = rng.uniform(0, 5, exp.data.shape if per_pattern else exp.data.shape[1:])
    kw = dict(scale=rng.uniform(0.8, 1.2, n), background=background, loss="poisson")
    obj, probe = exp.obj.astype(np.complex128), exp.probe.astype(np.complex128)
    _, expected = cuptycho.loss_and_grad(obj, probe, exp.positions, exp.data, backend="numpy", **kw)
    monkeypatch.setattr(model, "CHUNK_BYTES", 3 * 64 * 64 * 16)          # a few positions per chunk
    _, got = cuptycho.loss_and_grad(obj, probe, exp.positions, exp.data, backend="cpu", **kw)
    for key in ("scale", "background", "object"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, atol=1e-12 * np.abs(expected[key]).max())
