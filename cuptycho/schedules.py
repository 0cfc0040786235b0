"""Learning-rate schedules: stateful multipliers of a parameter group's base learning rate.

A schedule holds `factor`, the multiplier for the coming epoch (1.0 at the start). The engine
calls `step(epoch_loss)` once at the end of every epoch; it updates the state and returns the
factor for the next epoch. Schedules are checkpointable: `state_dict()` is a dict of plain
Python types (JSON-serialisable, strict JSON: no inf or NaN) holding the kind, the settings and
the progress, and `load_state_dict(d)` restores it, so a schedule restored mid-way continues
exactly as the original would have.

Kinds (`from_spec` builds them from a dict such as ``{"kind": "step", "every": 10, "gamma": 0.5}``):

- ``"constant"`` (`Constant`): factor 1 for ever.
- ``"step"`` (`Step`): factor = gamma ** (epochs_done // every).
- ``"plateau"`` (`ReduceOnPlateau`): multiply by `factor` when the loss has not improved by a
  relative `threshold` for more than `patience` epochs (PyTorch's ReduceLROnPlateau, mode "min",
  threshold_mode "rel"), never below `min_factor`, with an optional `cooldown`.
"""
from __future__ import annotations

import math


from .validation import integer, real_number

__all__ = ["Schedule", "Constant", "Step", "ReduceOnPlateau", "KINDS", "from_spec"]


# --------------------------------------------------------------------------- argument checks

def _loss(value):
    """The epoch loss as a float; NaN and inf are allowed (they never count as an improvement)."""
    if isinstance(value, bool):
        raise ValueError(f"epoch_loss must be a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"epoch_loss must be a real number, got {value!r}") from None


# --------------------------------------------------------------------------- schedules

class Schedule:
    """Base class. Subclasses set `kind` and `_SETTINGS`, and implement `_advance(loss)`.

    Attributes
    ----------
    factor : float
        Multiplier of the base learning rate for the coming epoch.
    epochs_done : int
        Number of `step` calls so far.
    """

    kind = ""
    _SETTINGS: tuple = ()      # constructor keywords, in order
    _STATE: tuple = ("factor", "epochs_done")

    def __init__(self):
        self.factor = 1.0
        self.epochs_done = 0

    def step(self, epoch_loss: float) -> float:
        """Record the end of an epoch with loss `epoch_loss`; return the factor for the next epoch."""
        loss = _loss(epoch_loss)
        self.epochs_done += 1
        self._advance(loss)
        return self.factor

    def _advance(self, loss):
        raise NotImplementedError

    @property
    def spec(self) -> dict:
        """The settings as a `from_spec` dict (no progress)."""
        return {"kind": self.kind, **{name: getattr(self, name) for name in self._SETTINGS}}

    def state_dict(self) -> dict:
        """Settings and progress as plain Python types (strict-JSON-serialisable)."""
        state = {name: getattr(self, name) for name in self._STATE}
        return {**self.spec, **{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                for k, v in state.items()}}

    def load_state_dict(self, d: dict) -> None:
        """Restore settings and progress from `state_dict()` output (as PyTorch, the settings in `d` win).

        Raises ValueError for another kind, missing or unknown keys, or bad values; on error the
        schedule is left unchanged.
        """
        if not isinstance(d, dict):
            raise ValueError(f"state must be a dict from state_dict(), got {type(d).__name__}")
        if d.get("kind") != self.kind:
            raise ValueError(f"state is for a schedule of kind {d.get('kind')!r}, not {self.kind!r}")
        expected = {"kind", *self._SETTINGS, *self._STATE}
        missing, unknown = expected - set(d), set(d) - expected
        if missing or unknown:
            raise ValueError(f"{self.kind} schedule state: missing keys {sorted(missing)}, "
                             f"unknown keys {sorted(unknown)}")
        fresh = type(self)(**{name: d[name] for name in self._SETTINGS})     # validates the settings
        fresh._load_progress(d)
        self.__dict__.update(fresh.__dict__)

    def _load_progress(self, d):
        self.epochs_done = integer("epochs_done", d["epochs_done"], 0)
        self._advance(math.nan)        # the factor follows from the progress (no loss is used)
        factor = real_number("factor", d["factor"], low=0.0, low_open=True)
        if abs(factor - self.factor) > 1e-12 * self.factor:
            raise ValueError(f"{self.kind} schedule state: factor {factor!r} does not match "
                             f"{self.factor!r} after {self.epochs_done} epochs")

    def __repr__(self):
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._SETTINGS)
        return f"{type(self).__name__}({settings})  # factor={self.factor!r}, epochs_done={self.epochs_done}"


class Constant(Schedule):
    """Factor 1 for ever (the base learning rate unchanged)."""

    kind = "constant"

    def _advance(self, loss):
        pass


class Step(Schedule):
    """Step decay: factor = gamma ** (epochs_done // every).

    Parameters
    ----------
    every : int >= 1
        Epochs between decays.
    gamma : float > 0
        Multiplier applied every `every` epochs (< 1 decays).
    """

    kind = "step"
    _SETTINGS = ("every", "gamma")

    def __init__(self, every, gamma):
        super().__init__()
        self.every = integer("every", every, 1)
        self.gamma = real_number("gamma", gamma, low=0.0, low_open=True)

    def _advance(self, loss):
        self.factor = self.gamma ** (self.epochs_done // self.every)


class ReduceOnPlateau(Schedule):
    """Reduce the factor when the loss stops improving (PyTorch ReduceLROnPlateau, mode "min", "rel").

    After each epoch: the loss improves when loss < best * (1 - threshold) (the first finite loss
    always does); then best = loss and the bad-epoch count is reset, else the count grows by one.
    During a cooldown (the `cooldown` epochs after a reduction) the count is held at 0. When the
    count exceeds `patience`, factor = max(factor * `factor`, min_factor), the count is reset and
    the cooldown starts. NaN or inf losses are never an improvement. The relative test assumes
    losses >= 0 (as cuptycho's are).

    Parameters
    ----------
    patience : int >= 0
        Epochs without improvement tolerated before reducing (0: reduce after the first).
    factor : float in (0, 1)
        Multiplier of a reduction.
    threshold : float >= 0
        Relative improvement needed to count as better.
    min_factor : float in [0, 1]
        Lower bound of the factor.
    cooldown : int >= 0
        Epochs after a reduction during which bad epochs are not counted.
    """

    kind = "plateau"
    _SETTINGS = ("patience", "factor", "threshold", "min_factor", "cooldown")
    _STATE = ("current_factor", "epochs_done", "best", "bad_epochs", "cooldown_left")

    def __init__(self, patience=10, factor=0.1, threshold=1e-4, min_factor=0.0, cooldown=0):
        super().__init__()
        self.patience = integer("patience", patience, 0)
        self.reduction = real_number("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
        self.threshold = real_number("threshold", threshold, low=0.0)
        self.min_factor = real_number("min_factor", min_factor, low=0.0, high=1.0)
        self.cooldown = integer("cooldown", cooldown, 0)
        self.best = math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    # The setting `factor` (the reduction multiplier, PyTorch's name) shares its name with the
    # schedule's current factor: `spec` and `state_dict` store the setting under "factor" and the
    # current multiplier under "current_factor".
    @property
    def spec(self) -> dict:
        return {"kind": self.kind, "patience": self.patience, "factor": self.reduction,
                "threshold": self.threshold, "min_factor": self.min_factor, "cooldown": self.cooldown}

    @property
    def current_factor(self):
        return self.factor

    def state_dict(self) -> dict:
        return {**self.spec, "current_factor": self.factor, "epochs_done": self.epochs_done,
                "best": None if not math.isfinite(self.best) else self.best,
                "bad_epochs": self.bad_epochs, "cooldown_left": self.cooldown_left}

    def _load_progress(self, d):
        self.factor = real_number("current_factor", d["current_factor"], low=0.0, high=1.0)
        self.epochs_done = integer("epochs_done", d["epochs_done"], 0)
        self.best = math.inf if d["best"] is None else real_number("best", d["best"])
        self.bad_epochs = integer("bad_epochs", d["bad_epochs"], 0)
        self.cooldown_left = integer("cooldown_left", d["cooldown_left"], 0)

    def _advance(self, loss):
        if loss < self.best * (1.0 - self.threshold):     # False for NaN; inf * (1 - t) = inf
            self.best = loss
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.factor = max(self.factor * self.reduction, self.min_factor)
            self.cooldown_left = self.cooldown
            self.bad_epochs = 0

    def __repr__(self):
        settings = ", ".join(f"{k}={v!r}" for k, v in self.spec.items() if k != "kind")
        return f"ReduceOnPlateau({settings})  # factor={self.factor!r}, epochs_done={self.epochs_done}"


KINDS = {cls.kind: cls for cls in (Constant, Step, ReduceOnPlateau)}


def from_spec(spec) -> Schedule:
    """A schedule from a specification.

    Parameters
    ----------
    spec : Schedule, None, str or dict
        A Schedule is returned as it is (the same object, with its progress). None and
        ``"constant"`` give `Constant()`; another kind name gives that kind with its defaults
        (``"plateau"``; ``"step"`` needs `every` and `gamma`, so only as a dict). A dict has
        ``"kind"`` plus the keywords of that kind's class, e.g. ``{"kind": "step", "every": 10,
        "gamma": 0.5}`` or ``{"kind": "plateau", "patience": 5, "factor": 0.5, "threshold": 1e-3,
        "min_factor": 1e-4}``.

    Raises
    ------
    ValueError
        Unknown kind, unknown or missing keys, or bad values (the message names them).
    """
    if isinstance(spec, Schedule):
        return spec
    if spec is None:
        return Constant()
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"a schedule spec must be a Schedule, None, a kind name or a dict, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; choose one of {tuple(KINDS)}")
    cls = KINDS[kind]
    settings = {k: v for k, v in spec.items() if k != "kind"}
    unknown = set(settings) - set(cls._SETTINGS)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} for a {kind!r} schedule; "
                         f"allowed: {list(cls._SETTINGS)}")
    try:
        return cls(**settings)
    except TypeError:      # a required setting is missing
        missing = [k for k in cls._SETTINGS if k not in settings]
        raise ValueError(f"a {kind!r} schedule needs {missing}") from None
