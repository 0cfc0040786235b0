"""Learning-rate schedules: factor sequences on scripted losses, checkpoint round trips, spec errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cuptycho import schedules
from cuptycho.schedules import Constant, ReduceOnPlateau, Step, from_spec

# A scripted loss history for the plateau schedule and its hand-computed factors.
# Settings: patience 2, factor 0.5, threshold 0.1 (improve = loss < 0.9 best), min_factor 0.2,
# cooldown 1. Trace (best, bad epochs, cooldown left) after each epoch:
#  1: 10.0  improves          best 10   bad 0                      -> 1
#  2:  9.5  not < 9.0                   bad 1                      -> 1
#  3:  9.2                              bad 2                      -> 1
#  4:  8.9  < 9.0 improves    best 8.9  bad 0                      -> 1
#  5:  8.9  not < 8.01                  bad 1                      -> 1
#  6:  8.5                              bad 2                      -> 1
#  7:  8.2                              bad 3 > 2: reduce, cd 1    -> 0.5
#  8:  8.1  bad 1, but cooldown: cd 0, bad 0                       -> 0.5
#  9:  8.1                              bad 1                      -> 0.5
# 10:  8.1                              bad 2                      -> 0.5
# 11:  8.1                              bad 3: reduce, cd 1        -> 0.25
# 12:  1.0  improves          best 1    bad 0, cooldown: cd 0      -> 0.25
# 13-15: 1.0                            bad 1, 2, 3: reduce        -> 0.25, 0.25, max(0.125, 0.2) = 0.2
# 16:  1.0  cooldown: bad 0                                        -> 0.2
# 17-19: 1.0                            bad 1, 2, 3: max(0.1, 0.2) -> 0.2 (floor)
PLATEAU_SPEC = {"kind": "plateau", "patience": 2, "factor": 0.5, "threshold": 0.1, "min_factor": 0.2,
                "cooldown": 1}
PLATEAU_LOSSES = [10.0, 9.5, 9.2, 8.9, 8.9, 8.5, 8.2, 8.1, 8.1, 8.1, 8.1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
PLATEAU_FACTORS = [1, 1, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2]

LOSSES = [5.0, 4.0, 4.5, 3.0, 3.2, 3.1, 3.05, 2.0, 2.5, 2.4, 2.3, 2.2]


def run(schedule, losses):
    return [schedule.step(loss) for loss in losses]


def test_constant():
    s = from_spec(None)
    assert isinstance(s, Constant) and s.factor == 1.0
    assert run(s, LOSSES) == [1.0] * len(LOSSES)
    assert isinstance(from_spec("constant"), Constant)
    assert isinstance(from_spec({"kind": "constant"}), Constant)


def test_step_factors():
    s = from_spec({"kind": "step", "every": 3, "gamma": 0.5})
    assert isinstance(s, Step) and s.factor == 1.0
    # gamma ** (epochs_done // 3) after epochs 1..8
    assert run(s, LOSSES[:8]) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert s.epochs_done == 8
    # every = 1: decays after each epoch; the loss plays no part
    assert run(Step(1, 0.1), [math.nan, 1.0, 1e9]) == pytest.approx([0.1, 0.01, 0.001], rel=1e-15)


def test_plateau_factors():
    s = from_spec(PLATEAU_SPEC)
    assert isinstance(s, ReduceOnPlateau)
    assert run(s, PLATEAU_LOSSES) == pytest.approx(PLATEAU_FACTORS, rel=1e-15)


def test_plateau_patience_zero_threshold_zero_nan():
    # patience 0: reduce on the first epoch that does not improve; threshold 0: any decrease improves
    s = ReduceOnPlateau(patience=0, factor=0.5, threshold=0.0)
    assert run(s, [3.0, 2.9, 2.9, 2.8, 2.8, 2.8]) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    # NaN and inf never improve; the first finite loss after them does
    s = ReduceOnPlateau(patience=1, factor=0.5, threshold=0.0)
    assert run(s, [math.nan, math.inf, 1.0, math.nan, math.nan]) == [1.0, 0.5, 0.5, 0.5, 0.25]
    # the defaults are PyTorch's: patience 10, factor 0.1, threshold 1e-4, no floor, no cooldown
    d = from_spec("plateau")
    assert d.spec == {"kind": "plateau", "patience": 10, "factor": 0.1, "threshold": 1e-4, "min_factor": 0.0,
                      "cooldown": 0}
    assert run(d, [1.0] * 12)[-2:] == [1.0, 0.1]


@pytest.mark.parametrize("spec, losses", [
    ({"kind": "constant"}, LOSSES),
    ({"kind": "step", "every": 2, "gamma": 0.7}, LOSSES),
    (PLATEAU_SPEC, PLATEAU_LOSSES),
    ({"kind": "plateau", "patience": 1, "factor": 0.3, "threshold": 0.0, "cooldown": 2}, LOSSES + [math.nan, 9.0]),
])
@pytest.mark.parametrize("cut", [0, 1, 5, 11])
def test_state_round_trip_continues_identically(spec, losses, cut):
    whole = from_spec(spec)
    expected = run(whole, losses)

    first = from_spec(spec)
    run(first, losses[:cut])
    text = json.dumps(first.state_dict(), allow_nan=False)        # plain, strict JSON
    # restore into a schedule of the same kind built with other settings: the state's settings win
    other = dict(spec)
    if spec["kind"] == "step":
        other.update(every=7, gamma=0.1)
    elif spec["kind"] == "plateau":
        other.update(patience=9, factor=0.9)
    restored = from_spec(other)
    restored.load_state_dict(json.loads(text))
    assert restored.state_dict() == first.state_dict()
    assert restored.factor == first.factor
    assert run(restored, losses[cut:]) == expected[cut:]
    assert restored.state_dict() == whole.state_dict()


def test_state_dict_contents():
    s = from_spec(PLATEAU_SPEC)
    assert s.state_dict()["best"] is None                      # inf is stored as None (strict JSON)
    run(s, PLATEAU_LOSSES[:7])
    assert s.state_dict() == {**PLATEAU_SPEC, "current_factor": 0.5, "epochs_done": 7, "best": 8.9,
                              "bad_epochs": 0, "cooldown_left": 1}
    assert Step(3, 0.5).state_dict() == {"kind": "step", "every": 3, "gamma": 0.5, "factor": 1.0, "epochs_done": 0}
    assert from_spec(s.spec).spec == s.spec


def test_load_state_dict_errors_leave_schedule_unchanged():
    s = Step(2, 0.5)
    run(s, [1.0, 1.0, 1.0])
    before = s.state_dict()
    good = dict(before)
    bad_states = [
        {**good, "kind": "plateau"},                            # another kind
        {k: v for k, v in good.items() if k != "epochs_done"},  # missing key
        {**good, "extra": 1},                                   # unknown key
        {**good, "every": 0},                                   # bad setting
        {**good, "epochs_done": -1},                            # bad progress
        {**good, "factor": 0.3},                                # factor inconsistent with the progress
        [("kind", "step")],                                     # not a dict
    ]
    for state in bad_states:
        with pytest.raises(ValueError):
            s.load_state_dict(state)
        assert s.state_dict() == before
    p = from_spec(PLATEAU_SPEC)
    for key, value in [("current_factor", 1.5), ("bad_epochs", 1.5), ("best", "x"), ("cooldown_left", -1)]:
        with pytest.raises(ValueError, match=key):
            p.load_state_dict({**p.state_dict(), key: value})


def test_from_spec_returns_schedule_itself():
    s = Step(2, 0.5)
    assert from_spec(s) is s
    assert set(schedules.KINDS) == {"constant", "step", "plateau"}


@pytest.mark.parametrize("spec, match", [
    ({"kind": "cosine"}, "unknown schedule kind 'cosine'"),
    ("exponential", "unknown schedule kind"),
    ({"every": 3, "gamma": 0.5}, "unknown schedule kind None"),
    (3, "must be a Schedule"),
    ({"kind": "step", "every": 3, "gamma": 0.5, "gama": 1}, r"unknown key\(s\) \['gama'\]"),
    ({"kind": "constant", "gamma": 0.5}, "unknown key"),
    ({"kind": "plateau", "min_lr": 0.1}, r"\['min_lr'\]"),
    ({"kind": "step", "every": 3}, r"needs \['gamma'\]"),
    ("step", r"needs \['every', 'gamma'\]"),
    ({"kind": "step", "every": 0, "gamma": 0.5}, "every"),
    ({"kind": "step", "every": 2.5, "gamma": 0.5}, "every"),
    ({"kind": "step", "every": True, "gamma": 0.5}, "every"),
    ({"kind": "step", "every": 2, "gamma": 0.0}, "gamma"),
    ({"kind": "step", "every": 2, "gamma": math.nan}, "gamma"),
    ({"kind": "step", "every": 2, "gamma": "half"}, "gamma"),
    ({"kind": "plateau", "factor": 1.0}, "factor"),
    ({"kind": "plateau", "factor": 0.0}, "factor"),
    ({"kind": "plateau", "patience": -1}, "patience"),
    ({"kind": "plateau", "threshold": -0.1}, "threshold"),
    ({"kind": "plateau", "min_factor": 2.0}, "min_factor"),
    ({"kind": "plateau", "min_factor": -1e-3}, "min_factor"),
    ({"kind": "plateau", "cooldown": 1.5}, "cooldown"),
])
def test_from_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        from_spec(spec)


def test_step_rejects_non_numbers_and_accepts_numpy_scalars():
    s = Step(np.int64(2), np.float32(0.5))
    assert s.every == 2 and isinstance(s.every, int) and isinstance(s.gamma, float)
    assert s.step(np.float32(1.0)) == 1.0
    with pytest.raises(ValueError, match="epoch_loss"):
        s.step("low")
    with pytest.raises(ValueError, match="epoch_loss"):
        s.step(None)
