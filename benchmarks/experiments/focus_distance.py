"""Focus-distance refinement ([focus], `cuptycho.focus`) on the measured PETRA III near-field file and on a
simulated divergent-beam scan with a known focus distance.

    python benchmarks/experiments/focus_distance.py [--part simulated|petra|scan|all] [--json out.json]

simulated: 49 near-field holograms of 64 x 64 (12.4 keV, z1 = 5 mm, z2 = 1 m, 50 um detector pixels:
magnification 201, 249 nm sample pixels), 1e7 photons, the true probe (fixed); the stage positions in
metres and the focus distance 0.7x or 1.3x the truth; object lr 0.05, batch 8, [focus] lr 0.01 from
epoch 0, 100 epochs. Rows: the refined z1 and its error.

petra: the PETRA III file (focus 3.65 mm as the beamline gave it, z2 = 1.12 m) started from 0.7x,
1.0x and 1.3x that focus distance, with and without focus_search (15 points 0.6x-1.6x, 10 epochs
each); batch 10 -> 50 at epoch 100, object and probe lr 0.04 decayed 8x at epoch 100, positions
from epoch 5, [focus] lr 0.01 with the same decay, probe from the data, 150 epochs. Rows: the
refined z1, the loss per pixel, seconds.

scan: the loss scan the refinement is judged against: the same 150-epoch reconstruction with the
focus fixed at 0.95x-1.03x of 3.65 mm in 1 % steps; the loss per pixel of each, and the vertex of a
parabola fitted through them (the scan's points scatter by ~0.015 around it, so its lowest single
point is not its minimum).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import RAW, machine, print_table, write_json

from cuptycho import Config, Group, io, reconstruct, simulate
from cuptycho.dataset import Dataset

PETRA = Path(__file__).resolve().parents[3] / "shared" / "data" / "petra3_p25_nearfield" / \
    "PETRAIII_P25_Near_Field_Ptycho.cxi"
PETRA_FOCUS = 3.65e-3
WAVELENGTH, Z2, DETECTOR_PIXEL, Z1 = 1e-10, 1.0, 50e-6, 5e-3


def simulated(backend):
    m = (Z1 + Z2) / Z1
    exp = simulate.simulate(shape=(64, 64), probe="images", probe_options={"magnitude": "gravel", "phase": "grass",
                                                                           "amplitude_range": (0.2, 1.0)},
                            scan="fermat", scan_size=49, step=5.0, propagator="angular_spectrum",
                            wavelength=WAVELENGTH, z=Z2 / m, pixel_size=DETECTOR_PIXEL / m, photons=1e7, seed=0)
    rows = []
    for factor in (0.7, 1.3):
        ds = Dataset.from_measurement(exp.data, detector_pixel_size=DETECTOR_PIXEL, detector_distance=Z2,
                                      wavelength=WAVELENGTH, geometry_kind="nearfield", focus_distance=Z1 * factor,
                                      positions_m=exp.positions * DETECTOR_PIXEL / m, propagator="angular_spectrum",
                                      probe=exp.probe)
        cfg = Config(epochs=100, batch=8, backend=backend, object=Group(lr=0.05), focus=Group(enabled=True),
                     fit_probe_scale=False, seed=0)
        t0 = time.perf_counter()
        r = reconstruct(ds, cfg)
        rows.append({"start": factor, "z1_mm": 1e3 * r.focus_distance, "error": r.focus_distance / Z1 - 1,
                     "seconds": time.perf_counter() - t0})
    print_table(rows, [("start", "start", ".2f"), ("z1 mm", "z1_mm", ".5f"), ("error", "error", "+.5f"),
                       ("s", "seconds", ".1f")])
    return rows


def petra_config(backend, focus, search=None):
    decay = {"kind": "step", "every": 100, "gamma": 0.125}
    return Config(epochs=150, batch={"start": 10, "factor": 5, "every": 100, "max": 50}, backend=backend,
                  object=Group(lr=0.04, schedule=decay), probe=Group(enabled=True, lr=0.04, schedule=decay),
                  positions=Group(enabled=True, lr=0.1, start_epoch=5), init_probe="data", seed=0,
                  focus=Group(enabled=focus, schedule=decay), focus_search=search, metrics_every=150)


def load_petra(factor):
    return io.load(PETRA, geometry_kind="nearfield", focus_distance=PETRA_FOCUS * factor,
                   propagator="angular_spectrum")


def petra(backend):
    rows = []
    for factor, search in ((0.7, None), (0.7, {}), (1.0, None), (1.3, None), (1.3, {})):
        t0 = time.perf_counter()
        r = reconstruct(load_petra(factor), petra_config(backend, True, search))
        rows.append({"start": factor, "search": "yes" if search is not None else "no",
                     "z1_mm": 1e3 * r.focus_distance, "loss": r.history[-1]["loss_per_pixel"],
                     "seconds": time.perf_counter() - t0})
    print_table(rows, [("start", "start", ".2f"), ("search", "search", "s"), ("z1 mm", "z1_mm", ".5f"),
                       ("loss/px", "loss", ".4f"), ("s", "seconds", ".1f")])
    return rows


def loss_scan(backend):
    rows = []
    for factor in np.round(np.arange(0.95, 1.031, 0.01), 3):
        r = reconstruct(load_petra(factor), petra_config(backend, False))
        rows.append({"factor": float(factor), "z1_mm": 1e3 * PETRA_FOCUS * factor,
                     "loss": r.history[-1]["loss_per_pixel"]})
    print_table(rows, [("factor", "factor", ".2f"), ("z1 mm", "z1_mm", ".5f"), ("loss/px", "loss", ".4f")])
    f, loss = np.array([r["factor"] for r in rows]), np.array([r["loss"] for r in rows])
    coeffs = np.polyfit(f, loss, 2)
    vertex = -coeffs[1] / (2 * coeffs[0])
    print(f"parabola vertex: {vertex:.4f} x 3.65 mm = {1e3 * PETRA_FOCUS * vertex:.4f} mm "
          f"(residual RMS {np.std(loss - np.polyval(coeffs, f)):.4f})")
    return {"points": rows, "vertex_mm": 1e3 * PETRA_FOCUS * vertex}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--part", choices=("simulated", "petra", "scan", "all"), default="all")
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = {"machine": machine()}
    if args.part in ("simulated", "all"):
        out["simulated"] = simulated(args.backend)
    if args.part in ("petra", "scan", "all") and not PETRA.is_file():
        print(f"{PETRA} is absent: skipping the PETRA parts")
    else:
        if args.part in ("petra", "all"):
            out["petra"] = petra(args.backend)
        if args.part in ("scan", "all"):
            out["scan"] = loss_scan(args.backend)
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
