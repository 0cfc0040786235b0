"""init_object = "data" (the object's power and phase slopes from each pattern's counts and centre of mass,
`cuptycho.initial.object_from_data`) against the flat start, with the command line's measured-data defaults.

    python benchmarks/experiments/object_init.py [--part sim|star|all] [--json out.json]

sim: `small_farfield` (seed 1, noise-free counts of 1e6 photons, 11 x 11 raster) with smooth pure-phase
objects: a Gaussian bump of 3 rad and spheres (phase of a ball, sqrt(R^2 - r^2): slopes without bound at the
rim) of 3 and 8 rad; the probe known (refined) or from the data. Rows: the object's correlation with the
truth (registered, ramp removed) at epochs 0, 10 and the last (80), and the loss per pixel.

star (Velociprobe Siemens star, far field, the file's probe guess, 150 epochs of the defaults): seconds and
the loss per pixel at epochs 10, 40 and the last.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from common import RAW, machine, print_table, write_json
from defaults import STAR, with_defaults

from cuptycho import io, reconstruct, simulate


def objects(shape=200):
    yy, xx = np.mgrid[:shape, :shape] / shape
    gaussian = np.exp(-((yy - .5) ** 2 + (xx - .45) ** 2) / (2 * .15 ** 2))
    sphere = np.sqrt(np.clip(1 - ((yy - .5) ** 2 + (xx - .45) ** 2) / .3 ** 2, 0, None))
    return {"gaussian 3 rad": (gaussian, 3.0), "sphere 3 rad": (sphere, 3.0), "sphere 8 rad": (sphere, 8.0)}


def sim():
    rows = []
    for name, (phase, peak) in objects().items():
        exp = simulate.preset("small_farfield", seed=1, magnitude=None, phase=phase, phase_range=(0, peak),
                              scan_size=(11, 11))
        ds = exp.dataset().replace(probe=exp.probe)
        for probe_from_data in (False, True):
            for init in ("ones", "data"):
                cfg = with_defaults(ds.n_patterns, probe_from_data, init_object=init, epochs=80)
                cfg.metrics_every = 10
                r = reconstruct(ds, cfg)
                corr = {h["epoch"]: h["object_correlation"] for h in r.history if "object_correlation" in h}
                rows.append({"object": name, "probe": "data" if probe_from_data else "known", "init": init,
                             "corr0": corr[min(corr)], "corr10": corr.get(10, np.nan), "corr": corr[max(corr)],
                             "loss": r.history[-1]["loss_per_pixel"]})
    print_table(rows, [("object", "object", "s"), ("probe", "probe", "s"), ("init", "init", "s"),
                       ("corr ep 0", "corr0", ".3f"), ("ep 10", "corr10", ".3f"), ("last", "corr", ".3f"),
                       ("loss/px", "loss", ".3f")])
    return rows


def star():
    ds = io.load(STAR)
    rows = []
    for init in ("ones", "data"):
        cfg = with_defaults(ds.n_patterns, False, init_object=init)
        t0 = time.perf_counter()
        r = reconstruct(ds, cfg)
        loss = {h["epoch"]: h["loss_per_pixel"] for h in r.history if "loss_per_pixel" in h}
        rows.append({"init": init, "seconds": time.perf_counter() - t0, "loss10": loss.get(10, np.nan),
                     "loss40": loss.get(40, np.nan), "loss": loss[max(loss)]})
    print_table(rows, [("star init", "init", "s"), ("s", "seconds", ".1f"), ("loss ep 10", "loss10", ".4f"),
                       ("ep 40", "loss40", ".4f"), ("last", "loss", ".4f")])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--part", choices=("sim", "star", "all"), default="all")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = {"machine": machine()}
    if args.part in ("sim", "all"):
        out["sim"] = sim()
    if args.part in ("star", "all"):
        out["star"] = star()
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
