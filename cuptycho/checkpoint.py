"""Checkpoints of a reconstruction: `Reconstruction.state_dict()` in one .npz file, written atomically.

Arrays are stored as .npz members, everything else (counters, RNG and schedule states, history)
as one JSON document in the member "state.json", so a checkpoint loads without pickle.

`load` checks every field (`validate`: types, ranges, finite arrays) so that an edited or damaged
file is one ValueError naming the field; `Reconstruction.load_state_dict` adds what only the run
knows (shapes, optimised groups, schedules) before it changes any state.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import os
import zipfile

import numpy as np

from . import backend as backends
from .atomic import open_atomic
from .backend import to_host
from .reference import LOSSES

FORMAT = "cuptycho-checkpoint-1"
# the parameter arrays every engine's state holds: name -> (dtype kind, ndim)
PARAMETERS = {"object": ("c", 3), "probe": ("c", 3), "correction": ("f", 2), "z_rel": ("f", 1)}


def save(state: dict, path) -> None:
    """Write `state` to `path` atomically: a temporary file in the same folder, then a rename."""
    meta = {k: v for k, v in state.items() if k != "arrays"}
    members = {f"array/{k}": v for k, v in state["arrays"].items()}
    members["state.json"] = np.frombuffer(json.dumps({"format": FORMAT, **meta}).encode(), dtype=np.uint8)
    with open_atomic(path, "wb", overwrite=True) as fh:
        np.savez(fh, **members)


def load(path) -> dict:
    """The state saved by `save` (ValueError when `path` is not a cuptycho checkpoint or a field of it
    is not what `save` writes)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(bytes(npz["state.json"]).decode())
            arrays = {k[len("array/"):]: npz[k] for k in npz.files if k.startswith("array/")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:    # EOFError: a truncated file
        raise ValueError(f"{os.fspath(path)} is not a readable cuptycho checkpoint ({err})") from None
    if not isinstance(meta, dict) or meta.pop("format", None) != FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a {FORMAT} file")
    state = {**meta, "arrays": arrays}
    try:
        validate(state)
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: {err}") from None
    return state


# --------------------------------------------------------------------------- field checks

def _show(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _fail(field, expected, value=None, *, got=None):
    """ValueError: the field, what it must be and what it is (`got`: a description instead of the value)."""
    raise ValueError(f"checkpoint field {field!r} must be {expected}, got {got or _show(value)}")


def _integer(field, value, low=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        _fail(field, f"an integer >= {low}", value)
    return int(value)


def _real(field, value, *, low=None, positive=False, finite=True):
    """A real number (not a bool or a string); NaN never, inf only when not `finite`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or \
            (finite and math.isinf(value)):
        _fail(field, "a finite number" if finite else "a number (not NaN)", value)
    if positive and not value > 0:
        _fail(field, "a positive number", value)
    if low is not None and value < low:
        _fail(field, f"a number >= {low}", value)
    return float(value)


def _kind(field, value, kind, expected):
    if not isinstance(value, kind):
        _fail(field, expected, value)
    return value


def _rng(field, value):
    """A NumPy bit generator's state: its name and non-negative integers a generator of that name accepts."""
    _kind(field, value, dict, "a dict (a NumPy bit generator's state)")
    name = value.get("bit_generator")
    generator = getattr(np.random, name, None) if isinstance(name, str) else None
    if not (isinstance(generator, type) and issubclass(generator, np.random.BitGenerator)):
        _fail(f"{field}.bit_generator", "the name of a NumPy bit generator (e.g. 'PCG64')", name)

    def integers(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                integers(f"{prefix}.{k}", v)
            elif k != "bit_generator":
                _integer(f"{prefix}.{k}", v)
    integers(field, value)
    try:
        generator().state = value
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        _fail(field, f"a state a {name} generator accepts ({err})", value)


_KINDS = {"c": "a complex array", "f": "a real floating-point array", "cf": "a floating-point array"}


def array(field, value, kind="cf", ndim=None, shape=None):
    """A finite, non-empty array of dtype kind `kind` ('c' complex, 'f' real, 'cf' either), with `ndim`
    dimensions or `shape` when given."""
    if not isinstance(value, np.ndarray):
        _fail(field, "an array", value)
    if value.dtype.kind not in kind:
        _fail(field, _KINDS[kind], got=f"dtype {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        _fail(field, f"a {ndim}-D array", got=f"shape {value.shape}")
    if shape is not None and value.shape != tuple(shape):
        _fail(field, f"an array of shape {tuple(shape)}", got=f"shape {value.shape}")
    if value.size == 0:
        _fail(field, "a non-empty array", got=f"shape {value.shape}")
    if not np.all(np.isfinite(value)):
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        _fail(field, "finite (no NaN or inf)", got=f"{bad} non-finite value(s) of {value.size}")
    return value


def validate(state) -> dict:
    """`state` (a `state_dict()` or what `load` read) unchanged, or ValueError naming the first field
    that is not what `Reconstruction.state_dict` writes: its type, range and, for arrays, finiteness.
    Fields added after the first release (divergence_watch, scaled_for) may be absent."""
    _kind("state", state, dict, "a dict")
    for key in ("epoch", "finished", "best", "stale", "divergences", "loss_scale", "rng", "history", "events",
                "timings", "arrays", "optimisers"):
        if key not in state:
            raise ValueError(f"checkpoint has no field {key!r}")
    _kind("engine", state.get("engine", "gradient"), str, "an engine name")
    _integer("epoch", state["epoch"])
    _kind("finished", state["finished"], bool, "true or false")
    _real("best", state["best"], finite=False)
    _integer("stale", state["stale"])
    _integer("divergences", state["divergences"])
    _real("loss_scale", state["loss_scale"], positive=True)
    _rng("rng", state["rng"])
    for i, rec in enumerate(_kind("history", state["history"], list, "a list of epoch records")):
        _kind(f"history[{i}]", rec, dict, "an epoch record (a dict)")
        _integer(f"history[{i}].epoch", rec.get("epoch"))
        _real(f"history[{i}].loss", rec.get("loss"))
    for i, event in enumerate(_kind("events", state["events"], list, "a list of events")):
        _kind(f"events[{i}]", event, dict, "an event (a dict)")
        _kind(f"events[{i}].event", event.get("event"), str, "the event's name")
    for k, v in _kind("timings", state["timings"], dict, "a dict of seconds").items():
        _real(f"timings.{k}", v, low=0)
    if state.get("tv_weight") is not None:
        _real("tv_weight", state["tv_weight"], low=0)
    if state.get("scaled_for") is not None and state["scaled_for"] not in LOSSES:
        _fail("scaled_for", f"a loss name ({', '.join(LOSSES)})", state["scaled_for"])
    watch = state.get("divergence_watch")
    if watch is not None:
        _kind("divergence_watch", watch, dict, "a dict {key, start, best}")
        key = watch.get("key")
        if not (isinstance(key, (list, tuple)) and len(key) == 2 and key[0] in LOSSES and isinstance(key[1], bool)):
            _fail("divergence_watch.key", "a [loss name, TV on] pair", key)
        for k in ("start", "best"):
            _real(f"divergence_watch.{k}", watch.get(k), low=0, finite=False)
    arrays = _kind("arrays", state["arrays"], dict, "a dict of arrays")
    for name, (kind, ndim) in PARAMETERS.items():
        if name not in arrays:
            raise ValueError(f"checkpoint has no array {name!r}")
        array(f"arrays.{name}", arrays[name], kind, ndim)
    if not np.any(arrays["probe"]):
        _fail("arrays.probe", "a probe with some power", got="zeros only")
    for name, value in arrays.items():
        if name not in PARAMETERS:
            array(f"arrays.{name}", value)
    # the detector model: counts added (>= 0) and intensity factors (> 0), as the engine keeps them
    if "background" in arrays and np.any(arrays["background"] < 0):
        _fail("arrays.background", "a background >= 0", got=f"min {float(np.min(arrays['background'])):g}")
    if "shot_scale" in arrays and np.any(arrays["shot_scale"] <= 0):
        _fail("arrays.shot_scale", "scales > 0", got=f"min {float(np.min(arrays['shot_scale'])):g}")
    for name, opt in _kind("optimisers", state["optimisers"], dict, "a dict of optimiser states").items():
        field = f"optimisers.{name}"
        _kind(field, opt, dict, "a dict {step, lr_scale, unit, schedule}")
        for k in ("step", "lr_scale", "unit", "schedule"):
            if k not in opt:
                raise ValueError(f"checkpoint field {field!r} has no {k!r}")
        _integer(f"{field}.step", opt["step"])
        _real(f"{field}.lr_scale", opt["lr_scale"], positive=True)
        _real(f"{field}.unit", opt["unit"], positive=True)
        _kind(f"{field}.schedule", opt["schedule"], dict, "a schedule's state (a dict)")
        for k in ("m", "v"):
            if f"{name}.{k}" not in arrays:
                raise ValueError(f"checkpoint has no array '{name}.{k}' (the optimiser state of {name!r})")
    pie = state.get("pie")
    if pie is not None:
        _kind("pie", pie, dict, "a dict {step_scale, since_momentum}")
        _real("pie.step_scale", pie.get("step_scale"), positive=True)
        _integer("pie.since_momentum", pie.get("since_momentum"))
    cli = state.get("cli")
    if cli is not None:
        _kind("cli", cli, dict, "a dict {config, data, output}")
        _kind("cli.config", cli.get("config"), dict, "a configuration (a dict)")
        _kind("cli.data", cli.get("data"), str, "a path")
        _kind("cli.output", cli.get("output"), str, "a path")
    return state


class Resumable:
    """What a `Reconstruction` saves and takes back: `state_dict` and `load_state_dict` (checked
    field by field against `validate` and then against the run before anything changes). A mixin of
    the engine (it reads the engine's attributes), kept here beside the format it fills."""

    OPTIONAL_ARRAYS = ("excluded",)      # absent from checkpoints written before it existed: none left out

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly: parameters, optimiser and schedule
        states, the minibatch RNG, the loss scale, the TV weight, counters and the history.
        Arrays are NumPy; everything else is JSON-serialisable."""
        state = {
            "engine": self.cfg.engine, "epoch": self.epoch, "finished": self.finished, "best": self.best,
            "stale": self.stale, "divergences": self.divergences, "loss_scale": self.loss_scale,
            "scaled_for": self.scaled_for, "divergence_watch": copy.deepcopy(self.watch),
            "rng": self.rng.bit_generator.state,
            "history": self.history, "events": self.events, "timings": self.timings,
            "tv_weight": self.regs["tv"][0].weight if "tv" in self.regs else None,
            "arrays": {"object": to_host(self.obj), "probe": to_host(self.probe), "correction": self.correction.copy(),
                       "z_rel": self.z_rel.copy(), **({"affine": self.affine.copy()} if "scan" in self.opt else {}),
                       **({"excluded": self.excluded.astype(np.float64)} if self.cfg.position_search else {}),
                       **({"focus_rel": self.focus_rel.copy()} if "focus" in self.opt else {}),
                       **self.detector_arrays()},
            "optimisers": {},
        }
        for name, opt in self.opt.items():
            state["arrays"][f"{name}.m"], state["arrays"][f"{name}.v"] = to_host(opt.m), to_host(opt.v)
            state["optimisers"][name] = {"step": opt.step_count, "lr_scale": opt.lr_scale, "unit": opt.unit,
                                         "schedule": opt.schedule.state_dict()}
        return state

    def load_state_dict(self, state: dict):
        """Continue from `state_dict()` output (same dataset and configuration). Every field is checked
        first (one ValueError naming it): nothing changes unless the whole state fits this run."""
        validate(state)
        self.check_state(state)
        self.apply_state(state)

    def _array_specs(self) -> dict:
        """The arrays of this run's state: name -> (shape, dtype kind)."""
        specs = {"object": (self.obj.shape, "c"), "probe": (self.probe.shape, "c"),
                 "correction": (self.correction.shape, "f"), "z_rel": (self.z_rel.shape, "f")}
        if "scan" in self.opt:
            specs["affine"] = ((2, 2), "f")
        if self.cfg.position_search:
            specs["excluded"] = (self.excluded.shape, "f")        # 1: left out of the loss
        if "focus" in self.opt:
            specs["focus_rel"] = ((1,), "f")
        for name, value in self.detector_arrays().items():
            specs[name] = (value.shape, "f")
        for name, opt in self.opt.items():
            specs[f"{name}.m"], specs[f"{name}.v"] = (opt.m.shape, opt.m.dtype.kind), (opt.v.shape, opt.v.dtype.kind)
        return specs

    def check_state(self, state: dict):
        """ValueError when a (format-checked, `checkpoint.validate`) state does not fit this run: the
        engine, the arrays' shapes, the optimised groups, their schedules, the RNG, the losses."""
        saved_engine = state.get("engine", "gradient")
        if saved_engine != self.cfg.engine:
            raise ValueError(f"checkpoint is of a run of the {saved_engine!r} engine; this run uses "
                             f"{self.cfg.engine!r}")
        arrays = state["arrays"]
        if arrays["object"].shape != self.obj.shape or arrays["probe"].shape != self.probe.shape or \
                arrays["correction"].shape != self.correction.shape:
            raise ValueError(f"checkpoint holds an object {arrays['object'].shape}, a probe {arrays['probe'].shape} "
                             f"and {len(arrays['correction'])} positions; this run has {self.obj.shape}, "
                             f"{self.probe.shape} and {len(self.correction)}")
        if set(state["optimisers"]) != set(self.opt):
            raise ValueError(f"checkpoint optimises {sorted(state['optimisers'])}, this run {sorted(self.opt)}: "
                             "the configuration differs (e.g. n_object_modes)")
        specs = self._array_specs()
        if set(arrays) - set(specs):
            raise ValueError(f"checkpoint holds arrays this run has none of: {sorted(set(arrays) - set(specs))}")
        for name, (shape, kind) in specs.items():
            if name not in arrays:
                if name in self.OPTIONAL_ARRAYS:
                    continue
                raise ValueError(f"checkpoint has no array {name!r}")
            array(f"arrays.{name}", arrays[name], kind, shape=shape)
        for name, opt in self.opt.items():
            trial = copy.deepcopy(opt.schedule)              # checked on a copy: this run's is left as it is
            try:
                trial.load_state_dict(state["optimisers"][name]["schedule"])
            except (TypeError, ValueError, KeyError) as err:
                raise ValueError(f"checkpoint field 'optimisers.{name}.schedule' does not fit this run's "
                                 f"{name}.schedule: {err}") from None
        generator = type(self.rng.bit_generator).__name__
        if state["rng"]["bit_generator"] != generator:
            raise ValueError(f"checkpoint field 'rng' is the state of a {state['rng']['bit_generator']} generator; "
                             f"this run draws with {generator}")
        losses = {name for _, name in self.loss_plan}
        watch = state.get("divergence_watch")
        for field, name in (("scaled_for", state.get("scaled_for")),
                            ("divergence_watch.key", None if watch is None else watch["key"][0])):
            if name is not None and name not in losses:
                raise ValueError(f"checkpoint field {field!r} names the loss {name!r}, which this run's loss "
                                 f"({self.cfg.loss!r}) never uses")

    def apply_state(self, state: dict):
        """Take a state `check_state` accepted."""
        arrays = state["arrays"]
        dev = (lambda a: backends.to_device(self.device, a))
        self.obj = dev(arrays["object"].astype(self.dtype))
        self.probe = dev(arrays["probe"].astype(self.dtype))
        self.correction = arrays["correction"].astype(np.float64)
        self.z_rel = arrays["z_rel"].astype(np.float64)
        if "affine" in arrays:
            self.affine = arrays["affine"].astype(np.float64)
        self.excluded = arrays["excluded"] > 0.5 if "excluded" in arrays else np.zeros(len(self.correction), bool)
        if "focus_rel" in arrays:
            self.focus_rel = arrays["focus_rel"].astype(np.float64)
        self.apply_detector_arrays(arrays)
        for name, opt in self.opt.items():
            o = state["optimisers"][name]
            host = name in self.HOST_GROUPS
            opt.m = arrays[f"{name}.m"] if host else dev(arrays[f"{name}.m"])
            opt.v = arrays[f"{name}.v"] if host else dev(arrays[f"{name}.v"])
            opt.step_count, opt.lr_scale, opt.unit = int(o["step"]), float(o["lr_scale"]), float(o["unit"])
            opt.schedule.load_state_dict(o["schedule"])
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.finished, self.best = int(state["epoch"]), bool(state["finished"]), float(state["best"])
        self.stale, self.divergences = int(state["stale"]), int(state["divergences"])
        self.loss_scale = float(state["loss_scale"])
        # older checkpoints: the loss the last epoch used; no watch (the resumed run measures its start)
        self.scaled_for = state.get("scaled_for") or self.loss_name(max(self.epoch - 1, 0))
        watch = state.get("divergence_watch")
        self.watch = None if watch is None else {"key": list(watch["key"]), "start": float(watch["start"]),
                                                 "best": float(watch["best"])}
        self._rollback, self._pending = None, None
        self.history, self.events, self.timings = list(state["history"]), list(state["events"]), dict(state["timings"])
        if state.get("tv_weight") is not None and "tv" in self.regs:
            self.regs["tv"][0].weight = state["tv_weight"]

