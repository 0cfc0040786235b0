"""Divergence (issue 11): a loss far above the best, an implausible intensity or a non-finite value
restores the best state, halves every step size and says why; too many end the run as diverged,
with the best state. Healthy runs never roll back. z refinement on far-field data is refused."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cuptycho import Config, Group, cli, create, engine, simulate
from cuptycho.pie import PIEReconstruction


def quick(**kw):
    return Config(**{"epochs": 4, "backend": "cpu", **kw})


def rollbacks(result):
    return [e for e in result.events if e["event"] == "divergence"]


def current_loss(rec):
    """The gaussian loss of the engine's state now, over every pattern."""
    return rec.evaluate(np.arange(rec.ds.n_patterns), "gaussian")[0]


@pytest.mark.parametrize("kw", [{}, {"batch": 16}, {"loss": "intensity"}], ids=["full", "minibatch", "intensity"])
def test_a_huge_learning_rate_is_caught_in_epoch_0_and_the_run_ends_diverged(farfield_known_probe, kw):
    """lr = 1e9 used to end with a loss of 1e23, a garbage object and no event (exit 0)."""
    rec = create(farfield_known_probe, quick(object=Group(lr=1e9), max_divergences=2, **kw))
    start = rec.obj.copy()
    result = rec.run()
    events = rollbacks(result)
    assert len(events) == 3 and events[0]["epoch"] == 0 and events[0]["restored_epoch"] is None
    assert "probe power x object transmission out of range" in events[0]["reason"]
    assert [e["lr_scale"] for e in events] == [0.5, 0.25, 0.125]
    assert rec.diverged and result.events[-1] == {"epoch": 0, "event": "stopped", "reason": "diverged too often"}
    np.testing.assert_array_equal(result.object, start)     # the initial (best) state, not the blown-up one


def test_a_loss_jump_restores_the_best_state_not_the_last_finite_one(farfield_known_probe, monkeypatch):
    """A finite loss far above the best is a divergence; the state restored is the one the lowest
    loss vouched for, not the state the jump came from."""
    calls = {"n": 0}
    original = engine.Reconstruction.run_epoch

    def jumpy(self, epoch):                        # epoch 2's loss is 1000 times what it was
        calls["n"] += 1
        loss, size, profile = original(self, epoch)
        return (loss * 1000 if calls["n"] == 3 else loss), size, profile

    monkeypatch.setattr(engine.Reconstruction, "run_epoch", jumpy)
    rec = create(farfield_known_probe, quick(epochs=5, batch=16, object=Group(lr=0.1)))
    result = rec.run()
    (event,) = rollbacks(result)
    assert event["epoch"] == 2 and "the loss jumped" in event["reason"] and event["lr_scale"] == 0.5
    assert event["restored_epoch"] == 0      # epoch 1's loss vouched for epoch 0's state; epoch 2's for none
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4] and not rec.diverged
    assert result.history[2]["lr"]["object"] == pytest.approx(0.05)


def test_a_late_probe_blow_up_ends_with_the_best_state(farfield_known_probe):
    """A schedule that raises the probe's step 1e4-fold at epoch 4: the run used to keep the garbage
    (finite) state as its last good one; now it is rolled back to a state from before the blow-up."""
    cfg = quick(epochs=10, object=Group(lr=0.05), max_divergences=2,
                probe=Group(lr=0.02, schedule={"kind": "step", "every": 4, "gamma": 1e4}))
    rec = create(farfield_known_probe, cfg)
    result = rec.run()
    events = rollbacks(result)
    assert events and events[0]["epoch"] >= 4 and events[0]["restored_epoch"] <= 3
    assert all(e["restored_epoch"] is not None and e["restored_epoch"] <= 3 for e in events)
    best = min(h["loss"] for h in result.history)
    assert current_loss(rec) <= 1.5 * best
    power = float(np.sum(np.abs(result.probe) ** 2))
    assert 0.1 < power / farfield_known_probe.data.sum(axis=(1, 2)).mean() < 10


def test_rollbacks_compound(farfield_known_probe, monkeypatch):
    """Each rollback halves the step sizes again (the restored optimisers used to bring back their old
    scale, so every rollback left them at 0.5)."""
    calls = {"n": 0}
    original = engine.Reconstruction.run_epoch

    def flaky(self, epoch):                        # epoch 1 is NaN three times
        calls["n"] += 1
        loss, size, profile = original(self, epoch)
        return (math.nan if calls["n"] in (2, 3, 4) else loss), size, profile

    monkeypatch.setattr(engine.Reconstruction, "run_epoch", flaky)
    result = create(farfield_known_probe, quick(epochs=3)).run()
    assert [e["lr_scale"] for e in rollbacks(result)] == [0.5, 0.25, 0.125]
    assert [e["reason"] for e in rollbacks(result)] == ["non-finite loss or parameters"] * 3
    assert result.history[-1]["lr"]["object"] == pytest.approx(0.125 * 1e-2)


def test_a_divergence_in_the_epoch_of_a_loss_switch_keeps_the_new_scale(farfield_known_probe, monkeypatch):
    """The state restored at a switch carries the new loss's scale (it used to restore the old one and
    never switch again)."""
    calls = {"n": 0}
    original = engine.Reconstruction.run_epoch

    def flaky(self, epoch):
        calls["n"] += 1
        loss, size, profile = original(self, epoch)
        return (math.nan if calls["n"] == 3 else loss), size, profile

    monkeypatch.setattr(engine.Reconstruction, "run_epoch", flaky)
    rec = create(farfield_known_probe, quick(batch=16, loss=[(0, "gaussian"), (2, "poisson")]))
    result = rec.run()
    (event,) = rollbacks(result)
    (switch,) = [e for e in result.events if e["event"] == "loss_switch"]
    assert event["epoch"] == 2 and event["restored_epoch"] == 1
    assert rec.loss_scale == switch["scale"] != 1.0 and rec.scaled_for == "poisson"


def test_a_loss_switch_restarts_the_reference(farfield_known_probe, monkeypatch):
    """A switch may change the reported loss's scale many-fold: that is no divergence."""
    original = engine.Reconstruction.switch_loss

    def louder(self, epoch):
        original(self, epoch)
        self.loss_scale *= 1000                     # the new loss reads 1000 times larger

    monkeypatch.setattr(engine.Reconstruction, "switch_loss", louder)
    rec = create(farfield_known_probe, quick(batch=16, loss=[(0, "gaussian"), (2, "poisson")]))
    result = rec.run()
    assert rollbacks(result) == []
    assert result.loss[2] > 100 * result.loss[1]
    assert rec.watch["key"] == ["poisson", False] and rec.watch["start"] > 100 * result.loss[1]


@pytest.mark.parametrize("kw", [
    dict(batch=1, object=Group(lr=0.5)),                                          # noisy minibatch losses
    dict(batch=8, probe=Group(lr=0.05), n_probe_modes=2,
         constraints={"renormalise": True, "recentre_probe": True, "orthogonalize_probe": True}),
    dict(batch=8, loss=[(0, "gaussian"), (3, "weighted")], tv={"ratio": 0.5, "start_epoch": 2}),
    dict(engine="rpie", probe=Group(enabled=True)),
    dict(engine="mpie", batch=4, probe=Group(enabled=True)),
], ids=["batch1", "constraints", "switch-and-tv", "rpie", "mpie"])
def test_healthy_runs_never_roll_back(farfield_known_probe, kw):
    result = create(farfield_known_probe, quick(epochs=6, **kw)).run()
    assert rollbacks(result) == [] and result.loss[-1] < result.loss[0]


@pytest.mark.parametrize("factor", [1e-3, 1e3])
def test_an_unfitted_probe_scale_is_no_divergence(farfield_known_probe, factor):
    """The plausible intensity spans the data's counts and the initial model's, however far apart."""
    ds = farfield_known_probe.replace(probe=farfield_known_probe.probe * np.sqrt(factor))
    result = create(ds, quick(epochs=6, batch=8, fit_probe_scale=False, probe=Group(lr=0.05))).run()
    assert rollbacks(result) == []


def test_pie_engines_roll_back_on_a_loss_jump(farfield_known_probe, monkeypatch):
    calls = {"n": 0}
    original = PIEReconstruction.run_epoch

    def jumpy(self, epoch):
        calls["n"] += 1
        loss, size, profile = original(self, epoch)
        return (loss * 100 if calls["n"] == 2 else loss), size, profile

    monkeypatch.setattr(PIEReconstruction, "run_epoch", jumpy)
    rec = create(farfield_known_probe, quick(engine="epie", epochs=3, probe=Group(enabled=True)))
    (event,) = rollbacks(rec.run())
    assert "the loss jumped" in event["reason"] and rec.step_scale == 0.5


def test_divergence_factor_is_an_option(farfield_known_probe):
    with pytest.raises(ValueError, match="divergence_factor must be > 1"):
        create(farfield_known_probe, quick(divergence_factor=1.0))
    # inf: only non-finite values count (the old behaviour: lr = 1e9 runs on)
    rec = create(farfield_known_probe, quick(epochs=2, object=Group(lr=1e9), divergence_factor=math.inf))
    assert rollbacks(rec.run()) == []
    # a tighter factor catches a smaller jump
    blow_up = {"kind": "step", "every": 1, "gamma": 1e3}
    rec = create(farfield_known_probe, quick(epochs=3, probe=Group(lr=0.02, schedule=blow_up),
                                             divergence_factor=2.0))
    assert rollbacks(rec.run())


# --------------------------------------------------------------------------- z on far-field data (10b)

def test_z_refinement_on_farfield_data_is_one_clear_error(farfield_known_probe, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"z\.enabled = true .*propagator is 'farfield'"):
        create(farfield_known_probe, quick(z=Group(enabled=True)))
    create(farfield_known_probe, quick(z=Group(enabled=False)))
    near = simulate.preset("small_nearfield", seed=1)
    create(near.dataset().replace(probe=near.probe), quick(z=Group(enabled=True)))    # near field: z is refined
    sim = tmp_path / "sim.cxi"
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(sim)]) == 0
    capsys.readouterr()
    code = cli.main(["reconstruct", str(sim), "-o", str(tmp_path / "out.cxi"), "--set", "z.enabled=true",
                     "--backend", "cpu", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "z.enabled = true" in err and "'farfield'" in err and "Traceback" not in err
    assert not (tmp_path / "out.cxi").exists()


def test_the_command_line_exits_3_when_the_run_diverged(tmp_path, capsys):
    """Was: exit 0 with a garbage result; now the best state is written and the exit code says why."""
    from cuptycho import io

    sim, out = tmp_path / "sim.cxi", tmp_path / "out.cxi"
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(sim)]) == 0
    capsys.readouterr()
    code = cli.main(["reconstruct", str(sim), "-o", str(out), "--epochs", "3", "--set", "object.lr=1e9",
                     "--set", "max_divergences=1", "--backend", "cpu", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_DIVERGED == 3
    assert "the run diverged (2 rollbacks > max_divergences = 1)" in err and "lower the learning rates" in err
    assert np.all(np.isfinite(io.read_result(out).object))
