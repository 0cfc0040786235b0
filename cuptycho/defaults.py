"""The command line's defaults for measured data: what `cuptycho reconstruct FILE` does with no options.

A library `Config` keeps plain defaults (a fixed learning rate, the full batch, only the object refined:
what a caller composing a run expects). A file handed to the command line without a setting gets the
schedule measured to give a good image on the shared measured datasets and the simulated presets
(`benchmarks/experiments/defaults.py`); every key a configuration file or `--set` gives wins over it:

- 150 epochs; minibatches of b0 = J / 20 patterns (4 to 64) growing 5x at epoch 100 (DAP: small batches
  first for speed, larger ones late for a steady finish);
- object and probe refined at lr 0.04 (the probe's relative to its RMS amplitude), both decayed 8x at
  epoch 100 (without it the minibatch noise holds the loss up: on the PETRA file 1.41 vs 1.88 per pixel);
- positions refined from epoch 5 at lr 0.1 px (on the PETRA file this took the phase correlation with a
  peer package's reconstruction from 0.82 to 0.97: its stage positions are off by about a pixel);
- the detector model ([background], [scale]) from epoch 10 with the same decay: measured, it lowers the
  loss per pixel on both measured files (PETRA 1.41 -> 1.20, the Siemens star 0.30 -> 0.22, whose
  half-scan FRC resolution goes 1.73 -> 1.53 px) and costs nothing on the simulated presets, which have
  no background (far field object correlation 0.976 -> 0.980, near field 0.9999 both).
"""
from __future__ import annotations

import dataclasses

from .settings import Config

EPOCHS = 150
DECAY = {"kind": "step", "every": 100, "gamma": 0.125}


def batch_start(n_patterns: int) -> int:
    """b0: a twentieth of the patterns, at least 4 and at most 64 (never more than there are)."""
    return int(min(n_patterns, max(4, min(64, round(n_patterns / 20)))))


def for_data(n_patterns: int) -> dict:
    """The defaults as dotted keys -> values (the keys of a configuration file)."""
    b0 = batch_start(n_patterns)
    return {
        "epochs": EPOCHS,
        "batch": {"start": b0, "factor": 5, "every": 100, "max": min(n_patterns, 5 * b0)},
        "object.lr": 0.04, "object.schedule": dict(DECAY),
        "probe.enabled": True, "probe.lr": 0.04, "probe.schedule": dict(DECAY),
        "positions.enabled": True, "positions.lr": 0.1, "positions.start_epoch": 5,
        "background.enabled": True, "background.start_epoch": 10, "background.schedule": dict(DECAY),
        "scale.enabled": True, "scale.start_epoch": 10, "scale.schedule": dict(DECAY),
    }


def apply(config: Config, n_patterns: int, explicit: set) -> tuple[Config, list]:
    """`config` with every default of `for_data` that `explicit` (the dotted keys a file or --set gave, or
    their whole table) does not name; returns (config, the keys applied). The gradient engine's only: the
    PIE engines keep their own defaults."""
    if config.engine != "gradient":
        return config, []
    applied, changes, groups = [], {}, {}
    for key, value in for_data(n_patterns).items():
        table, _, field = key.partition(".")
        if key in explicit or (field and table in explicit):
            continue
        if field:
            groups.setdefault(table, {})[field] = value
        else:
            changes[key] = value
        applied.append(key)
    for table, fields in groups.items():
        changes[table] = dataclasses.replace(getattr(config, table), **fields)
    return dataclasses.replace(config, **changes), applied


def describe(config: Config) -> str:
    """One line for the log: the schedule the defaults set."""
    b = config.batch
    batch = f"batch {b['start']} -> {b['max']} at epoch {b['every']}" if isinstance(b, dict) else f"batch {b}"
    return (f"defaults for measured data: {config.epochs} epochs, {batch}, object and probe lr "
            f"{config.object.lr:g} decayed {1 / DECAY['gamma']:g}x every {DECAY['every']} epochs, positions from "
            f"epoch {config.positions.start_epoch}, detector background and scales from epoch "
            f"{config.background.start_epoch} (any of them set in --config or --set wins)")

