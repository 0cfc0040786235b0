"""Scan-position refinement: per-position corrections, the affine scan model and the position search,
from a scan that is randomly wrong, has outliers and is scaled and rotated as a whole.

    python benchmarks/experiments/position_refinement.py [--seeds 0 1] [--epochs 150] [--quick]
                                                         [--json out.json] [--no-real] [--only-real]

Simulated cases (`cuptycho.simulate.simulate`, far field, seeds x 2 objects x 2 scans)
-----------------------------------------------------------------------------------------
- 64 x 64 far-field patterns (10 keV, 2 m, 75 um pixels: ~52 nm sample pixels), a defocused
  Gaussian spot of FWHM PROBE_WIDTH px, 1e6 photons in the brightest pattern, Poisson noise.
- Scans: an 11 x 11 raster at 70 % linear overlap (step from `step_from_overlap`, 1 px jitter of
  the truth) and a 121-point Fermat spiral at the same step.
- Objects: camera / astronaut (amplitude 0.5..1, phase -pi/2..pi/2, the simulator's default) and
  brick / coins.
- The stage reports nominal positions; the truth is the simulated scan. nominal = c + M^-1 (true - c)
  with M a 2 % scale and a 1 degree rotation (about the scan centre c), plus a Gaussian error of
  10 px RMS on every position, plus 10 % of the positions moved a further 15-30 px in a random
  direction. The object is simulated with a margin of MARGIN px (through `position_error`, whose
  own start positions are discarded) so that the perturbed patches stay on it; the few nominal
  positions that still fall outside [0, H - Ny] are clipped into it (their error is then smaller).
- Probe: the true probe as the start, refined (`--probe blind` starts from the data's mean
  pattern: with the 32 px spot the blind far-field start reaches only 0.37 correlation even from
  the true positions, so it cannot judge position refinement yet).

Configurations (all: gradient engine, gaussian likelihood, batch 8, object lr 0.1, probe lr 0.05,
EPOCHS epochs), compared against (0) the same run without any position refinement:
  a  positions only, [positions] lr POS_LR from epoch POS_START halved every 40 epochs (the README's
     recipe, lr 0.1 from epoch 10, left 95 of 121 positions more than 2 px off)
  b  + [scan] (lr SCAN_LR from epoch SCAN_START), positions' own corrections from SCAN_POS_START
  c  + [position_search] (its defaults: the misfits only, around the scan model's prediction, radius 40 px,
     from epoch 20 every 10; those still standing out left out of the loss)
  d  all together
Measured: final RMS position error after removing the global offset (`metrics.position_errors`,
median offset), after removing the best-fit affine map as well (least squares), the max error
(offset removed), the count of positions > 2 px off (offset removed), the object correlation over
the illuminated region (true probe power summed over the true positions >= 30 % of its maximum,
`metrics.correlation` with subpixel registration), and the wall time over that of run (0).

Real-data proxy: the Velociprobe Siemens star (tike .npz.bz2, 516 patterns 128 x 128, far field)
-----------------------------------------------------------------------------------------------
A reference run from the file's positions (probe from the file, 3 modes, refined; positions refined
gently and late: lr 0.3 from epoch 30, which moves them ~0.6 px RMS and lowers the loss below that of
the file's positions; lr 1.0 from epoch 5 random-walks them 4-8 px with the loss unchanged), then
runs from those positions perturbed by a 10 px RMS error, 10 % outliers 20-30 px off and a 1 %
scale; refined positions compared with the reference run's refined positions, after removing the
offset and after removing the best-fit affine map (RMS).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import RAW, machine, print_table, write_json

import cuptycho
from cuptycho import Config, Group, metrics, simulate
from cuptycho import io as cio

ROOT = Path(__file__).resolve().parents[2]
STAR = ROOT / ".." / "shared" / "data" / "tike_velociprobe_siemens_star" / "siemens-star-small.npz.bz2"

PROBE_WIDTH = 32.0          # px FWHM of the defocused spot: step 9.6 px at 70 % overlap (16 px: step 4.75)
MARGIN_ERROR = 20.0         # the simulator's `position_error`, for its margin only: 2 + ceil(3 * 20 / sqrt 2) = 45 px
OBJECTS = {"camera/astronaut": ("camera", "astronaut"), "brick/coins": ("brick", "coins")}
GEOMETRIES = {"raster11": dict(scan="raster", scan_size=(11, 11), jitter=1.0),
              "fermat121": dict(scan="fermat", scan_size=121)}

RANDOM_RMS = 10.0           # px
OUTLIER_FRACTION, OUTLIER_RANGE = 0.10, (15.0, 30.0)
SCALE, DEGREES = 1.02, 1.0
FAR = 2.0                   # px
STAR_PAD = 40               # px added around the star's object

EPOCHS = 150
POS_LR, POS_START = 1.0, 5
POS_SCHEDULE = {"kind": "step", "every": 40, "gamma": 0.5}
PROBE = "known"             # "known": the true probe as the start (refined); "blind": init_probe="data"
SCAN_LR, SCAN_START, SCAN_POS_START = 5e-4, 20, 10     # 2e-3 from epoch 5 shrank the scan by 5-10 %
SEARCH = {}                 # the [position_search] defaults (misfits only, from epoch 20 every 10, radius 40)
SEARCH_MISFIT = None        # None: the default (3: only positions whose pattern loss stands out; 0: all)


MAX_SCAN_SCALE = None        # --max-scan-scale: Config.max_scan_scale (bounds the scan model's scale)


def base_config(epochs, seed, **kw) -> dict:
    base = dict(epochs=epochs, batch=8, backend="cpu", seed=seed, loss="gaussian", max_scan_scale=MAX_SCAN_SCALE,
                init_probe="data" if PROBE == "blind" else "dataset",
                object=Group(lr=0.1), probe=Group(lr=0.05), metrics_every=max(1, epochs - 1))
    return {**base, **kw}


def configurations(epochs, seed):
    """name -> Config; "0" refines no position (the time reference)."""
    pos = Group(enabled=True, lr=POS_LR, start_epoch=POS_START, schedule=POS_SCHEDULE)
    pos_late = Group(enabled=True, lr=POS_LR, start_epoch=SCAN_POS_START, schedule=POS_SCHEDULE)
    scan = Group(enabled=True, lr=SCAN_LR, start_epoch=SCAN_START)
    search = {**SEARCH, **({} if SEARCH_MISFIT is None else {"misfit": SEARCH_MISFIT})}
    return {
        "0 none": Config(**base_config(epochs, seed)),
        "a positions": Config(**base_config(epochs, seed, positions=pos)),
        "b +scan": Config(**base_config(epochs, seed, positions=pos_late, scan=scan)),
        "c +search": Config(**base_config(epochs, seed, positions=pos, position_search=search)),
        "d all": Config(**base_config(epochs, seed, positions=pos_late, scan=scan, position_search=search)),
    }


# --------------------------------------------------------------------------- perturbation and measures

def rotation_scale(scale, degrees):
    th = np.deg2rad(degrees)
    return scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])


def perturb(true, high, *, rms, outliers, outlier_range, scale, degrees, seed):
    """The nominal positions a stage with these errors reports for the `true` ones, clipped into
    [0, high]; also the outlier indices and the map M (truth = c + M (nominal - c) before the errors)."""
    rng = np.random.default_rng(seed)
    c = true.mean(axis=0)
    m = rotation_scale(scale, degrees)
    nominal = c + (true - c) @ np.linalg.inv(m).T
    nominal = nominal + rng.normal(0.0, rms / np.sqrt(2.0), true.shape)
    n_out = int(round(outliers * len(true)))
    idx = rng.choice(len(true), n_out, replace=False)
    angle = rng.uniform(0, 2 * np.pi, n_out)
    length = rng.uniform(*outlier_range, n_out)
    nominal[idx] += length[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=1)
    return np.clip(nominal, 0.0, high), np.sort(idx), m


def affine_residual(estimate, truth):
    """Per-position errors after removing the best-fit affine map estimate ~ A truth + b (least squares)."""
    t = np.c_[np.asarray(truth, np.float64), np.ones(len(truth))]
    fit, *_ = np.linalg.lstsq(t, np.asarray(estimate, np.float64), rcond=None)
    d = np.asarray(estimate, np.float64) - t @ fit
    return np.hypot(d[:, 0], d[:, 1])


def position_summary(estimate, truth, outliers=None):
    e = metrics.position_errors(estimate, truth)
    aff = affine_residual(estimate, truth)
    out = {"rms": e["rms"], "rms_affine": float(np.sqrt(np.mean(aff ** 2))), "max": e["max"],
           "n_far": int(np.sum(e["errors"] > FAR)), "far": np.flatnonzero(e["errors"] > FAR).tolist()}
    if outliers is not None and len(outliers):
        out["outliers_far"] = int(np.sum(e["errors"][outliers] > FAR))
    return out


# --------------------------------------------------------------------------- simulated cases

def simulate_case(seed, objects, geometry):
    magnitude, phase = OBJECTS[objects]
    exp = simulate.preset("small_farfield", probe_options={"width": PROBE_WIDTH, "defocus": 5e-3},
                          magnitude=magnitude, phase=phase, position_error=MARGIN_ERROR, seed=seed,
                          **GEOMETRIES[geometry])
    true = np.asarray(exp.positions, np.float64)
    high = np.array(exp.obj.shape[-2:], np.float64) - np.array(exp.data.shape[-2:])
    nominal, outliers, m = perturb(true, high, rms=RANDOM_RMS, outliers=OUTLIER_FRACTION,
                                   outlier_range=OUTLIER_RANGE, scale=SCALE, degrees=DEGREES, seed=1000 + seed)
    ds = exp.dataset().replace(positions=nominal, **({"probe": exp.probe} if PROBE == "known" else {}))
    ds.truth = {**ds.truth, "positions": true}
    return exp, ds, outliers, m


def run_case(exp, ds, outliers, config, region):
    t0 = time.perf_counter()
    result = cuptycho.reconstruct(ds, config)
    wall = time.perf_counter() - t0
    true = ds.truth["positions"]
    row = position_summary(result.positions, true, outliers)
    corr = metrics.object_correlation(result.object[0], exp.obj[0], mask=region)
    searches = [e for e in result.events if e.get("event") == "position_search"]
    row.update(corr=float(corr), wall=wall, loss=float(result.loss[-1]),
               moved=[e["moved"] for e in searches],
               scan_matrix=None if result.scan_matrix is None else np.asarray(result.scan_matrix).tolist(),
               other_events=[e for e in result.events if e.get("event") != "position_search"])
    return row


def simulated(seeds, epochs, cases=None, configs=None, verbose=True):
    rows = []
    for seed in seeds:
        for objects in OBJECTS:
            for geometry in GEOMETRIES:
                if cases is not None and (objects, geometry) not in cases:
                    continue
                exp, ds, outliers, m = simulate_case(seed, objects, geometry)
                region = metrics.illuminated(exp.probe, exp.positions, exp.obj.shape[-2:], 0.3)
                start = position_summary(ds.positions, ds.truth["positions"], outliers)
                case = f"s{seed} {objects} {geometry}"
                rows.append({"case": case, "config": "start", **start, "step": exp.step,
                             "obj_shape": list(exp.obj.shape[-2:])})
                if verbose:
                    print(f"{case}: {ds.n_patterns} patterns, step {exp.step:.2f} px, object {exp.obj.shape[-2:]}, "
                          f"start rms {start['rms']:.2f} px (affine removed {start['rms_affine']:.2f}), "
                          f"max {start['max']:.1f}, {start['n_far']} > {FAR} px", flush=True)
                t_ref = None
                for name, cfg in configurations(epochs, seed).items():
                    if configs is not None and name.split()[0] not in configs and name != "0 none":
                        continue
                    row = run_case(exp, ds, outliers, cfg, region)
                    if name == "0 none":
                        t_ref = row["wall"]
                    row.update(case=case, config=name, time_rel=row["wall"] / t_ref if t_ref else None)
                    rows.append(row)
                    if verbose:
                        print(f"  {name:12s} rms {row['rms']:6.2f}  aff {row['rms_affine']:6.2f}  "
                              f"max {row['max']:6.2f}  >{FAR:g}px {row['n_far']:3d}  corr {row['corr']:.4f}  "
                              f"{row['wall']:6.1f} s (x{row['time_rel']:.2f})  searches moved {row['moved']}",
                              flush=True)
    return rows


# --------------------------------------------------------------------------- the Siemens star

STAR_MODES = 3                # probe modes: the star's loss falls ~25 % with 3 instead of 1
STAR_REF_LR, STAR_REF_START = 0.3, 30   # the reference's positions: gentle and late (see the module text)


def star_config(epochs, seed, positions=None, scan=False, search=None):
    """The star's configuration: probe from the file (3 modes), refined; `positions` a Group or None."""
    kw = dict(epochs=epochs, batch=32, backend="cpu", seed=seed, loss="gaussian", init_probe="dataset",
              n_probe_modes=STAR_MODES, object=Group(lr=0.1), probe=Group(lr=0.05), metrics_every=max(1, epochs - 1))
    if positions is not None:
        kw["positions"] = positions
    if scan:
        kw["scan"] = Group(enabled=True, lr=SCAN_LR, start_epoch=SCAN_START)
    if search is not None:
        kw["position_search"] = search
    return Config(**kw)


def star(seeds, epochs, frames=None, verbose=True):
    ds = cio.load(STAR)
    if frames is not None:
        ds = ds.replace(data=ds.data[:frames], positions=ds.positions[:frames])
    # the file's scan sits 4 px from the object's edge: pad the object by STAR_PAD px on every side so
    # that the perturbed positions stay on it
    ds = ds.replace(positions=ds.positions + STAR_PAD, obj_shape=tuple(int(n) + 2 * STAR_PAD for n in ds.obj_shape))
    t0 = time.perf_counter()
    ref = cuptycho.reconstruct(ds, star_config(epochs, 0, positions=Group(enabled=True, lr=STAR_REF_LR,
                                                                          start_epoch=STAR_REF_START)))
    t_ref = time.perf_counter() - t0
    reference = np.asarray(ref.positions)
    moved = metrics.position_errors(reference, ds.positions)
    rows = [{"case": "star", "config": "reference", "rms": moved["rms"], "max": moved["max"], "wall": t_ref,
             "time_rel": 1.0}]
    if verbose:
        print(f"star: {ds.n_patterns} patterns {ds.data.shape[1:]}, object {ds.obj_shape}, reference run "
              f"{t_ref:.1f} s, its positions moved {moved['rms']:.2f} px RMS from the file's", flush=True)
    high = np.array(ds.obj_shape, np.float64) - np.array(ds.data.shape[-2:])
    for seed in seeds:
        nominal, outliers, _ = perturb(reference, high, rms=RANDOM_RMS, outliers=OUTLIER_FRACTION,
                                       outlier_range=(20.0, 30.0), scale=1.01, degrees=0.0, seed=2000 + seed)
        pds = ds.replace(positions=nominal)
        start = position_summary(nominal, reference, outliers)
        rows.append({"case": f"star s{seed}", "config": "start", **start})
        search = {**SEARCH, **({} if SEARCH_MISFIT is None else {"misfit": SEARCH_MISFIT})}
        pos = Group(enabled=True, lr=POS_LR, start_epoch=POS_START, schedule=POS_SCHEDULE)
        pos_late = Group(enabled=True, lr=POS_LR, start_epoch=SCAN_POS_START, schedule=POS_SCHEDULE)
        for name, cfg in {"a positions": star_config(epochs, seed, positions=pos),
                          "d all": star_config(epochs, seed, positions=pos_late, scan=True, search=search)}.items():
            t0 = time.perf_counter()
            res = cuptycho.reconstruct(pds, cfg)
            wall = time.perf_counter() - t0
            row = position_summary(res.positions, reference, outliers)
            row.update(case=f"star s{seed}", config=name, wall=wall, time_rel=wall / t_ref)
            rows.append(row)
            if verbose:
                print(f"  {name:12s} rms {row['rms']:6.2f}  aff {row['rms_affine']:6.2f}  max {row['max']:6.2f}  "
                      f">{FAR:g}px {row['n_far']:3d}  {wall:6.1f} s", flush=True)
    return rows


COLUMNS = [("case", "case", "s"), ("config", "config", "s"), ("rms", "rms", ".2f"), ("rms_aff", "rms_affine", ".2f"),
           ("max", "max", ".2f"), (f">{FAR:g}px", "n_far", "d"), ("outl>2", "outliers_far", "d"),
           ("corr", "corr", ".4f"), ("wall_s", "wall", ".1f"), ("t/t0", "time_rel", ".2f")]


def main(argv=None):
    global PROBE, PROBE_WIDTH, SEARCH_MISFIT, MAX_SCAN_SCALE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None, help=f"default {EPOCHS}; 40 with --quick")
    parser.add_argument("--star-epochs", type=int, default=100)
    parser.add_argument("--star-frames", type=int, default=None, help="use only the first N star patterns")
    parser.add_argument("--configs", nargs="+", default=None, help="subset of a b c d (0 always runs)")
    parser.add_argument("--no-real", action="store_true", help="skip the Siemens star")
    parser.add_argument("--only-real", action="store_true", help="only the Siemens star")
    parser.add_argument("--quick", action="store_true", help="one small case, few epochs, no star (< 1 min)")
    parser.add_argument("--json", metavar="PATH", default=None)
    parser.add_argument("--probe", choices=("known", "blind"), default="known",
                        help="known: start from the true probe (refined); blind: init_probe='data' (refined)")
    parser.add_argument("--probe-width", type=float, default=32.0)
    parser.add_argument("--search-misfit", type=float, default=SEARCH_MISFIT,
                        help="[position_search] misfit: search only positions whose loss is this x the median "
                             "(default: the option's default)")
    parser.add_argument("--max-scan-scale", type=float, default=None, help="Config.max_scan_scale (default: off)")
    args = parser.parse_args(argv)
    MAX_SCAN_SCALE = args.max_scan_scale
    epochs = args.epochs or (40 if args.quick else EPOCHS)
    PROBE, PROBE_WIDTH, SEARCH_MISFIT = args.probe, args.probe_width, args.search_misfit
    rows = []
    t0 = time.perf_counter()
    if args.quick:                               # 40 epochs: the default search runs at 20 and 30
        rows += simulated([0], epochs, cases=[("camera/astronaut", "raster11")], configs=["a", "c"])
    else:
        if not args.only_real:
            rows += simulated(args.seeds, epochs, configs=args.configs)
        if not args.no_real and STAR.is_file():
            rows += star(args.seeds, args.star_epochs, frames=args.star_frames)
    print()
    print_table(rows, COLUMNS)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        record = {"experiment": "position_refinement", "rows": rows, "epochs": epochs, "machine": machine(),
                  "argv": vars(args)}
        print(f"wrote {write_json(args.json, record)}")
    return rows


if __name__ == "__main__":
    main()
