"""The option tables of a reconstruction (`[batch]`, `[tv]`, `[amplitude_range]`, `[probe_power]`,
`[early_stop]`, `[position_search]`, `[focus_search]`, `[constraints]`, `[pie]`): one dataclass each,
whose fields are the schema, as `cuptycho.settings` describes (which re-exports them beside `Config`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .validation import Bool, Checker, Choice, Custom, Int, Maybe, Pair, Real, built, fields_of, option, table_value

ENGINES = ("gradient", "epie", "rpie", "mpie")     # cuptycho.engines.REGISTRY maps them to classes
PIE_ENGINES = ENGINES[1:]


# --------------------------------------------------------------------------- option tables

@dataclass
class BatchGrowth:
    """A growing minibatch: start * factor ** (epoch // every), capped at max (DAP: small batches first)."""
    NOUN = "batch key"
    start: int = option(None, Int(low=1), example=8)
    factor: float = option(2, Custom(lambda c, k, v: _integral(Real(positive=True)(c, k, v))), example=2)
    every: int = option(1, Int(low=1), example=20)
    max: int | None = option(None, Maybe(Int(low=1)), example=64)

    @staticmethod
    def validate(c, key, values):
        if "start" not in values:
            c.fail(key, "needs 'start' (the first batch size)")


def _integral(x):
    return int(x) if x == int(x) else x


@dataclass
class TV:
    """Adaptive TV on the object (DAP): its weight is reset every epoch to ratio x data loss / TV."""
    HINTS = {"weight": "the TV weight is adaptive, reset every epoch to ratio x data loss / TV: set 'tv.ratio'"}
    ratio: float = option(0.1, Real(low=0.0), example=0.01)
    start_epoch: int = option(0, Int(low=0), example=5)
    p: float = option(2.0, Real(positive=True), example=1.5)
    q: float = option(1.0, Real(positive=True), example=2.0)
    eps: float = option(1e-6, Real(positive=True), example=1e-3)
    reduction: str = option("mean", Choice(("mean", "sum")), example="sum")
    mask: object = option(None, Custom(lambda c, k, v: v), python_only=True)   # (H, W) weights: an array

    @staticmethod
    def validate(c, key, values):
        from .regularisers import AdaptiveTV          # deferred: a higher floor (arrays), needed only here
        built(c, key, lambda: AdaptiveTV(**{k: v for k, v in values.items() if k not in ("ratio", "start_epoch")}))


@dataclass
class AmplitudeRange:
    """Penalty weight * mean(relu(|O| - high)^2 + relu(low - |O|)^2)."""
    low: float = option(0.0, Real(low=0.0), example=0.1)
    high: float = option(1.0, Real(low=0.0), example=1.2)
    weight: float = option(1.0, Real(low=0.0), example=2.0)

    @staticmethod
    def validate(c, key, values):
        from .regularisers import AmplitudeRange as penalty
        built(c, key, lambda: penalty(**values))


@dataclass
class ProbePower:
    """Penalty on the probe's total power; target by default the mean total counts per pattern."""
    weight: float = option(1.0, Real(low=0.0), example=0.1)
    target: float | None = option(None, Maybe(Real(positive=True)), example=5e6)

    @staticmethod
    def validate(c, key, values):
        from .regularisers import ProbePower as penalty
        built(c, key, lambda: penalty(**{**values, "target": values.get("target") or 1.0}))


@dataclass
class EarlyStop:
    """Stop when the epoch loss has not improved by a relative min_delta for `patience` epochs."""
    patience: int = option(10, Int(low=1), example=5)
    min_delta: float = option(1e-4, Real(low=0.0), example=1e-3)


@dataclass
class PositionSearch:
    """Every `every` epochs from `start_epoch` (while positions are refined), the pattern loss of the
    positions whose loss exceeds `misfit` x the median (0: every position) at shifts on a grid of
    spacing `coarse`, then `step`, within `radius` pixels of the scan model's prediction, and a move
    to the best when it lowers that loss by more than `min_gain` (relative): a capture range beyond
    the gradient's. With `exclude`, positions whose loss still stands out are left out of the loss
    until a search places them."""
    # measured (benchmarks/experiments/position_refinement.py, known probe, 10 px RMS + 10 % outliers
    # 15-30 px off): searching only the misfits, from epoch 20 every 10, and leaving out those still
    # standing out took the affine-removed error from 3-7 px to 0.2-0.3 px in 3 of 4 cases of seed 0
    start_epoch: int = option(20, Int(low=0), example=30)
    every: int = option(10, Int(low=1), example=25)
    radius: float = option(40.0, Real(positive=True), example=16.0)
    coarse: float = option(4.0, Real(positive=True), example=2.0)
    step: float = option(1.0, Real(positive=True), example=0.5)
    min_gain: float = option(0.1, Real(low=0.0), example=0.2)
    misfit: float = option(3.0, Real(low=0.0), example=0.0)
    exclude: bool = option(True, Bool(), example=False)


@dataclass
class FocusSearch:
    """Before the first epoch, with [focus] enabled: `points` focus distances spaced evenly in log between
    `low` and `high` times the given one, each reconstructed for `epochs` epochs from the same start (the
    focus fixed), and the one whose whole-dataset loss per pixel is lowest kept as the start of the
    refinement: the gradient's capture range is ~15 % (from 30 % too short on the PETRA file it stalled)."""
    # measured on the PETRA III file (benchmarks/experiments/focus_distance.py): 10 epochs per point put
    # the minimum at 0.98 x the given 3.65 mm, the gradient's value within 2 %, from either side
    low: float = option(0.6, Real(positive=True), example=0.5)
    high: float = option(1.6, Real(positive=True), example=2.0)
    points: int = option(15, Int(low=2), example=21)
    epochs: int = option(10, Int(low=1), example=5)


def _amplitude_pair(c, key, v):
    out = Pair(ordered=True)(c, key, v)
    if out[0] < 0:
        c.fail(key, f"must be non-negative, got {list(v)!r}")
    return out


@dataclass
class Constraints:
    """Per-epoch projections, applied in this order."""
    NOUN = "constraint"
    orthogonalize_probe: bool = option(False, Bool(), example=True)
    recentre_probe: bool = option(False, Bool(), example=True)
    zero_probe_phase: bool = option(False, Bool(), example=True)
    renormalise: bool = option(False, Bool(), example=True)
    phase_range: tuple | None = option(None, Maybe(Pair(ordered=True)), example=(-1.0, 1.0))
    amplitude_range: tuple | None = option(None, Maybe(Custom(_amplitude_pair)), example=(0.0, 1.5))
    # the probe multiplied by a soft disc of this radius (half the window = 1; the corners at 1.41)
    probe_support: float | None = option(None, Maybe(Real(positive=True)), example=0.9)


@dataclass
class PIE:
    """The PIE engines' settings; an absent key takes the engine's default (`defaults` metadata).

    Object denominator (1 - alpha) W + alpha max W, probe (1 - beta) W + beta max W (ePIE: both
    maxima); mPIE momentum v <- friction v + change, X += feedback v every momentum_every position
    updates; position refinement registers each patch on a 1/position_upsample grid, amplifies the
    update to position_amplify of the patch norm, and clips a step to position_max_step pixels."""
    NOUN = "pie setting"
    alpha: float | None = option(None, Real(), example=0.2, within=(0, 1), engines=("rpie", "mpie"),
                                 defaults={"epie": 1.0, "rpie": 0.25, "mpie": 0.25},
                                 note="ePIE divides by the maxima (alpha = beta = 1); use engine = 'rpie' to set it")
    beta: float | None = option(None, Real(), example=0.9, within=(0, 1), engines=("rpie", "mpie"),
                                defaults={"epie": 1.0, "rpie": 1.0, "mpie": 1.0},
                                note="ePIE divides by the maxima (alpha = beta = 1); use engine = 'rpie' to set it")
    object_step: float | None = option(None, Real(), example=0.8, positive=True,
                                       defaults={"epie": 1.0, "rpie": 1.0, "mpie": 1.0})
    probe_step: float | None = option(None, Real(), example=0.7, positive=True,
                                      defaults={"epie": 1.0, "rpie": 1.0, "mpie": 1.0})
    friction: float | None = option(None, Real(), example=0.6, within=(0, 1), engines=("mpie",),
                                    defaults={"mpie": 0.7})
    feedback: float | None = option(None, Real(), example=0.35, within=(0, 1), engines=("mpie",),
                                    defaults={"mpie": 0.3})
    momentum_every: int | None = option(None, Int(low=1), example=10, engines=("mpie",), defaults={"mpie": 20})
    position_upsample: float | None = option(None, Real(), example=50.0, least=1,
                                             defaults={e: 20.0 for e in PIE_ENGINES})
    position_amplify: float | None = option(None, Real(), example=0.5, positive=True,
                                            defaults={e: 0.8 for e in PIE_ENGINES})
    position_max_step: float | None = option(None, Real(), example=0.5, positive=True,
                                             defaults={e: 1.0 for e in PIE_ENGINES})


_TITLES = {"epie": "ePIE", "rpie": "rPIE", "mpie": "mPIE"}


def pie_settings(engine, values=None) -> PIE:
    """The PIE engine's settings: its defaults updated by `values`; ValueError naming a bad key."""
    c = Checker(quoted=False)
    Choice(PIE_ENGINES)(c, "engine", engine)
    given = table_value(c, "pie", PIE, dict(values or {}))
    out = {}
    for f in fields_of(PIE):
        meta, key = f.metadata, f"pie.{f.name}"
        if f.name in given and engine not in meta.get("engines", PIE_ENGINES):
            titles = "/".join(_TITLES[e] for e in meta["engines"])
            note = f" ({meta['note']})" if "note" in meta else ""
            raise ValueError(f"{key} is an {titles} setting; engine is {engine!r}{note}")
        value = given.get(f.name, meta["defaults"].get(engine))
        if value is None:
            continue
        if not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        if "within" in meta and not meta["within"][0] <= value <= meta["within"][1]:
            raise ValueError(f"{key} must lie in [{meta['within'][0]}, {meta['within'][1]}], got {value!r}")
        if meta.get("positive") and not value > 0:
            raise ValueError(f"{key} must be positive, got {value!r}")
        if "least" in meta and value < meta["least"]:
            raise ValueError(f"{key} must be >= {meta['least']}, got {value!r}")
        out[f.name] = value
    return PIE(**out)
