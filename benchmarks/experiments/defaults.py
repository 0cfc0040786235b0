"""The command line's defaults for measured data (`cuptycho.defaults`) against the defaults before them and
against the best tuned reconstruction, on the two measured files in ../shared/data.

    python benchmarks/experiments/defaults.py [--part petra|star|presets|all] [--json out.json]

petra (PETRA III near field, 200 patterns of 100 x 100, no probe guess in the file):
- before: what `cuptycho reconstruct` did with no options: 100 epochs, the full batch, object lr 0.01,
  probe from the data's mean pattern and refined (lr 0.01), positions fixed;
- defaults: `defaults.for_data` (150 epochs, batch 10 -> 50, lr 0.04 decayed 8x at epoch 100, positions
  from epoch 5);
- tuned: the best reconstruction found for the file: that schedule run 300 epochs (lr decayed 8x at 100
  and again at 200) with [background] and [scale] from epoch 10.
Rows: seconds, the loss per pixel, and the phase and amplitude correlation with `tuned` over the object
pixels its probe lights to >= 30 % (registered, the phase ramp removed).

star (Velociprobe Siemens star, far field, 516 patterns of 128 x 128, the file's probe guess): before
(100 epochs, full batch, object lr 0.01, probe and positions fixed) and defaults, each run on the whole
scan and on its two interleaved halves (even and odd positions); rows: seconds, the loss per pixel, the
resolution where the Fourier ring correlation of the two halves' objects (registered, tapered, over
their jointly lit box) falls below 1/7, in pixels (half-period).

presets: `small_farfield` and `small_nearfield` (seed 1) without a probe guess, before and with the
defaults: the object's correlation with the truth.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import RAW, machine, print_table, write_json

from cuptycho import Config, Group, defaults, io, metrics, reconstruct, simulate

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PETRA = DATA / "petra3_p25_nearfield" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
STAR = DATA / "tike_velociprobe_siemens_star" / "siemens-star-small.npz.bz2"


def before(probe_from_data: bool) -> Config:
    """The command line's behaviour before the measured-data defaults (library Config, and the probe
    started from the data and refined when the file has none)."""
    if probe_from_data:
        return Config(init_probe="data", probe=Group(enabled=True), backend="cpu", seed=0)
    return Config(backend="cpu", seed=0)


def with_defaults(n_patterns: int, probe_from_data: bool, **extra) -> Config:
    base = before(probe_from_data)
    return defaults.apply(Config(**{**base.__dict__, **extra}), n_patterns, set(extra))[0]


def tuned_petra() -> Config:
    decay = {"kind": "step", "every": 100, "gamma": 0.125}
    return Config(epochs=300, batch={"start": 10, "factor": 5, "every": 100, "max": 50}, backend="cpu", seed=0,
                  object=Group(lr=0.04, schedule=decay), probe=Group(enabled=True, lr=0.04, schedule=decay),
                  positions=Group(enabled=True, lr=0.1, start_epoch=5), init_probe="data",
                  background=Group(enabled=True, start_epoch=10, schedule=decay),
                  scale=Group(enabled=True, start_epoch=10, schedule=decay))


def agreement(result, reference) -> dict:
    """Phase and amplitude correlation of `result` with `reference` over the reference's well-lit region."""
    region = metrics.illuminated(reference.probe, reference.positions, reference.object.shape[1:], 0.3)
    ref = reference.object[0]
    est, _ = metrics.align(result.object[0], ref, mask=region)
    est = metrics.remove_phase_ramp(est, mask=region, reference=ref)
    phase = np.angle(est * np.conj(np.exp(1j * np.angle(np.sum((est * np.conj(ref))[region])))))
    out = {}
    for name, a, b in (("phase_corr", phase, np.angle(ref)), ("amplitude_corr", np.abs(est), np.abs(ref))):
        a, b = a[region] - a[region].mean(), b[region] - b[region].mean()
        out[name] = float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))
    return out


def timed(ds, cfg):
    t0 = time.perf_counter()
    r = reconstruct(ds, cfg)
    return r, time.perf_counter() - t0


def petra():
    ds = io.load(PETRA, geometry_kind="nearfield", focus_distance=3.65e-3, propagator="angular_spectrum")
    reference, t_ref = timed(ds, tuned_petra())
    rows = [{"run": "tuned", "seconds": t_ref, "loss": reference.history[-1]["loss_per_pixel"]}]
    for name, cfg in (("before", before(True)), ("defaults", with_defaults(ds.n_patterns, True))):
        r, t = timed(ds, cfg)
        rows.append({"run": name, "seconds": t, "loss": r.history[-1]["loss_per_pixel"], **agreement(r, reference)})
    print_table(rows, [("PETRA", "run", "s"), ("s", "seconds", ".1f"), ("loss/px", "loss", ".4f"),
                       ("phase corr", "phase_corr", ".4f"), ("amp corr", "amplitude_corr", ".4f")])
    return rows


def half_resolution(ds, cfg):
    """The FRC resolution (px) between the reconstructions of the even and the odd positions."""
    halves = []
    for part in (slice(0, None, 2), slice(1, None, 2)):
        sub = ds.replace(data=ds.data[part], positions=ds.positions[part],
                         positions_m=None if ds.positions_m is None else ds.positions_m[part])
        halves.append(reconstruct(sub, cfg))
    a, b = halves
    lit = metrics.illuminated(a.probe, a.positions, a.object.shape[1:], 0.3) & \
        metrics.illuminated(b.probe, b.positions, b.object.shape[1:], 0.3)
    ys, xs = np.nonzero(lit)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    oa, ob = a.object[0][box], b.object[0][box]
    ob, _ = metrics.align(ob, oa)
    taper = np.outer(np.hanning(oa.shape[0]), np.hanning(oa.shape[1]))
    freq, frc = metrics.fourier_ring_correlation((oa - oa.mean()) * taper, (ob - ob.mean()) * taper)
    f = metrics.frc_resolution(freq, frc, "1/7")
    return 1 / (2 * f) if np.isfinite(f) and f > 0 else float("nan")


def star():
    ds = io.load(STAR)
    rows = []
    for name, cfg in (("before", before(False)), ("defaults", with_defaults(ds.n_patterns, False))):
        r, t = timed(ds, cfg)
        rows.append({"run": name, "seconds": t, "loss": r.history[-1]["loss_per_pixel"],
                     "resolution": half_resolution(ds, cfg)})
    print_table(rows, [("star", "run", "s"), ("s", "seconds", ".1f"), ("loss/px", "loss", ".4f"),
                       ("FRC 1/7 px", "resolution", ".2f")])
    return rows


def presets():
    """The simulated presets as a file without a probe guess would come (probe from the data): the object's
    correlation with the truth."""
    rows = []
    for name in ("small_farfield", "small_nearfield"):
        ds = simulate.preset(name, seed=1).dataset()
        for label, cfg in (("before", before(True)), ("defaults", with_defaults(ds.n_patterns, True))):
            cfg.metrics_every = cfg.epochs
            r, t = timed(ds, cfg)
            rows.append({"preset": name, "run": label, "seconds": t, "loss": r.history[-1]["loss_per_pixel"],
                         "corr": r.history[-1]["object_correlation"]})
    print_table(rows, [("preset", "preset", "s"), ("run", "run", "s"), ("s", "seconds", ".1f"),
                       ("loss/px", "loss", ".4f"), ("corr", "corr", ".4f")])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--part", choices=("petra", "star", "presets", "all"), default="all")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = {"machine": machine()}
    if args.part in ("petra", "all"):
        out["petra"] = petra()
    if args.part in ("star", "all"):
        out["star"] = star()
    if args.part in ("presets", "all"):
        out["presets"] = presets()
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
