"""Edited or damaged checkpoints (issue 11): every field is checked (type, range, shape, finiteness)
and a bad one is one ValueError naming it, before any state changes; the command line says so in
one line (exit 2) instead of a traceback or a NaN result."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from cuptycho import Config, Group, checkpoint, cli, create


CFG = dict(epochs=4, batch=16, backend="cpu", probe=Group(lr=0.02), positions=Group(lr=0.1),
           object=Group(lr=0.05, schedule={"kind": "plateau", "patience": 2}), tv={"ratio": 0.01})


@pytest.fixture(scope="module")
def saved(farfield_known_probe, tmp_path_factory):
    """A checkpoint after 2 epochs of 4, its path and the state it holds."""
    rec = create(farfield_known_probe, Config(**CFG))
    rec.run(until=2)
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt.npz"
    checkpoint.save(rec.state_dict(), path)
    return path, checkpoint.load(path)


def edited(state, field, value):
    """A deep copy of `state` with the dotted `field` set to `value` (None deletes it)."""
    out = copy.deepcopy(state)
    *parents, last = field.split(".") if not field.startswith("arrays.") else ["arrays", field[len("arrays."):]]
    target = out
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    last = int(last) if isinstance(target, list) else last
    if value is None:
        del target[last]
    else:
        target[last] = value
    return out


def write_edited(src, dst, meta=None, arrays=None):
    """Copy the checkpoint file `src` to `dst` with state.json entries and arrays replaced."""
    with np.load(src) as npz:
        members = {k: npz[k] for k in npz.files}
    doc = json.loads(bytes(members["state.json"]).decode())
    doc.update(meta or {})
    members["state.json"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    for k, v in (arrays or {}).items():
        members[f"array/{k}"] = v
    np.savez(dst, **members)


OBJ = "arrays.object"
BAD = [
    ("rng", 5, r"'rng' must be a dict"),
    ("rng.bit_generator", "NoSuchGenerator", r"'rng.bit_generator' must be the name of a NumPy bit generator"),
    ("rng.state.state", 1.5, r"'rng.state.state' must be an integer >= 0"),
    ("rng.state.state", -1, r"'rng.state.state' must be an integer >= 0"),
    ("rng.state.inc", 2 ** 200, r"'rng' must be a state a PCG64 generator accepts"),
    ("rng.bit_generator", "MT19937", r"'rng.*MT19937"),
    ("epoch", "x", r"'epoch' must be an integer >= 0, got 'x'"),
    ("epoch", -1, r"'epoch' must be an integer >= 0"),
    ("epoch", True, r"'epoch' must be an integer"),
    ("epoch", None, r"checkpoint has no field 'epoch'"),
    ("finished", "yes", r"'finished' must be true or false"),
    ("best", "inf", r"'best' must be a number"),
    ("stale", 0.5, r"'stale' must be an integer"),
    ("divergences", -2, r"'divergences' must be an integer >= 0"),
    ("loss_scale", 0.0, r"'loss_scale' must be a positive number"),
    ("loss_scale", float("nan"), r"'loss_scale' must be a finite number"),
    ("history", {"epoch": 0}, r"'history' must be a list"),
    ("history.0", [1, 2], r"'history\[0\]' must be an epoch record"),
    ("history.0.loss", "low", r"'history\[0\].loss' must be a finite number"),
    ("history.0.epoch", None, r"'history\[0\].epoch' must be an integer"),
    ("events", "none", r"'events' must be a list"),
    ("timings", [], r"'timings' must be a dict"),
    ("timings.total", -1.0, r"'timings.total' must be a number >= 0"),
    ("tv_weight", float("inf"), r"'tv_weight' must be a finite number"),
    ("scaled_for", "l1", r"'scaled_for' must be a loss name"),
    ("scaled_for", "poisson", r"'scaled_for' names the loss 'poisson', which this run's loss"),
    ("divergence_watch", [1], r"'divergence_watch' must be a dict"),
    ("divergence_watch.key", ["gaussian"], r"'divergence_watch.key' must be a \[loss name, TV on\] pair"),
    ("divergence_watch.best", float("nan"), r"'divergence_watch.best' must be a number"),
    ("optimisers", [], r"'optimisers' must be a dict"),
    ("optimisers.object.step", 1.5, r"'optimisers.object.step' must be an integer"),
    ("optimisers.object.lr_scale", -1, r"'optimisers.object.lr_scale' must be a positive number"),
    ("optimisers.probe.unit", None, r"'optimisers.probe' has no 'unit'"),
    ("optimisers.object.schedule", {"kind": "step", "every": 2, "gamma": 0.5, "factor": 1.0, "epochs_done": 2},
     r"'optimisers.object.schedule' does not fit this run's object.schedule: .*kind 'step', not 'plateau'"),
    ("optimisers.object.schedule.bad_epochs", -3, r"'optimisers.object.schedule' .*bad_epochs"),
    ("optimisers.object_modes", {"step": 1, "lr_scale": 1.0, "unit": 1.0, "schedule": {}},
     r"checkpoint has no array 'object_modes.m'"),
    ("arrays.object", None, r"checkpoint has no array 'object'"),
    ("arrays.probe.m", None, r"checkpoint has no array 'probe.m'"),
    ("arrays.extra", np.zeros(3), r"arrays this run has none of: \['extra'\]"),
    ("arrays.probe.v", np.zeros((1, 5), np.float32), r"'arrays.probe.v' must be an array of shape"),
    ("arrays.correction", np.zeros((49, 2), np.int64), r"'arrays.correction' must be a real floating-point array"),
    ("arrays.z_rel", np.array([np.inf]), r"'arrays.z_rel' must be finite"),
    ("pie", {"step_scale": 1.0}, r"'pie.since_momentum' must be an integer"),
]


def _fresh(farfield_known_probe):
    return create(farfield_known_probe, Config(**CFG))


@pytest.mark.parametrize("field, value, message", BAD, ids=[f"{f}={v!r}"[:40] for f, v, _ in BAD])
def test_a_bad_field_is_one_error_naming_it_and_nothing_changes(farfield_known_probe, saved, field, value, message):
    _, state = saved
    rec = _fresh(farfield_known_probe)
    before = rec.state_dict()
    with pytest.raises(ValueError, match=message):
        rec.load_state_dict(edited(state, field, value))
    after = rec.state_dict()
    for name, array in before.pop("arrays").items():
        np.testing.assert_array_equal(after["arrays"][name], array)
    after.pop("arrays")
    assert json.dumps(after) == json.dumps(before)                # nothing was changed


@pytest.mark.parametrize("name", ["object", "probe"])
def test_an_all_nan_object_or_probe_is_refused(farfield_known_probe, saved, tmp_path, name):
    """It used to be accepted, and a NaN result written with exit 0."""
    path, state = saved
    bad = state["arrays"][name] * np.nan
    message = rf"'arrays.{name}' must be finite \(no NaN or inf\), got {bad.size} non-finite value\(s\) of {bad.size}"
    with pytest.raises(ValueError, match=message):
        _fresh(farfield_known_probe).load_state_dict(edited(state, f"arrays.{name}", bad))
    write_edited(path, tmp_path / "nan.ckpt.npz", arrays={name: bad})
    with pytest.raises(ValueError, match=rf"nan.ckpt.npz: checkpoint field 'arrays.{name}' must be finite"):
        checkpoint.load(tmp_path / "nan.ckpt.npz")


def test_a_zero_probe_a_wrong_shape_and_a_real_object_are_refused(farfield_known_probe, saved):
    _, state = saved
    obj = state["arrays"]["object"]
    for field, value, message in [
            ("arrays.probe", 0 * state["arrays"]["probe"], r"'arrays.probe' must be a probe with some power"),
            (OBJ, obj[:, :-1], r"checkpoint holds an object \(1, \d+, \d+\)"),
            (OBJ, obj.real.copy(), r"'arrays.object' must be a complex array, got dtype float32"),
            (OBJ, obj[0], r"'arrays.object' must be a 3-D array")]:
        with pytest.raises(ValueError, match=message):
            _fresh(farfield_known_probe).load_state_dict(edited(state, field, value))


def test_the_pie_engines_state_is_checked_too(farfield_known_probe):
    cfg = Config(engine="mpie", epochs=3, backend="cpu", probe=Group(enabled=True))
    rec = create(farfield_known_probe, cfg)
    rec.run(until=1)
    state = rec.state_dict()
    for field, value, message in [
            ("pie", None, r"checkpoint has no field 'pie'"),
            ("pie.step_scale", float("nan"), r"'pie.step_scale' must be a finite number"),
            ("pie.since_momentum", "3", r"'pie.since_momentum' must be an integer"),
            ("arrays.momentum.object.velocity", None, r"checkpoint has no array 'momentum.object.velocity'"),
            ("arrays.momentum.probe.then", state["arrays"]["probe"] * np.nan, r"'arrays.momentum.probe.then' must "
                                                                             "be finite")]:
        with pytest.raises(ValueError, match=message):
            create(farfield_known_probe, cfg).load_state_dict(edited(state, field, value))
    resumed = create(farfield_known_probe, cfg)
    resumed.load_state_dict(state)                             # the untouched state still loads
    np.testing.assert_array_equal(resumed.run().object, create(farfield_known_probe, cfg).run().object)


def test_a_good_checkpoint_round_trips_and_resumes_exactly(farfield_known_probe, saved):
    path, state = saved
    whole = _fresh(farfield_known_probe).run()
    resumed = _fresh(farfield_known_probe)
    resumed.load_state_dict(checkpoint.load(path))
    result = resumed.run()
    np.testing.assert_array_equal(result.object, whole.object)
    np.testing.assert_array_equal(result.loss, whole.loss)


def test_older_checkpoints_without_the_new_fields_load(farfield_known_probe, saved):
    """divergence_watch and scaled_for came later: without them the run measures its own start."""
    _, state = saved
    old = {k: v for k, v in state.items() if k not in ("divergence_watch", "scaled_for")}
    rec = _fresh(farfield_known_probe)
    rec.load_state_dict(old)
    assert rec.watch is None and rec.scaled_for == "gaussian"
    assert len(rec.run().history) == 4 and rec.watch["key"] == ["gaussian", True]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A simulated file and the checkpoint `cuptycho reconstruct` left after 2 epochs."""
    d = tmp_path_factory.mktemp("cli")
    sim, out = d / "sim.cxi", d / "out.cxi"
    assert cli.main(["simulate", "small_farfield", "--seed", "1", "-o", str(sim)]) == 0
    base = ["reconstruct", str(sim), "-o", str(out), "--backend", "cpu", "--progress", "none"]
    assert cli.main([*base, "--epochs", "2", "--checkpoint-every", "1", "--set", "batch=16"]) == 0
    return d, base


@pytest.mark.parametrize("meta, message", [
    ({"rng": 5}, "field 'rng' must be a dict"),
    ({"epoch": "x"}, "field 'epoch' must be an integer >= 0, got 'x'"),
    ({"cli": {"config": 3}}, "field 'cli.config' must be a configuration"),
], ids=["rng", "epoch", "cli"])
def test_the_command_line_refuses_an_edited_checkpoint_in_one_line(cli_run, capsys, meta, message):
    """`"rng": 5` and `"epoch": "x"` used to be TypeError tracebacks."""
    d, base = cli_run
    edited_path = d / f"edited-{next(iter(meta))}.ckpt.npz"
    write_edited(d / "out.ckpt.npz", edited_path, meta=meta)
    capsys.readouterr()
    code = cli.main([*base, "--force", "--epochs", "3", "--resume", str(edited_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
