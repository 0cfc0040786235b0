"""TOML configuration files: every option of `cuptycho.settings` (the schema), read and written.

    run = cuptycho.config.load("run.toml")     # a RunConfig: .config (Config), .data, .output, .simulate
    text = cuptycho.config.effective_config_toml(run.config, data=run.data, output=run.output)

Nothing here declares an option: the reader and the writer walk the fields of `settings.Config`,
`settings.Group`, the option-table dataclasses and `settings.DataOptions` / `OutputOptions`, so a
key added there is read, written and accepted by `--set` without a line here.

Schema (every key is optional; an absent key keeps the engine's default, and TOML has no null, so an
option whose default is "off" (None) is switched on by giving it)::

    epochs = 200                  # int >= 0
    engine = "gradient"           # gradient | epie | rpie | mpie (cuptycho.pie: the classical engines)
    batch = 8                     # "full", an int >= 1, or {start = 8, factor = 2, every = 20, max = 64};
                                  # absent: "full" (gradient), 1 = sequential (PIE engines)
    loss = "gaussian"             # gaussian | poisson | intensity | weighted, or [[0, "gaussian"], [100, "poisson"]]
    position_l1 = 0.0             # weight of an L1 pull of the position corrections to zero
    max_position_correction = 5.0 # pixels per axis (absent: only the object's edges limit it)
    max_scan_scale = 0.05         # [scan]: I + A's singular values within 1 +- this (absent: unbounded)
    n_object_modes = 1
    n_probe_modes = 3             # absent: as many as the initial probe has
    init_probe = "data"           # "dataset" (the file's probe guess), "data" (mean pattern), or {aperture = 12.0}
    fit_probe_scale = true
    max_divergences = 5           # rollbacks to the best state before the run ends as diverged
    divergence_factor = 10.0      # > 1: a loss this many times the best so far diverged (inf: only NaN / inf)
    seed = 0
    backend = "auto"              # auto | cpu | cuda | numpy
    dtype = "complex64"           # complex64 | complex128
    profile = false
    metrics_every = 10

    [object]                      # also [object_modes], [probe], [positions], [scan], [z]
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
effective configuration holds) rather than a dependency: the document's shape is fixed by the
schema, the output layout (engine options first, one table per group, comments) is ours to choose,
and the round trip through `tomllib` is tested for every option.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import schedules
from ._version import __version__
from .settings import GROUPS, SECTIONS, TABLES, Checker, Choice, Config, DataOptions, Group, keys_of, table_value

if sys.version_info >= (3, 11):
    import tomllib
else:                                            # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ConfigError", "RunConfig", "load", "loads", "from_dict", "to_dict", "dumps", "effective_config_toml",
           "GROUPS", "DATA_KEYS", "OUTPUT_KEYS"]

DATA_KEYS = keys_of(DataOptions)
OUTPUT_KEYS = keys_of(SECTIONS["output"])
_TOP = (*keys_of(Config), *SECTIONS, "simulate")
_ELSEWHERE = {**{g: keys_of(Group) for g in GROUPS}, **{t: keys_of(cls) for t, cls in TABLES.items()},
              **{s: keys_of(cls) for s, cls in SECTIONS.items()}}


class ConfigError(ValueError):
    """A configuration problem; the message names the source and the key."""


@dataclass
class RunConfig:
    """A parsed configuration file.

    config : settings.Config
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
    config: Config = field(default_factory=Config)
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
    try:
        return _from_dict(doc, source, base)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None


def _from_dict(doc, source, base):
    from . import engines                       # what the chosen engine can honour (a higher floor)

    c = Checker(quoted=True, elsewhere=_ELSEWHERE)
    if not isinstance(doc, dict):
        c.wrong("config", "a table", doc)
    c.unknown("", doc, _TOP, elsewhere=_ELSEWHERE)
    explicit, kw = set(), {}
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for key in keys_of(Config):
        if key not in doc:
            continue
        value = fields[key].metadata["kind"](c, key, doc[key])
        if key in GROUPS:
            kw[key] = dataclasses.replace(getattr(Config(), key), **value)
            explicit.update(f"{key}.{k}" for k in value)
        else:
            kw[key] = value
            explicit.add(key)
    cfg = Config(**kw)
    engines.check(cfg)
    data = _data(c, doc.get("data", {}), base)
    output = table_value(c, "output", SECTIONS["output"], doc.get("output", {}))
    sim = _simulate(c, doc["simulate"]) if "simulate" in doc else None
    return RunConfig(config=cfg, data=data, output=output, simulate=sim, source=source, explicit=explicit)


def _data(c, t, base) -> dict:
    out = table_value(c, "data", DataOptions, t)
    base = Path(os.getcwd()) if base is None else Path(base)
    for k in DataOptions.PATHS:
        if k in out:
            p = Path(out[k]).expanduser()
            out[k] = os.fspath(p if p.is_absolute() else (base / p).resolve())
    return out


def simulate_keys() -> tuple:
    from . import simulate as sim
    return ("preset", *inspect.signature(sim.simulate).parameters)


def _simulate(c, t) -> dict:
    from . import simulate as sim
    if not isinstance(t, dict):
        c.wrong("simulate", "a table", t)
    c.unknown("simulate", t, simulate_keys())
    out = dict(t)
    if "preset" in out:
        Choice(tuple(sim.PRESETS))(c, "simulate.preset", out["preset"])
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
    for name in keys_of(Config):
        v = getattr(config, name)
        if name in GROUPS:
            doc[name] = {k: _plain(getattr(v, k)) for k in keys_of(Group)}
        elif v is not None:
            doc[name] = _plain(v)
    for name, value in (("data", data), ("output", output), ("simulate", simulate)):
        if value:
            doc[name] = _plain({k: (os.fspath(x) if isinstance(x, os.PathLike) else x) for k, x in value.items()})
    return doc


def effective_config_toml(config: Config, *, data: dict | None = None, output: dict | None = None,
                          simulate: dict | None = None) -> str:
    """The complete configuration of a run as TOML text (what `loads` reads back to the same Config)."""
    header = f"# cuptycho {__version__}: the effective configuration of a run (every option, defaults included)"
    return dumps(to_dict(config, data=data, output=output, simulate=simulate), header=header)


def parse_assignment(text: str) -> tuple:
    """(key, value) from the command line's ``--set KEY=VALUE``: VALUE is a TOML value, and a bare
    word is a string (``--set engine=rpie``)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. probe.lr=0.05")
    try:
        return key, tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value.strip()


def override(doc: dict, key: str, value) -> dict:
    """A copy of the TOML document `doc` with the dotted `key` (``table.key`` or ``key``) set to
    `value`; `from_dict` then checks it like any key of a file."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
    table, _, name = key.rpartition(".")
    if "." in table:
        raise ConfigError(f"--set {key}: a key has at most one dot (table.key)")
    if not table:
        out[name] = value
    elif isinstance(out.setdefault(table, {}), dict):
        out[table][name] = value
    else:
        raise ConfigError(f"--set {key}: '{table}' is not a table")
    return out


# The top-level keys written as [tables]; every other dict is written inline.
_TABLE_NAMES = (*GROUPS, *TABLES, *SECTIONS, "simulate")
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
