"""TOML configuration files: every `engine.Config` option, the data-loading options and the outputs.

    cfg = cuptycho.config.load("run.toml")     # a RunConfig: .engine (Config), .data, .output, .simulate
    text = cuptycho.config.effective_config_toml(cfg.engine, data=cfg.data, output=cfg.output)

Schema (every key is optional; an absent key keeps the engine's default, and TOML has no null, so an
option whose default is "off" (None) is switched on by giving it)::

    epochs = 200                  # int >= 0
    engine = "gradient"           # gradient | epie | rpie | mpie (cuptycho.pie: the classical engines)
    batch = 8                     # "full", an int >= 1, or {start = 8, factor = 2, every = 20, max = 64};
                                  # absent: "full" (gradient), 1 = sequential (PIE engines)
    loss = "gaussian"             # gaussian | poisson | intensity | weighted, or [[0, "gaussian"], [100, "poisson"]]
    position_l1 = 0.0             # weight of an L1 pull of the position corrections to zero
    max_position_correction = 5.0 # pixels per axis (absent: only the object's edges limit it)
    n_object_modes = 1
    n_probe_modes = 3             # absent: as many as the initial probe has
    init_probe = "data"           # "dataset" (the file's probe guess), "data" (mean pattern), or {aperture = 12.0}
    fit_probe_scale = true
    max_divergences = 5
    seed = 0
    backend = "auto"              # auto | cpu | cuda | numpy
    dtype = "complex64"           # complex64 | complex128
    profile = false
    metrics_every = 10

    [object]                      # also [object_modes], [probe], [positions], [z]
    enabled = true
    start_epoch = 0
    lr = 0.1
    betas = [0.9, 0.999]
    eps = 1e-8
    schedule = "constant"         # or {kind = "step", every = 40, gamma = 0.5}
                                  # or {kind = "plateau", patience = 5, factor = 0.5, threshold = 1e-3, ...}
    [pie]                         # PIE engines: alpha, beta, object_step, probe_step, friction, feedback,
                                  # momentum_every, position_upsample, position_amplify, position_max_step
    [tv]                          # adaptive TV on the object: ratio, p, q, eps, reduction
    [amplitude_range]             # penalty on |object| outside [low, high]: low, high, weight
    [probe_power]                 # penalty on the probe's power: weight, target
    [constraints]                 # orthogonalize_probe, recentre_probe, zero_probe_phase, renormalise (bools),
                                  # phase_range, amplitude_range ([low, high])
    [early_stop]                  # patience, min_delta

    [data]                        # how to read the data file (keywords of cuptycho.io.load)
    path = "scan.cxi"             # the data file (the command line's DATA wins); relative to this file
    geometry_kind = "nearfield"   # farfield | nearfield
    focus_distance = 3.65e-3      # m, Fresnel-scaled near field
    propagator = "angular_spectrum"
    padding = 32                  # or [py, px]
    energy_kev = 8.7              # or energy_ev, energy (J), wavelength (m)
    detector_distance = 5.0       # m
    detector_pixel_size = 75e-6   # m, or [py, px]
    crop = [256, 256]             # and center = [row, col] or "mass" / "max"
    bin = 2
    frames = {start = 0, stop = 100, step = 1}   # or [0, 1, 2, ...]
    dark = "dark.tif"             # paths are relative to this file
    ...                           # and every other reader keyword (see `DATA_KEYS`)

    [output]
    checkpoint_every = 50         # epochs between checkpoints (0: only on SIGINT / SIGTERM)

    [simulate]                    # for `cuptycho simulate --config`: a preset and simulate() keywords
    preset = "small_farfield"
    seed = 1
    position_error = 2.0

Every problem is a `ConfigError` (a ValueError) whose message names the key, e.g.
``config run.toml: unknown key 'probe.lrr' (did you mean 'probe.lr'?)``.

Writing TOML: `dumps` is a small writer of our own (tables, scalars, arrays, inline tables: all an
effective configuration holds) rather than a dependency: the document's shape is fixed by this
module, the output layout (engine options first, one table per group, comments) is ours to choose,
and the round trip through `tomllib` is tested for every option.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import engine, pie, schedules
from .engine import Config, Group

if sys.version_info >= (3, 11):
    import tomllib
else:                                            # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ConfigError", "RunConfig", "load", "loads", "from_dict", "to_dict", "dumps", "effective_config_toml",
           "GROUPS", "DATA_KEYS", "OUTPUT_KEYS"]

GROUPS = ("object", "object_modes", "probe", "positions", "z")
GROUP_KEYS = tuple(f.name for f in dataclasses.fields(Group))
DTYPES = ("complex64", "complex128")
BACKENDS = ("auto", "numpy", "cpu", "cuda")
LOSSES = ("gaussian", "poisson", "intensity", "weighted")


class ConfigError(ValueError):
    """A configuration problem; the message names the source and the key."""


# --------------------------------------------------------------------------- value checkers
# Each checker takes (where, value) and returns the converted value or raises ConfigError.

def _typename(value):
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


class _Checker:
    def __init__(self, src):
        self.src = src

    def fail(self, key, message):
        raise ConfigError(f"{self.src}: '{key}' {message}")

    def wrong(self, key, expected, value):
        self.fail(key, f"must be {expected}, got {_typename(value)} {value!r}")

    # scalars
    def boolean(self, key, v):
        if not isinstance(v, bool):
            self.wrong(key, "true or false", v)
        return v

    def integer(self, key, v, low=None):
        if isinstance(v, bool) or not isinstance(v, int):
            self.wrong(key, "an integer", v)
        if low is not None and v < low:
            self.fail(key, f"must be >= {low}, got {v}")
        return v

    def number(self, key, v, low=None, positive=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.wrong(key, "a number", v)
        v = float(v)
        if math.isnan(v):
            self.fail(key, "must be a number, got nan")
        if positive and not v > 0:
            self.fail(key, f"must be positive, got {v!r}")
        if low is not None and v < low:
            self.fail(key, f"must be >= {low}, got {v!r}")
        return v

    def string(self, key, v, choices=None):
        if not isinstance(v, str):
            self.wrong(key, "a string", v)
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(v, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.fail(key, f"must be one of {', '.join(repr(c) for c in choices)}, got {v!r}{hint}")
        return v

    def pair(self, key, v, kind="number"):
        item = self.integer if kind == "integer" else self.number
        if not isinstance(v, list) or len(v) != 2:
            self.wrong(key, f"a pair of {kind}s [a, b]", v)
        return [item(f"{key}[{i}]", x) for i, x in enumerate(v)]

    def scalar_or_pair(self, key, v, kind="number"):
        if isinstance(v, list):
            return self.pair(key, v, kind)
        return self.integer(key, v) if kind == "integer" else self.number(key, v)

    def table(self, key, v):
        if not isinstance(v, dict):
            self.wrong(key, "a table", v)
        return v

    def known(self, prefix, table, allowed, *, elsewhere=None):
        """ConfigError for the first key of `table` not in `allowed`, suggesting the closest one."""
        for k in table:
            if k in allowed:
                continue
            name = f"{prefix}.{k}" if prefix else k
            close = difflib.get_close_matches(k, list(allowed), n=1, cutoff=0.6)
            if close:
                hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"
            else:
                homes = [t for t, keys in (elsewhere or {}).items() if k in keys and t != prefix]
                if homes:
                    hint = f" ('{k}' belongs in {', '.join(f'[{t}]' for t in homes)})"
                else:
                    choices = ", ".join(sorted(allowed))
                    hint = f" (known keys{' of [' + prefix + ']' if prefix else ''}: {choices})"
            raise ConfigError(f"{self.src}: unknown key '{name}'{hint}")


# --------------------------------------------------------------------------- engine options

_SCALAR_KEYS = ("epochs", "engine", "batch", "loss", "position_l1", "max_position_correction", "n_object_modes",
                "n_probe_modes", "init_probe", "fit_probe_scale", "max_divergences", "seed", "backend", "dtype",
                "profile", "metrics_every")
# option tables (None when absent) and their keys
_TABLES = {
    "tv": ("ratio", "start_epoch", "p", "q", "eps", "reduction"),
    "amplitude_range": ("low", "high", "weight"),
    "probe_power": ("weight", "target"),
    "early_stop": ("patience", "min_delta"),
    "constraints": engine.CONSTRAINTS,
    "pie": pie.KEYS,
}
_SCHEDULE_KEYS = {kind: ("kind", *cls._SETTINGS) for kind, cls in schedules.KINDS.items()}

# [data]: the reader keywords of cuptycho.io (read_cxi, read_tiff, read_npz and the preprocessing),
# with their TOML types. "path" is the data file itself; energy_ev / energy_kev are conveniences.
_PATH_KEYS = ("path", "dark", "positions", "mask")
DATA_KEYS = ("path", "entry", "data_path", "translation_path", "geometry_kind", "focus_distance", "propagator",
             "padding", "wavelength", "energy", "energy_ev", "energy_kev", "detector_distance",
             "detector_pixel_size", "pixel_size", "z", "mask_bits", "margin", "obj_shape", "positions",
             "position_units", "mask", "frames", "dark", "fftshift", "crop", "center", "bin", "saturation",
             "chunk_bytes")
OUTPUT_KEYS = ("checkpoint_every",)

_TOP = (*_SCALAR_KEYS, *GROUPS, *_TABLES, "data", "output", "simulate")
_ELSEWHERE = {**{g: GROUP_KEYS for g in GROUPS}, **_TABLES, "data": DATA_KEYS, "output": OUTPUT_KEYS}


@dataclass
class RunConfig:
    """A parsed configuration file.

    engine : engine.Config
    data : dict
        Keywords for `cuptycho.io.load` (paths made absolute), plus "path" when the file names the data.
    output : dict
        {"checkpoint_every": int} when given.
    simulate : dict or None
        The [simulate] table: "preset" and `simulate.simulate` keywords.
    explicit : set of str
        Dotted keys the file set (e.g. "init_probe", "probe.enabled"), so a caller can tell a default
        from a choice.
    """
    engine: Config = field(default_factory=Config)
    data: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    simulate: dict | None = None
    source: str = "config"
    explicit: set = field(default_factory=set)


def _source(path):
    return "config" if path is None else f"config {os.fspath(path)}"


def load(path) -> RunConfig:
    """Parse the TOML file at `path` (ConfigError naming the file on any problem)."""
    p = Path(os.fspath(path))
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config {p}: cannot read it ({err})") from None
    return loads(text, source=_source(p), base=p.parent)


def loads(text: str, *, source: str = "config", base=None) -> RunConfig:
    """Parse TOML text; relative paths in [data] are taken relative to `base` (default: the cwd)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML ({err})") from None
    return from_dict(doc, source=source, base=base)


def from_dict(doc: dict, *, source: str = "config", base=None) -> RunConfig:
    """A RunConfig from a parsed TOML document (or the JSON copy stored with a result or checkpoint)."""
    c = _Checker(source)
    c.table("", doc)
    c.known("", doc, _TOP, elsewhere=_ELSEWHERE)
    explicit = set()
    kw = {}
    for key in _SCALAR_KEYS:
        if key in doc:
            kw[key] = _SCALAR_PARSERS[key](c, key, doc[key])
            explicit.add(key)
    for name in GROUPS:
        if name in doc:
            table = c.table(name, doc[name])
            c.known(name, table, GROUP_KEYS, elsewhere=_ELSEWHERE)
            kw[name] = _group(c, name, table, getattr(Config(), name))
            explicit.update(f"{name}.{k}" for k in table)
    for name, keys in _TABLES.items():
        if name in doc:
            table = c.table(name, doc[name])
            if name == "tv" and "weight" in table:
                raise ConfigError(f"{source}: unknown key 'tv.weight' (the TV weight is adaptive, reset every epoch "
                                  "to ratio x data loss / TV: set 'tv.ratio')")
            c.known(name, table, keys, elsewhere=_ELSEWHERE)
            kw[name] = _TABLE_PARSERS[name](c, name, table)
            explicit.add(name)
    cfg = Config(**kw)
    try:
        cfg.check()
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    data = _data(c, doc.get("data", {}), base)
    output = _output(c, doc.get("output", {}))
    sim = _simulate(c, doc["simulate"]) if "simulate" in doc else None
    return RunConfig(engine=cfg, data=data, output=output, simulate=sim, source=source, explicit=explicit)


def _group(c, name, t, default: Group) -> Group:
    g = dataclasses.replace(default)
    if "enabled" in t:
        g.enabled = c.boolean(f"{name}.enabled", t["enabled"])
    if "start_epoch" in t:
        g.start_epoch = c.integer(f"{name}.start_epoch", t["start_epoch"], low=0)
    if "lr" in t:
        g.lr = c.number(f"{name}.lr", t["lr"], positive=True)
    if "betas" in t:
        b = c.pair(f"{name}.betas", t["betas"])
        for i, v in enumerate(b):
            if not 0 <= v < 1:
                c.fail(f"{name}.betas", f"must lie in [0, 1), got {t['betas']!r}")
        g.betas = tuple(b)
    if "eps" in t:
        g.eps = c.number(f"{name}.eps", t["eps"], positive=True)
    if "schedule" in t:
        g.schedule = _schedule(c, f"{name}.schedule", t["schedule"])
    return g


def _schedule(c, key, v):
    if isinstance(v, str):
        c.string(key, v, tuple(schedules.KINDS))
        spec = v
    elif isinstance(v, dict):
        kind = v.get("kind")
        if kind is None:
            c.fail(key, f"needs a 'kind' ({', '.join(repr(k) for k in schedules.KINDS)})")
        c.string(f"{key}.kind", kind, tuple(schedules.KINDS))
        c.known(key, v, _SCHEDULE_KEYS[kind])
        spec = dict(v)
    else:
        c.wrong(key, "a schedule name or a table such as {kind = \"step\", every = 40, gamma = 0.5}", v)
    try:
        schedules.from_spec(spec)
    except ValueError as err:
        c.fail(key, f"is not a valid schedule: {err}")
    return spec


def _batch(c, key, v):
    if isinstance(v, str):
        if v != "full":
            c.fail(key, f"must be \"full\", an integer >= 1 or a table {{start, factor, every, max}}, got {v!r}")
        return v
    if isinstance(v, dict):
        c.known(key, v, ("start", "factor", "every", "max"))
        if "start" not in v:
            c.fail(key, "needs 'start' (the first batch size)")
        out = {"start": c.integer(f"{key}.start", v["start"], low=1)}
        if "factor" in v:
            out["factor"] = c.number(f"{key}.factor", v["factor"], positive=True)
            if out["factor"] == int(out["factor"]):
                out["factor"] = int(out["factor"])
        for k in ("every", "max"):
            if k in v:
                out[k] = c.integer(f"{key}.{k}", v[k], low=1)
        return out
    if isinstance(v, bool) or not isinstance(v, int):
        c.wrong(key, "\"full\", an integer >= 1 or a table {start, factor, every, max}", v)
    return c.integer(key, v, low=1)


def _loss(c, key, v):
    if isinstance(v, str):
        return c.string(key, v, LOSSES)
    if not isinstance(v, list) or not v:
        c.wrong(key, "a loss name or an array of [epoch, name] pairs", v)
    plan = []
    for i, item in enumerate(v):
        if not isinstance(item, list) or len(item) != 2:
            c.wrong(f"{key}[{i}]", "an [epoch, name] pair", item)
        epoch = c.integer(f"{key}[{i}][0]", item[0], low=0)
        name = c.string(f"{key}[{i}][1]", item[1], LOSSES)
        plan.append((epoch, name))
    if min(e for e, _ in plan) != 0:
        c.fail(key, "must start at epoch 0 (the first pair is [0, name])")
    if len({e for e, _ in plan}) != len(plan):
        c.fail(key, "names two losses for the same epoch")
    return plan


def _init_probe(c, key, v):
    if isinstance(v, str):
        return c.string(key, v, ("dataset", "data"))
    if isinstance(v, dict):
        c.known(key, v, ("aperture",))
        if "aperture" not in v:
            c.fail(key, "as a table needs 'aperture' (the radius in pixels)")
        return {"aperture": c.number(f"{key}.aperture", v["aperture"], positive=True)}
    c.wrong(key, "\"dataset\", \"data\" or {aperture = radius_px}", v)


_SCALAR_PARSERS = {
    "epochs": lambda c, k, v: c.integer(k, v, low=0),
    "engine": lambda c, k, v: c.string(k, v, engine.ENGINES),
    "batch": _batch,
    "loss": _loss,
    "position_l1": lambda c, k, v: c.number(k, v, low=0.0),
    "max_position_correction": lambda c, k, v: c.number(k, v, positive=True),
    "n_object_modes": lambda c, k, v: c.integer(k, v, low=1),
    "n_probe_modes": lambda c, k, v: c.integer(k, v, low=1),
    "init_probe": _init_probe,
    "fit_probe_scale": lambda c, k, v: c.boolean(k, v),
    "max_divergences": lambda c, k, v: c.integer(k, v, low=0),
    "seed": lambda c, k, v: c.integer(k, v, low=0),
    "backend": lambda c, k, v: c.string(k, v, BACKENDS),
    "dtype": lambda c, k, v: c.string(k, v, DTYPES),
    "profile": lambda c, k, v: c.boolean(k, v),
    "metrics_every": lambda c, k, v: c.integer(k, v, low=1),
}


def _regulariser(c, name, table, cls, defaults=None):
    """Check the values by building the regulariser they configure."""
    try:
        cls(**{**(defaults or {}), **table})
    except (ValueError, TypeError) as err:
        c.fail(name, f"is not valid: {err}")


def _tv(c, name, t):
    from .regularisers import AdaptiveTV
    out = {}
    for k in ("ratio", "p", "q", "eps"):
        if k in t:
            out[k] = c.number(f"{name}.{k}", t[k], low=0.0 if k == "ratio" else None, positive=k != "ratio")
    if "reduction" in t:
        out["reduction"] = c.string(f"{name}.reduction", t["reduction"], ("mean", "sum"))
    if "start_epoch" in t:
        out["start_epoch"] = c.integer(f"{name}.start_epoch", t["start_epoch"], low=0)
    _regulariser(c, name, {k: v for k, v in out.items() if k not in ("ratio", "start_epoch")}, AdaptiveTV)
    return out


def _amplitude_range(c, name, t):
    from .regularisers import AmplitudeRange
    out = {k: c.number(f"{name}.{k}", t[k], low=0.0) for k in ("low", "high", "weight") if k in t}
    _regulariser(c, name, out, AmplitudeRange)
    return out


def _probe_power(c, name, t):
    from .regularisers import ProbePower
    out = {}
    if "weight" in t:
        out["weight"] = c.number(f"{name}.weight", t["weight"], low=0.0)
    if "target" in t:
        out["target"] = c.number(f"{name}.target", t["target"], positive=True)
    _regulariser(c, name, out, ProbePower, {"target": 1.0})
    return out


def _early_stop(c, name, t):
    out = {}
    if "patience" in t:
        out["patience"] = c.integer(f"{name}.patience", t["patience"], low=1)
    if "min_delta" in t:
        out["min_delta"] = c.number(f"{name}.min_delta", t["min_delta"], low=0.0)
    return out


def _constraints(c, name, t):
    out = {}
    for k, v in t.items():
        key = f"{name}.{k}"
        if k in ("phase_range", "amplitude_range"):
            lo, hi = c.pair(key, v)
            if hi < lo:
                c.fail(key, f"must be [low, high] with low <= high, got {v!r}")
            if k == "amplitude_range" and lo < 0:
                c.fail(key, f"must be non-negative, got {v!r}")
            out[k] = (lo, hi)
        else:
            out[k] = c.boolean(key, v)
    return out


def _pie(c, name, t):
    out = {}
    for k, v in t.items():
        key = f"{name}.{k}"
        out[k] = c.integer(key, v, low=1) if k == "momentum_every" else c.number(key, v)
    return out           # ranges and the engine's own keys: Config.check (cuptycho.pie.settings)


_TABLE_PARSERS = {"pie": _pie, "tv": _tv, "amplitude_range": _amplitude_range, "probe_power": _probe_power,
                  "early_stop": _early_stop, "constraints": _constraints}


# --------------------------------------------------------------------------- [data], [output], [simulate]

def _data(c, t, base) -> dict:
    c.table("data", t)
    c.known("data", t, DATA_KEYS, elsewhere=_ELSEWHERE)
    base = Path(os.getcwd()) if base is None else Path(base)
    out = {}
    for k, v in t.items():
        key = f"data.{k}"
        if k in _PATH_KEYS:
            p = Path(c.string(key, v)).expanduser()
            out[k] = os.fspath(p if p.is_absolute() else (base / p).resolve())
        elif k in ("entry", "data_path", "translation_path"):
            out[k] = c.string(key, v)
        elif k == "geometry_kind":
            out[k] = c.string(key, v, ("farfield", "nearfield"))
        elif k == "propagator":
            out[k] = c.string(key, v, ("farfield", "angular_spectrum", "fresnel"))
        elif k == "position_units":
            out[k] = c.string(key, v, ("m", "mm", "um", "nm", "px"))
        elif k in ("focus_distance", "wavelength", "energy", "energy_ev", "energy_kev", "detector_distance", "z",
                   "saturation"):
            out[k] = c.number(key, v, positive=k != "z")
        elif k in ("detector_pixel_size", "pixel_size"):
            out[k] = c.scalar_or_pair(key, v)
            if min(out[k] if isinstance(out[k], list) else [out[k]]) <= 0:
                c.fail(key, f"must be positive, got {v!r}")
        elif k in ("padding", "bin", "crop"):
            out[k] = c.scalar_or_pair(key, v, "integer")
            low = 0 if k == "padding" else 1
            if min(out[k] if isinstance(out[k], list) else [out[k]]) < low:
                c.fail(key, f"must be >= {low}, got {v!r}")
        elif k == "obj_shape":
            out[k] = c.pair(key, v, "integer")
        elif k in ("mask_bits", "margin", "chunk_bytes"):
            out[k] = c.integer(key, v, low=1 if k == "chunk_bytes" else 0)
        elif k == "fftshift":
            out[k] = c.boolean(key, v)
        elif k == "center":
            out[k] = c.string(key, v, ("mass", "max")) if isinstance(v, str) else c.pair(key, v, "integer")
        elif k == "frames":
            if isinstance(v, dict):
                c.known(key, v, ("start", "stop", "step"))
                out[k] = {s: c.integer(f"{key}.{s}", v[s]) for s in ("start", "stop", "step") if s in v}
            elif isinstance(v, list):
                out[k] = [c.integer(f"{key}[{i}]", x) for i, x in enumerate(v)]
            else:
                c.wrong(key, "an array of indices or a table {start, stop, step}", v)
    energies = [k for k in ("wavelength", "energy", "energy_ev", "energy_kev") if k in out]
    if len(energies) > 1:
        c.fail(f"data.{energies[1]}", f"conflicts with 'data.{energies[0]}': give one of wavelength, energy, "
                                      "energy_ev, energy_kev")
    return out


def reader_options(data: dict) -> dict:
    """[data] as keywords for `cuptycho.io.load` (without "path"; energies in joules, frames as a slice)."""
    from .dataset import ev_to_joule
    out = {k: v for k, v in data.items() if k != "path"}
    if "energy_ev" in out:
        out["energy"] = ev_to_joule(out.pop("energy_ev"))
    if "energy_kev" in out:
        out["energy"] = ev_to_joule(out.pop("energy_kev") * 1e3)
    if isinstance(out.get("frames"), dict):
        f = out["frames"]
        out["frames"] = slice(f.get("start"), f.get("stop"), f.get("step"))
    for k in ("padding", "bin", "crop", "center", "obj_shape", "detector_pixel_size", "pixel_size"):
        if isinstance(out.get(k), list):
            out[k] = tuple(out[k])
    return out


def _output(c, t) -> dict:
    c.table("output", t)
    c.known("output", t, OUTPUT_KEYS, elsewhere=_ELSEWHERE)
    out = {}
    if "checkpoint_every" in t:
        out["checkpoint_every"] = c.integer("output.checkpoint_every", t["checkpoint_every"], low=0)
    return out


def simulate_keys() -> tuple:
    from . import simulate as sim
    return ("preset", *inspect.signature(sim.simulate).parameters)


def _simulate(c, t) -> dict:
    from . import simulate as sim
    c.table("simulate", t)
    c.known("simulate", t, simulate_keys())
    out = dict(t)
    if "preset" in out:
        c.string("simulate.preset", out["preset"], tuple(sim.PRESETS))
    return out


# --------------------------------------------------------------------------- Config -> TOML

def _plain(v):
    """TOML-able plain values: tuples -> lists, NumPy scalars -> Python, schedules -> their spec."""
    if isinstance(v, schedules.Schedule):
        return _plain(v.spec)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):      # NumPy scalar
        return v.item()
    return v


def to_dict(config: Config, *, data: dict | None = None, output: dict | None = None,
            simulate: dict | None = None) -> dict:
    """The TOML document of `config` (every option, defaults included; None options left out)."""
    doc = {}
    for f in dataclasses.fields(Config):
        if f.name == "progress":
            continue
        v = getattr(config, f.name)
        if f.name in GROUPS:
            doc[f.name] = {k: _plain(getattr(v, k)) for k in GROUP_KEYS}
        elif v is not None:
            doc[f.name] = _plain(v)
    if data:
        doc["data"] = _plain({k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in data.items()})
    if output:
        doc["output"] = _plain(output)
    if simulate:
        doc["simulate"] = _plain(simulate)
    return doc


def effective_config_toml(config: Config, *, data: dict | None = None, output: dict | None = None,
                          simulate: dict | None = None) -> str:
    """The complete configuration of a run as TOML text (what `loads` reads back to the same Config)."""
    from . import __version__
    header = f"# cuptycho {__version__}: the effective configuration of a run (every option, defaults included)"
    return dumps(to_dict(config, data=data, output=output, simulate=simulate), header=header)


# The top-level keys written as [tables]; every other dict is written inline.
_TABLE_NAMES = (*GROUPS, *_TABLES, "data", "output", "simulate")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _string(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + "}" \
            if v else "{}"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def dumps(doc: dict, *, header: str | None = None) -> str:
    """TOML text of `doc`: top-level scalars first, then one [table] per dict named in the table list
    (groups, option tables, data, output, simulate); other dicts inline. None values are left out."""
    lines = [header] if header else []
    tables = [(k, v) for k, v in doc.items() if isinstance(v, dict) and k in _TABLE_NAMES]
    for k, v in doc.items():
        if v is not None and not (isinstance(v, dict) and k in _TABLE_NAMES):
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in tables:
        lines.append("")
        lines.append(f"[{_key(k)}]")
        for kk, vv in v.items():
            if vv is not None:
                lines.append(f"{_key(kk)} = {_value(vv)}")
    return "\n".join(lines) + "\n"
