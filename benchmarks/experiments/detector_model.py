"""The detector model ([background], [scale]): what it recovers on simulated data with a known background
and flux fluctuation, and what it changes on the measured PETRA III near-field file.

    python benchmarks/experiments/detector_model.py [--part simulated|petra|both] [--seeds 0 1 2 3]
                                                    [--photons 1e7] [--epochs 800] [--json out.json]

Simulated (`simulate.preset("small_farfield", background=0.15, scale_jitter=0.1, photons=...)`): 49
far-field patterns of 64 x 64, a background of 15 % of the mean coherent count per pixel falling off
from the detector's centre, intensity factors of RMS 0.1 per pattern. Known probe (refined, lr 0.01),
object lr 0.03, batch 8, gaussian loss; with the model, both groups from epoch 100 at their default lr.
Rows: one per seed, with and without the model: object correlation, background map error, its mean's
ratio to the truth, the scales' RMS error and correlation with the truth.

PETRA III (../shared/data, CC-BY; Fresnel-scaled near field, focus 3.65 mm): batch 10 -> 50 at epoch
100, object and probe lr 0.04 decayed 8x at epoch 100, positions lr 0.1 from epoch 5, probe from the
data; with the model, both groups lr 0.01 from epoch 10 with the same decay. Rows: the loss per pixel
(the whole dataset's gaussian loss per valid pixel) every 25 epochs, the background's mean over the
data's mean count and over the mean count of the detector's brightest quarter, the scales' range.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import RAW, machine, print_table, write_json

import cuptycho
from cuptycho import Config, Group, io, simulate

PETRA = Path(__file__).resolve().parents[3] / "shared" / "data" / "petra3_p25_nearfield" / \
    "PETRAIII_P25_Near_Field_Ptycho.cxi"


def simulated(seeds, photons, epochs, backend):
    exp = simulate.preset("small_farfield", background=0.15, scale_jitter=0.1, photons=photons)
    ds = exp.dataset()
    ds.probe = exp.probe
    rows = []
    for seed in seeds:
        for model in (False, True):
            cfg = Config(epochs=epochs, batch=8, backend=backend, seed=seed, metrics_every=epochs,
                         object=Group(lr=0.03), probe=Group(enabled=True, lr=0.01),
                         background=Group(enabled=model, start_epoch=100), scale=Group(enabled=model, start_epoch=100))
            t0 = time.perf_counter()
            r = cuptycho.reconstruct(ds, cfg)
            h = r.history[-1]
            row = {"seed": seed, "model": "yes" if model else "no", "seconds": time.perf_counter() - t0,
                   "corr": h["object_correlation"], "bg_err": h.get("background_error"),
                   "scale_err": h.get("scale_error_rms")}
            if model:
                row["bg_mean"] = float(r.background.mean() / exp.background.mean())
                row["scale_corr"] = float(np.corrcoef(r.scale, exp.scale)[0, 1])
            rows.append(row)
    print_table(rows, [("seed", "seed", "d"), ("model", "model", "s"), ("corr", "corr", ".4f"),
                       ("bg_err", "bg_err", ".4f"), ("bg_mean/true", "bg_mean", ".4f"),
                       ("scale_err", "scale_err", ".4f"), ("scale_corr", "scale_corr", ".3f"),
                       ("s", "seconds", ".1f")])
    return rows


def petra(epochs, backend):
    if not PETRA.is_file():
        print(f"{PETRA} is absent: skipping the PETRA part")
        return []
    ds = io.load(PETRA, geometry_kind="nearfield", focus_distance=3.65e-3, propagator="angular_spectrum")
    decay = {"kind": "step", "every": 100, "gamma": 0.125}
    rows = []
    for model in (False, True):
        cfg = Config(epochs=epochs, batch={"start": 10, "factor": 5, "every": 100, "max": 50}, backend=backend,
                     object=Group(lr=0.04, schedule=decay), probe=Group(enabled=True, lr=0.04, schedule=decay),
                     positions=Group(enabled=True, lr=0.1, start_epoch=5), init_probe="data", seed=0,
                     background=Group(enabled=model, start_epoch=10, schedule=decay),
                     scale=Group(enabled=model, start_epoch=10, schedule=decay), metrics_every=25)
        t0 = time.perf_counter()
        r = cuptycho.reconstruct(ds, cfg)
        row = {"model": "yes" if model else "no", "seconds": time.perf_counter() - t0,
               "loss_per_pixel": [(h["epoch"], h["loss_per_pixel"]) for h in r.history if "loss_per_pixel" in h]}
        if model:
            mean_pattern = np.asarray(ds.data, np.float64).mean(axis=0)
            bright = mean_pattern > np.percentile(mean_pattern, 75)
            row["bg_over_mean"] = float(r.background.mean() / mean_pattern.mean())
            row["bg_over_bright"] = float(r.background[bright].mean() / mean_pattern[bright].mean())
            row["scale_min"], row["scale_max"] = float(r.scale.min()), float(r.scale.max())
        rows.append(row)
        print(f"PETRA, detector model {row['model']}: {row['seconds']:.1f} s; loss per pixel "
              + ", ".join(f"{e}: {v:.3f}" for e, v in row["loss_per_pixel"]))
        if model:
            print(f"  background / mean count {row['bg_over_mean']:.3f}, / mean count of the brightest quarter "
                  f"{row['bg_over_bright']:.3f}; scales {row['scale_min']:.3f} .. {row['scale_max']:.3f}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--part", choices=("simulated", "petra", "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--photons", type=float, default=1e7)
    parser.add_argument("--epochs", type=int, default=800, help="simulated epochs (PETRA: 150)")
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = {"machine": machine(), "args": vars(args)}
    if args.part in ("simulated", "both"):
        out["simulated"] = simulated(args.seeds, args.photons, args.epochs, args.backend)
    if args.part in ("petra", "both"):
        out["petra"] = petra(150, args.backend)
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
