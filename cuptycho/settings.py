"""Every option of a reconstruction, declared once.

`Config` and `Group` are dataclasses; each option table (`[tv]`, `[pie]`, `[constraints]`, ...,
and `[data]` / `[output]` of a configuration file) is a dataclass too. Their fields ARE the
schema: each carries its kind (what values it takes: `validation.Bool`, `Int`, `Real`, `Choice`,
`Pair`, ...), and

- `Config.check` validates Python values with those kinds (messages name ``probe.lr``);
- `cuptycho.config` reads and writes TOML by walking the same fields (messages name
  ``'probe.lr'`` and the file);
- `cuptycho reconstruct --set KEY=VALUE` accepts exactly the dotted keys of `keys()`.

Option tables stay plain dicts in `Config` (``Config(tv={"ratio": 0.1})``: only the keys a user
gives, so a configuration round-trips as written); `table(cls, value)` is the typed view with
every default filled in, which is what the engines read.

What each engine can honour (a PIE engine refines no z and knows only the gaussian loss) is the
engine's own declaration (`cuptycho.engines.check`); this module knows only the engines' names.
"""
from __future__ import annotations

import contextlib
import dataclasses
import numbers
from dataclasses import dataclass
from typing import Callable

from . import schedules
from .budget import parse_size
from .geometry import PROPAGATORS
from .reference import LOSSES
from .tables import (ENGINES, PIE, PIE_ENGINES, TV, AmplitudeRange, BatchGrowth, Constraints, EarlyStop,
                     FocusSearch, PositionSearch, ProbePower, pie_settings)
from .units import GEOMETRY_KINDS, LENGTH_UNITS, PIXEL_UNITS
from .validation import (BACKENDS, COMPLEX_DTYPES, Bool, Checker, Choice, Custom, Int, Maybe, Pair, Real, ScalarOrPair,
                         TableOf, Text, fields_of, keys_of, option, table, table_value)

DTYPES = tuple(str(d) for d in COMPLEX_DTYPES)
POSITION_UNITS = (*LENGTH_UNITS, *PIXEL_UNITS)


# --------------------------------------------------------------------------- grammars of their own

def _schedule(c, key, v):
    if isinstance(v, schedules.Schedule):
        return v
    if isinstance(v, str):
        Choice(tuple(schedules.KINDS))(c, key, v)
    elif isinstance(v, dict):
        kind = v.get("kind")
        if kind is None:
            c.fail(key, f"needs a 'kind' ({', '.join(repr(k) for k in schedules.KINDS)})")
        Choice(tuple(schedules.KINDS))(c, f"{key}.kind", kind)
        c.unknown(key, v, ("kind", *schedules.KINDS[kind]._SETTINGS))
        v = dict(v)
    else:
        c.wrong(key, "a schedule name or a table such as {kind = \"step\", every = 40, gamma = 0.5}", v)
    try:
        schedules.from_spec(v)
    except ValueError as err:
        c.fail(key, f"is not a valid schedule: {err}")
    return v


def _betas(c, key, v):
    out = Pair()(c, key, v)
    if not all(0 <= b < 1 for b in out):
        c.fail(key, f"must lie in [0, 1), got {list(v)!r}")
    return out


_BATCH = "\"full\", an integer >= 1 or a table {start, factor, every, max}"


def _batch(c, key, v):
    if isinstance(v, str):
        if v != "full":
            c.fail(key, f"must be {_BATCH}, got {v!r}")
        return v
    if isinstance(v, dict):
        return table_value(c, key, BatchGrowth, v)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        c.wrong(key, _BATCH, v)
    return Int(low=1)(c, key, v)


def _loss(c, key, v):
    if isinstance(v, str):
        return Choice(LOSSES)(c, key, v)
    if not isinstance(v, (list, tuple)) or not v:
        c.wrong(key, "a loss name or an array of [epoch, name] pairs", v)
    plan = []
    for i, item in enumerate(v):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            c.wrong(f"{key}[{i}]", "an [epoch, name] pair", item)
        plan.append((Int(low=0)(c, f"{key}[{i}][0]", item[0]), Choice(LOSSES)(c, f"{key}[{i}][1]", item[1])))
    if min(e for e, _ in plan) != 0:
        c.fail(key, "must start at epoch 0 (the first pair is [0, name])")
    if len({e for e, _ in plan}) != len(plan):
        c.fail(key, "names two losses for the same epoch")
    return plan


def _init_probe(c, key, v):
    if isinstance(v, str):
        return Choice(("dataset", "data"))(c, key, v)
    if isinstance(v, dict):
        c.unknown(key, v, ("aperture",))
        if "aperture" not in v:
            c.fail(key, "as a table needs 'aperture' (the radius in pixels)")
        return {"aperture": Real(positive=True)(c, f"{key}.aperture", v["aperture"])}
    c.wrong(key, "\"dataset\", \"data\" or {aperture = radius_px}", v)


def _frames(c, key, v):
    if isinstance(v, dict):
        c.unknown(key, v, ("start", "stop", "step"))
        return {s: Int()(c, f"{key}.{s}", v[s]) for s in ("start", "stop", "step") if s in v}
    if isinstance(v, (list, tuple)):
        return [Int()(c, f"{key}[{i}]", x) for i, x in enumerate(v)]
    c.wrong(key, "an array of indices or a table {start, stop, step}", v)


def _center(c, key, v):
    return Choice(("mass", "max"))(c, key, v) if isinstance(v, str) else Pair(Int(), as_tuple=False)(c, key, v)


def _stream(c, key, v):
    if v == "auto" or isinstance(v, bool):
        return v
    c.wrong(key, "'auto', true or false", v)


def _size(c, key, v):
    """A byte count: an integer, or text with a suffix ("8G", "512 MiB")."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return v
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            return parse_size(v) and v
    c.wrong(key, "a number of bytes, optionally with a suffix K, M, G or T (e.g. '8G')", v)


def _at_least(kind, low=None):
    """A scalar-or-pair whose every entry is >= low (data padding, bin, crop), or > 0 without a low
    (pixel sizes)."""
    def check(c, key, v):
        out = ScalarOrPair(kind)(c, key, v)
        values = out if isinstance(out, list) else [out]
        if low is None and min(values) <= 0:
            c.fail(key, f"must be positive, got {v!r}")
        if low is not None and min(values) < low:
            c.fail(key, f"must be >= {low}, got {v!r}")
        return out
    return Custom(check)


# --------------------------------------------------------------------------- the groups and Config

@dataclass
class Group:
    """Optimiser settings of one parameter group.

    lr is a step size per Adam update: in transmission units for the object (|O| ~ 1), in pixels
    for positions, and relative for the probe (in units of the initial probe's RMS amplitude, which
    scales with the photon count) and for z (a step of lr changes z by about lr * z0).
    """
    enabled: bool = option(True, Bool(), example=False)
    start_epoch: int = option(0, Int(low=0), example=3)
    lr: float = option(1e-2, Real(positive=True), example=0.2)
    betas: tuple = option((0.9, 0.999), Custom(_betas), example=(0.8, 0.99))
    eps: float = option(1e-8, Real(positive=True), example=1e-6)
    schedule: object = option("constant", Custom(_schedule), example={"kind": "step", "every": 40, "gamma": 0.5})


def _group_check(c, key, v):
    if not c.quoted:                                # Python: a Group, its fields checked
        if not isinstance(v, Group):
            c.fail(key, f"must be a Group, got {type(v).__name__}")
        for f in fields_of(Group):
            f.metadata["kind"](c, f"{key}.{f.name}", getattr(v, f.name))
        return v
    return table_value(c, key, Group, v)          # a file: the table of the keys given


def _group(**kw):
    return option(lambda: Group(**kw), Custom(_group_check))


@dataclass
class Config:
    """Everything `reconstruct` does, with defaults that suit a far-field dataset.

    engine : "gradient" (minibatch Adam on the hand-derived gradients, `cuptycho.engine`) or one
        of the classical engines "epie", "rpie", "mpie" (`cuptycho.pie`: the PIE updates on the
        same kernels; object, probe and position refinement, not z or regularisers).
    pie : settings of the PIE engines (the fields of `PIE`), e.g. {"alpha": 0.1, "beta": 1.0}; an
        absent key takes the engine's default.
    batch : "full", an int, or {"start": b0, "factor": f, "every": n, "max": bmax} (`BatchGrowth`):
        a growing minibatch size b0 * f**(epoch // n) capped at bmax (DAP: small batches first).
        None: the engine's default, "full" for the gradient engine and 1 (sequential) for the PIE
        engines, whose batch > 1 is the parallel variant.
    loss : a name, or [(epoch, name), ...] switching loss at those epochs; at a switch the new loss
        is scaled so the object gradient's norm is continuous (`Result.events` records the factor).
    object, object_modes, probe, positions, scan, z : the parameter groups (`Group`). scan refines
        an affine map of the whole scan about its centre (scale, rotation, shear: positions =
        nominal + A (nominal - centre) + corrections; lr per Adam step in units of A, 1e-3 = 0.1%
        scale); with positions on too, the corrections' affine part moves into A after each epoch,
        so they keep only what is local. Refine the scan first (positions.start_epoch later than
        scan.start_epoch): started together on a featureless object, the corrections lock into a
        wrong minimum that holds A back. Gradient engine only.
    focus : the focus-to-sample distance z1 of a divergent-beam near-field dataset (`cuptycho.focus`): the
        effective distance, the sample pixel size and the scan's pixel scale follow it (lr relative to the
        given z1); exclusive with z, which refines the effective distance alone.
    background, scale : the detector model I_j = s_j I_coh + b (`cuptycho.detector`, gradient engine): b a
        background added to every pattern (counts, detector order; lr relative to the data's mean count
        per pixel), one map or, with background_per_pattern, one per pattern; s_j an intensity factor per
        pattern (flux, exposure; lr absolute, s ~ 1). Result.background and Result.scale hold them.
    position_l1 : weight of an L1 penalty on the position corrections (pixels).
    position_search : a grid search of each position's shift (`PositionSearch`; None: off), for
        positions too far off for the gradient (`cuptycho.position_search`).
    focus_search : a loss scan over the focus distance before the first epoch (`FocusSearch`; None: off),
        for a focus distance too far off for the [focus] gradient.
    position_step : how [positions] steps: "adam" (lr ~ pixels per step), or "newton" (`cuptycho.position_step`:
        the gradient over the curvature the data give each position, clipped to lr pixels; no random walk
        where the data say little; gaussian, poisson and weighted losses).
    max_position_correction : largest |correction| per axis in pixels (None: only the object's
        edges limit it: corrected patches always stay on the object).
    max_scan_scale : how far the [scan] model's scale may depart from the stage's, as a fraction: the
        singular values of I + A stay within 1 +- max_scan_scale (rotation and shear are free; None, the
        default: unbounded). A scan and its object can shrink together while many positions are wrong.
    init_probe : "dataset" (Dataset.probe), "data" (from the mean pattern, DAP) or
        {"aperture": radius_px}; n_probe_modes adds small orthogonal modes (None: as given).
    init_object : "ones" (flat), or "data" (far field: absorption and phase slopes from each pattern's
        counts and centre of mass, `initial.object_from_data`).
    tv, amplitude_range, probe_power, early_stop, constraints : option tables (dicts of the fields
        of `TV`, `AmplitudeRange`, `ProbePower`, `EarlyStop`, `Constraints`); None: off.
        tv.start_epoch delays the TV until the object has structure (the TV of a flat start is
        tiny, which makes the first weights large).
    max_divergences, divergence_factor : after an epoch, a divergence restores the best state so far
        and halves every step size; more than max_divergences of them end the run as diverged (the
        best state kept). A divergence is a non-finite loss or parameter, a loss above
        divergence_factor x the lowest since the run's start or the loss's last change (a loss
        switch, the TV's start; never below 1 / divergence_factor of the loss there), or a probe
        power x object transmission more than divergence_factor**2 away from the data's counts per
        pattern (and the initial model's). inf: only non-finite values count.
    progress : called after every epoch with the epoch's record (a dict); returning True stops.
    profile : synchronise at stage boundaries so Result.timings attributes time exactly.
    metrics_every : with a known truth, compare with it every this many epochs (and at the first
        and the last): registration against the truth costs more than a small epoch.
    """
    epochs: int = option(100, Int(low=0), example=7)
    engine: str = option("gradient", Choice(ENGINES), example="rpie")
    pie: dict | None = option(None, Maybe(TableOf(PIE)), example={"alpha": 0.2})
    batch: object = option(None, Maybe(Custom(_batch)), example={"start": 8, "factor": 2, "every": 20, "max": 64})
    loss: object = option("gaussian", Custom(_loss), example=[(0, "gaussian"), (4, "poisson")])
    object: Group = _group(lr=1e-2)
    object_modes: Group = _group(lr=1e-2)
    probe: Group = _group(enabled=False, lr=1e-2)
    positions: Group = _group(enabled=False, lr=5e-2)      # PIE engines: one Adam step per position per epoch
    scan: Group = _group(enabled=False, lr=1e-3)           # the affine map of the whole scan (gradient engine)
    z: Group = _group(enabled=False, lr=1e-3)
    focus: Group = _group(enabled=False, lr=1e-2)          # focus-to-sample distance z1 (gradient engine)
    background: Group = _group(enabled=False, lr=1e-2)     # detector background (gradient engine)
    scale: Group = _group(enabled=False, lr=1e-2)          # intensity factor per pattern (gradient engine)
    background_per_pattern: bool = option(False, Bool(), example=True)
    position_l1: float = option(0.0, Real(low=0.0), example=0.01)
    position_step: str = option("adam", Choice(("adam", "newton")), example="newton")
    max_position_correction: float | None = option(None, Maybe(Real(positive=True)), example=3.0)
    # off by default: measured (benchmarks/experiments/position_refinement.py --seeds 0 1 --configs d
    # --max-scan-scale 0.05), the bound takes the worst case's max error 62 -> 20 px, but the typical RMS
    # 0.6-1.3 -> 1.1-1.8 px and positions > 2 px off 0 in 4 of 8 cases -> 1 of 8 (the estimate dips
    # past the bound on its way to the truth's 2 %)
    max_scan_scale: float | None = option(None, Maybe(Real(positive=True)), example=0.05)
    n_object_modes: int = option(1, Int(low=1), example=2)
    n_probe_modes: int | None = option(None, Maybe(Int(low=1)), example=3)
    init_probe: object = option("dataset", Custom(_init_probe), example={"aperture": 12.0})
    init_object: str = option("ones", Choice(("ones", "data")), example="data")
    fit_probe_scale: bool = option(True, Bool(), example=False)
    tv: dict | None = option(None, Maybe(TableOf(TV)), example={"ratio": 0.01})
    amplitude_range: dict | None = option(None, Maybe(TableOf(AmplitudeRange)), example={"low": 0.1, "high": 1.0})
    probe_power: dict | None = option(None, Maybe(TableOf(ProbePower)), example={"weight": 0.1})
    constraints: dict = option(dict, TableOf(Constraints), example={"renormalise": True})
    early_stop: dict | None = option(None, Maybe(TableOf(EarlyStop)), example={"patience": 5})
    position_search: dict | None = option(None, Maybe(TableOf(PositionSearch)), example={"radius": 16.0})
    focus_search: dict | None = option(None, Maybe(TableOf(FocusSearch)), example={"points": 9})
    max_divergences: int = option(5, Int(low=0), example=2)
    divergence_factor: float = option(10.0, Custom(lambda c, k, v: _above_one(c, k, v)), example=20.0)
    seed: int = option(0, Int(low=0), example=3)
    backend: str = option("auto", Choice(BACKENDS), example="cpu")
    dtype: str = option("complex64", Choice(DTYPES), example="complex128")
    profile: bool = option(False, Bool(), example=True)
    metrics_every: int = option(10, Int(low=1), example=4)
    progress: Callable | None = option(None, Custom(lambda c, k, v: _callable(c, k, v)), python_only=True)

    def check(self):
        """ValueError naming the first invalid option. (What an engine cannot honour, e.g. z refinement
        with a PIE engine, is the engine's to say: `cuptycho.engines.check`.)"""
        c = Checker(quoted=False)
        for f in fields_of(Config):
            f.metadata["kind"](c, f.name, getattr(self, f.name))
        if self.engine in PIE_ENGINES:
            pie_settings(self.engine, self.pie)
        elif self.pie:
            raise ValueError(f"pie settings {sorted(self.pie)} apply to the PIE engines, but engine is "
                             f"{self.engine!r}")
        return self


def _above_one(c, key, v):
    v = Real()(c, key, v)
    if not v > 1:
        c.fail(key, f"must be > 1 (inf: only non-finite values count as a divergence), got {v!r}")
    return v


def _callable(c, key, v):
    if v is not None and not callable(v):
        c.fail(key, f"must be callable, got {type(v).__name__}")
    return v


def _table_class(kind):
    """The option-table dataclass a kind checks (through Maybe), or None."""
    kind = kind.kind if isinstance(kind, Maybe) else kind
    return kind.cls if isinstance(kind, TableOf) else None


GROUPS = tuple(f.name for f in dataclasses.fields(Config) if f.type in ("Group", Group))
TABLES = {f.name: _table_class(f.metadata["kind"]) for f in fields_of(Config) if _table_class(f.metadata["kind"])}


# --------------------------------------------------------------------------- values of the options

def loss_plan(spec):
    """[(start_epoch, loss name), ...] sorted, from a name or a list of pairs."""
    if isinstance(spec, str):
        return [(0, spec)]
    plan = sorted((int(e), str(n)) for e, n in spec)
    if not plan or plan[0][0] != 0:
        raise ValueError(f"loss schedule must start at epoch 0, got {spec!r}")
    return plan


def batch_size(spec, epoch, n_patterns):
    """The minibatch size for `epoch` from a batch option ("full", an int or a growth table)."""
    if spec == "full":
        return n_patterns
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        if spec < 1:
            raise ValueError(f"batch must be >= 1, got {spec}")
        return min(int(spec), n_patterns)
    if isinstance(spec, dict):
        growth = table(BatchGrowth, table_value(Checker(quoted=False), "batch", BatchGrowth, spec))
        size = growth.start * growth.factor ** (epoch // growth.every)
        return int(min(size, growth.max or n_patterns, n_patterns))
    raise ValueError(f"batch must be {_BATCH}, got {spec!r}")


# --------------------------------------------------------------------------- [data] and [output]

@dataclass
class DataOptions:
    """[data] of a configuration file: the keywords of `cuptycho.io.load` (the readers and their
    preprocessing). `path` is the data file itself (the command line's DATA wins); path-valued
    options are relative to the configuration file; energy_ev / energy_kev are conveniences for
    `energy` (J)."""
    PATHS = ("path", "dark", "positions", "mask")
    path: str = option(None, Text(), example="/data/scan.cxi")
    entry: str = option(None, Text(), example="entry_1")
    data_path: str = option(None, Text(), example="/entry_1/data_1/data")
    translation_path: str = option(None, Text(), example="/entry_1/data_1/translation")
    geometry_kind: str = option(None, Choice(GEOMETRY_KINDS), example="nearfield")
    focus_distance: float = option(None, Real(positive=True), example=3.65e-3)
    propagator: str = option(None, Choice(PROPAGATORS), example="angular_spectrum")
    padding: object = option(None, _at_least(Int(), 0), example=[16, 32])
    wavelength: float = option(None, Real(positive=True), example=1e-10)
    energy: float = option(None, Real(positive=True), example=1.4e-15)
    energy_ev: float = option(None, Real(positive=True), example=8700.0)
    energy_kev: float = option(None, Real(positive=True), example=8.7)
    detector_distance: float = option(None, Real(positive=True), example=5.0)
    detector_pixel_size: object = option(None, _at_least(Real()), example=[75e-6, 55e-6])
    pixel_size: object = option(None, _at_least(Real()), example=1e-8)
    z: float = option(None, Real(), example=1e-3)
    mask_bits: int = option(None, Int(low=0), example=1)
    margin: int = option(None, Int(low=0), example=8)
    obj_shape: list = option(None, Pair(Int(), as_tuple=False), example=[300, 400])
    positions: str = option(None, Text(), example="positions.csv")
    position_units: str = option(None, Choice(POSITION_UNITS), example="um")
    mask: str = option(None, Text(), example="mask.tif")
    frames: object = option(None, Custom(_frames), example={"start": 0, "stop": 100, "step": 2})
    dark: str = option(None, Text(), example="dark.tif")
    fftshift: bool = option(None, Bool(), example=True)
    crop: object = option(None, _at_least(Int(), 1), example=[256, 256])
    center: object = option(None, Custom(_center), example="mass")
    bin: object = option(None, _at_least(Int(), 1), example=2)
    saturation: float = option(None, Real(positive=True), example=6e5)
    chunk_bytes: int = option(None, Int(low=1), example=1 << 20)
    stream: object = option(None, Custom(_stream), example=True)          # "auto" (default), true, false
    load_limit: object = option(None, Custom(_size), example="8G")        # "auto" streams data larger than this

    @staticmethod
    def validate(c, key, values):
        energies = [k for k in ("wavelength", "energy", "energy_ev", "energy_kev") if k in values]
        if len(energies) > 1:
            c.fail(f"{key}.{energies[1]}", f"conflicts with {c.name(f'{key}.{energies[0]}')}: give one of "
                                           "wavelength, energy, energy_ev, energy_kev")


@dataclass
class OutputOptions:
    """[output] of a configuration file."""
    checkpoint_every: int = option(0, Int(low=0), example=25)   # epochs between checkpoints (0: on signals only)


SECTIONS = {"data": DataOptions, "output": OutputOptions}


def keys() -> tuple:
    """Every dotted key a configuration file (and `--set`) takes, [data] and [output] included; the
    [simulate] table takes the keywords of `cuptycho.simulate.simulate`."""
    out = []
    for f in fields_of(Config, toml=True):
        if f.name in GROUPS:
            out += [f"{f.name}.{k}" for k in keys_of(Group)]
        elif f.name in TABLES:
            out += [f"{f.name}.{k}" for k in keys_of(TABLES[f.name])]
        else:
            out.append(f.name)
    for name, cls in SECTIONS.items():
        out += [f"{name}.{k}" for k in keys_of(cls)]
    return tuple(out)
