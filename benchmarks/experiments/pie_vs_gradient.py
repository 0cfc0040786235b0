"""PIE engines vs the gradient engine: convergence against wall time (known probe), M-ePIE vs
M-rPIE in a blind three-mode reconstruction on a full and a half-density scan (after SciComPty),
and position refinement from 5 px RMS errors (registration + per-position Adam vs gradients).

    python benchmarks/experiments/pie_vs_gradient.py [--epochs N] [--blind-epochs N] [--backend cpu]
                                                     [--seed 0] [--json out.json] [--quick] [--every 20]

`--quick` (about 12 s idle) runs half of every part A run's epochs, once, and 100 blind epochs: a
smoke run. The default run takes about 45 s on 2 idle CPU cores (2.5 minutes under heavy load).
`--epochs N` gives every part A run N epochs (default: each run its own, below).

Dataset: the "small_farfield" preset (`cuptycho.simulate.preset`, deterministic from --seed):
10 keV far field, 64 x 64 patterns, a defocused Gaussian spot (FWHM 16 px), a 7 x 7 raster at 70 %
linear overlap (step 4.75 px) with 1 px RMS jitter, the camera / astronaut object (amplitude
0.5..1, phase -pi/2..pi/2, 99 x 99 px), 1e6 photons in the brightest pattern, Poisson noise.
The true positions are given to the engines (no position error, no position refinement).

Part A: convergence vs wall time. Known probe (`ds.probe = exp.probe`, `init_probe="dataset"`,
`fit_probe_scale` off: the simulated probe already has the photon scale), probe fixed, only the
object refined from the flat start, gaussian loss. Runs (engine defaults, `cuptycho.settings.PIE`):

- ePIE, rPIE (alpha 0.25), mPIE (alpha 0.25, friction 0.7, feedback 0.3, momentum every 20
  position updates): sequential (batch None = one position per update), random order per epoch;
- rPIE batch 8: the parallel (overlap-normalised) PIE update of 8 positions at a time;
- gradient batch 8: Adam on the object, lr 0.2 (constant), minibatches of 8 patterns; and the same
  with the lr halved every 30 epochs ("lr/2 every 30").

Every epoch the engine compares the object with the truth (`metrics_every=1`):
"object_correlation" is the complex correlation over the scanned region after subpixel
registration and phase-ramp removal (`Reconstruction.metrics`). Time is the engine's own: a
history record's "seconds" is taken in `Reconstruction.run` from just before `run_epoch` to just
before `record` is called, so it holds the epoch's updates plus the schedule step, the
constraints and the TV adaptation (none here), and NOT the metrics (computed inside `record`),
the state snapshot taken after every epoch (for divergence recovery) or the progress callback.
Cumulative time is the running sum of "seconds"; nothing is subtracted. "wall/epoch" (metrics and
snapshot included) is reported beside it: the metrics add about 3 ms per epoch here, about as much
as a whole batched epoch. Every engine runs once for 2 untimed epochs first, so FFT plans and
first-call costs do not land on the first timed engine; then every part A run is repeated
(--repeats, 3 by default, interleaved) and each epoch's time is the median over the repeats (the
correlation curves of the repeats agree; the JSON gives their largest spread). Part B runs once.

Part C: position refinement. 128 x 128 patterns, the same probe scaled (FWHM 32 px), a 6 x 6
raster (step 9.6 px), positions 5 px RMS off, known probe, 80 epochs: rPIE and mPIE with the
cross-correlation refinement (positions lr 0.3 from epoch 5) and the gradient engine (batch 8,
object lr 0.2, positions lr 0.2 from epoch 5, halved every 40). Errors after removing the median
offset (a global shift the data cannot see).

How to read it: in table A, "s/epoch" is the median engine time per epoch; "t90"/"t95" are the
cumulative engine seconds (and "e90"/"e95" the number of epochs) until the correlation first
reached 0.90 / 0.95 ("-": never within the run). The engine that reaches 0.95 in the fewest
seconds converges fastest in wall time on this machine; "best" vs "final" shows whether it stays
there. The "correlation after T s" table samples each curve at fixed engine times. In table B,
compare the two engines on each scan, and each engine between the scans.

Measured (2 CPU cores, AMD EPYC, seed 0, default run; the correlations are reproducible, the
times move with the load of the machine by up to 2x; measured at commit 34e0589):

- Per epoch, ePIE, rPIE and mPIE cost the same (14 ms: 49 sequential updates, per-update
  overhead dominates at 64 x 64); batched rPIE and the gradient engine 4-5 ms.
- To 0.95: mPIE 9 epochs (0.13 s), rPIE 16 (0.24 s), ePIE 27 (0.39 s), rPIE batch 8 64 epochs
  (0.30 s: a third of the cost per epoch, four times the epochs), gradient batch 8 23 epochs
  (0.10 s): the gradient engine gets there first in seconds, mPIE first in epochs.
- Final: ePIE 0.975 (100 epochs), rPIE 0.978 (60), mPIE 0.982 (40), rPIE batch 8 0.979 (150),
  gradient 0.977 (40; best 0.980). Run longer (--epochs 150), the PIE engines keep improving (ePIE
  0.980, rPIE 0.987, mPIE 0.990) but the gradient engine at a constant lr 0.2 does not: its data
  loss is lowest near epoch 15 and then climbs (~3e3 -> ~1e4), the correlation peaks at 0.980
  near epoch 45 and falls to 0.84 by epoch 150. Halving the lr every 30 epochs keeps the loss
  falling; its correlation still sags a little (0.981 -> 0.973), most likely through the dimly lit
  rim of the scanned region, where Adam's per-pixel normalisation lets the amplitude run up to
  |O| ~ 30 (rPIE: 1.4) and the metric's phase-ramp fit is sensitive (cPCC without ramp removal
  over the same region: 0.989).
- Part B (300 epochs): M-rPIE ends higher than M-ePIE on both scans (full 0.992 vs 0.980, half
  0.977 vs 0.964) at a lower loss, and both recover the mode powers (81/16/3 %). On the full scan
  M-ePIE is ahead early (0.95 at epoch 38 vs 50; after 100 epochs 0.968 vs 0.975 is already
  reversed); at half density M-rPIE reaches 0.95 first (135 vs 146). Halving the density costs
  both engines ~0.015 in correlation and 3-4x the epochs to 0.95.
- Part C (80 epochs): the registration refinement ends at 0.23 px RMS (rPIE) and 0.27 px (mPIE),
  every position within 0.56 px; the gradient engine's refinement at 1.78 px RMS (median 0.92,
  one position 6 px off: the corner positions' basin). The PIE runs take 4.2 s against 0.8 s,
  half of it in the registration (36 patches of 128 x 128 per epoch on the host). Exact values
  move a little between processes (FFTW plans differ, and refinement amplifies rounding).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import RAW, add_arguments, machine, print_table, resolve_epochs, resolve_every, run_tracked, write_json

from cuptycho import engines, simulate
from cuptycho import Config, Group

PRESET = "small_farfield"
THRESHOLDS = (0.90, 0.95)
TIMES = (0.1, 0.25, 0.5, 1.0, 2.0)           # s of engine time at which the curves are sampled
QUICK_FRACTION = 0.5                          # --quick: this fraction of every part A run's epochs
BLIND_EPOCHS, QUICK_BLIND_EPOCHS = 300, 100
N_MODES = 3
HALF_SCAN = (5, 5)                            # 25 positions over the span of the 7 x 7 raster
WARMUP_EPOCHS = 2
REPEATS = 3                                   # part A runs per engine (1 with --quick)


def _part_a_runs():
    """(label, Config keywords, default epochs) of part A; fresh Groups every call."""
    return [
        ("ePIE", dict(engine="epie"), 100),
        ("rPIE", dict(engine="rpie"), 60),
        ("mPIE", dict(engine="mpie"), 40),
        ("rPIE batch 8", dict(engine="rpie", batch=8), 150),
        ("gradient batch 8", dict(batch=8, object=Group(lr=0.2)), 40),
        ("gradient batch 8, lr/2 every 30", dict(batch=8, object=Group(lr=0.2, schedule={
            "kind": "step", "every": 30, "gamma": 0.5})), 100),
    ]


PART_B_ENGINES = (("M-ePIE", "epie"), ("M-rPIE", "rpie"))

PROGRESS = [("epoch", "epoch", "d"), ("loss", "loss", ".4e"), ("corr", "object_correlation", ".4f"),
            ("s", "seconds", ".4f"), ("cum_s", "cum_seconds", ".3f"), ("wall", "wall", ".4f")]

TABLE_A = [("engine", "label", "s"), ("epochs", "epochs", "d"), ("s/epoch", "s_per_epoch", ".4f"),
           ("wall/epoch", "wall_per_epoch", ".4f"), ("final corr", "final_correlation", ".4f"),
           ("best corr", "best_correlation", ".4f"), ("e90", "epochs_to_0.90", "d"),
           ("t90 s", "seconds_to_0.90", ".3f"), ("e95", "epochs_to_0.95", "d"), ("t95 s", "seconds_to_0.95", ".3f"),
           ("total s", "engine_seconds", ".2f")]

TABLE_B = [("scan", "scan", "s"), ("engine", "label", "s"), ("positions", "positions", "d"),
           ("overlap", "overlap", ".2f"), ("final corr", "final_correlation", ".4f"),
           ("best corr", "best_correlation", ".4f"), ("e95", "epochs_to_0.95", "d"),
           ("final loss", "final_loss", ".2f"), ("modes %", "modes", "s"), ("s/epoch", "s_per_epoch", ".4f"),
           ("seconds", "engine_seconds", ".2f"), ("wall s", "wall_seconds", ".2f")]


# --------------------------------------------------------------------------- one run

def run(ds, config: Config, label, every=20, verbose=True):
    """Reconstruct `ds` with `config`, metrics every epoch; returns (result, history rows, summary)."""
    recon = engines.create(ds, config)
    cum = [0.0]

    def cumulative(rec):
        cum[0] += rec["seconds"]
        return {"cum_seconds": cum[0]}

    if verbose:
        print(f"-- {label}: {config.epochs} epochs")
    result, rows, wall = run_tracked(recon, PROGRESS, every=every, verbose=verbose, derive=cumulative)
    return result, rows, summarise(label, rows, wall, result)


def summarise(label, rows, wall, result):
    corr = [r.get("object_correlation") for r in rows]
    valid = [c for c in corr if c is not None]
    out = {
        "label": label,
        "epochs": len(rows),
        "s_per_epoch": float(np.median([r["seconds"] for r in rows])),
        "wall_per_epoch": float(np.median([r["wall"] for r in rows])),
        "engine_seconds": float(sum(r["seconds"] for r in rows)),
        "wall_seconds": wall,
        "final_correlation": corr[-1],
        "best_correlation": max(valid) if valid else None,
        "final_loss": rows[-1]["loss"],
        "events": result.events,
    }
    for th in THRESHOLDS:
        hit = next((r for r in rows if r.get("object_correlation") is not None and r["object_correlation"] >= th), None)
        out[f"epochs_to_{th:.2f}"] = None if hit is None else hit["epoch"] + 1
        out[f"seconds_to_{th:.2f}"] = None if hit is None else hit["cum_seconds"]
    for t in TIMES:
        done = [r for r in rows if r["cum_seconds"] <= t and r.get("object_correlation") is not None]
        out[f"corr_at_{t:g}s"] = done[-1]["object_correlation"] if done else None
    return out


def curve(rows):
    """The history the JSON keeps: epoch, seconds, cumulative seconds, wall, correlation, loss."""
    return [{"epoch": r["epoch"], "seconds": r["seconds"], "cum_seconds": r["cum_seconds"], "wall": r["wall"],
             "object_correlation": r.get("object_correlation"), "loss": r["loss"]} for r in rows]


def warm_up(ds_factory, configs, backend, seed):
    """A couple of untimed epochs per engine (no truth: no metrics), so first-call costs land here."""
    for kw in configs:
        ds = ds_factory()
        ds.truth = {}
        kw = dict(kw)
        kw.update(epochs=WARMUP_EPOCHS, backend=backend, seed=seed)
        engines.create(ds, Config(**kw)).run()


# --------------------------------------------------------------------------- part A

def part_a(args, every):
    exp = simulate.preset(PRESET, seed=args.seed)

    def known_probe():
        ds = exp.dataset()
        ds.probe = exp.probe          # Experiment.dataset() attaches the truth but no probe guess
        return ds

    base = dict(backend=args.backend, seed=args.seed, init_probe="dataset", fit_probe_scale=False,
                probe=Group(enabled=False), positions=Group(enabled=False), metrics_every=1)
    runs = _part_a_runs()
    epochs = {}
    for label, _, default in runs:
        if args.epochs is not None:
            epochs[label] = resolve_epochs(args)
        else:
            epochs[label] = max(5, round(default * QUICK_FRACTION)) if args.quick else default
    print(f"part A: {PRESET}, {exp.n_positions} patterns {exp.data.shape[1:]}, object {exp.obj.shape[1:]}, step "
          f"{exp.step:.2f} px, known probe, object only, backend {args.backend}")
    warm_up(known_probe, [{**base, "metrics_every": 10 ** 6, **kw} for _, kw, _ in runs], args.backend, args.seed)

    repeats = args.repeats if args.repeats is not None else (1 if args.quick else REPEATS)
    # the repeats interleave (every engine once, then again), so a burst of load on a shared
    # machine does not fall on all the repeats of one engine; only the first prints its progress
    runs_rows, walls, results = {label: [] for label, _, _ in runs}, {label: [] for label, _, _ in runs}, {}
    for rep in range(repeats):
        if repeats > 1:
            print(f" repeat {rep + 1} of {repeats}")
        for label, kw, _ in runs:
            cfg = Config(**{**base, **kw, "epochs": epochs[label]})
            result, rows, summary = run(known_probe(), cfg, label, every=every, verbose=args.every_verbose and rep == 0)
            runs_rows[label].append(rows)
            walls[label].append(summary["wall_seconds"])
            results.setdefault(label, result)
            print(f"   {label}: {summary['epochs']} epochs, {summary['engine_seconds']:.2f} s engine "
                  f"({summary['wall_seconds']:.2f} s wall), correlation {summary['final_correlation']:.4f}", flush=True)

    summaries, histories, configs = [], {}, {}
    for label, _, _ in runs:
        reps = runs_rows[label]
        n = min(len(r) for r in reps)
        merged, cum = [], 0.0
        for i in range(n):
            seconds = [r[i]["seconds"] for r in reps]
            cum += float(np.median(seconds))
            merged.append(dict(reps[0][i], seconds=float(np.median(seconds)), cum_seconds=cum,
                               wall=float(np.median([r[i]["wall"] for r in reps])), seconds_runs=seconds))
        summary = summarise(label, merged, float(np.median(walls[label])), results[label])
        corr = np.array([[r[i].get("object_correlation", np.nan) for i in range(n)] for r in reps], dtype=float)
        summary["repeats"] = len(reps)
        summary["correlation_spread"] = float(np.nanmax(corr.max(axis=0) - corr.min(axis=0)))
        summaries.append(summary)
        histories[label] = [dict(h, seconds_runs=m["seconds_runs"]) for h, m in zip(curve(merged), merged)]
        configs[label] = results[label].config
    dataset = {"preset": PRESET, "seed": args.seed, "patterns": exp.n_positions, "step_px": exp.step,
               "object_shape": exp.obj.shape[1:], "probe_diameter_px": simulate.probe_diameter(exp.probe)}
    return summaries, histories, configs, dataset


# --------------------------------------------------------------------------- part B

def part_b(args, every, blind_epochs):
    full = simulate.preset(PRESET, seed=args.seed, n_probe_modes=N_MODES)
    n_full = int(round(np.sqrt(full.n_positions)))
    factor = (n_full - 1) / (HALF_SCAN[0] - 1)           # same span: (7 - 1) s = (5 - 1) s'
    half = simulate.preset(PRESET, seed=args.seed, n_probe_modes=N_MODES, scan_size=HALF_SCAN, step=full.step * factor)
    overlap = simulate.PRESETS[PRESET]["overlap"]
    scans = (("full", full, overlap), ("half", half, 1.0 - factor * (1.0 - overlap)))
    base = dict(backend=args.backend, seed=args.seed, init_probe="data", n_probe_modes=N_MODES,
                probe=Group(enabled=True), positions=Group(enabled=False),
                constraints={"orthogonalize_probe": True}, metrics_every=1)
    print(f"\npart B: blind, {N_MODES} probe modes from init_probe='data', orthogonalised every epoch, "
          f"{blind_epochs} epochs; full {full.n_positions} positions (step {full.step:.2f} px), half "
          f"{half.n_positions} positions (step {half.step:.2f} px), object {full.obj.shape[1:]} / {half.obj.shape[1:]}")
    warm_up(full.dataset, [{**base, "engine": e} for _, e in PART_B_ENGINES], args.backend, args.seed)

    summaries, histories, configs = [], {}, {}
    for scan, exp, ov in scans:
        for label, name in PART_B_ENGINES:
            cfg = Config(**{**base, "engine": name, "epochs": blind_epochs})
            result, rows, summary = run(exp.dataset(), cfg, f"{label}, {scan} scan", every=every,
                                        verbose=args.every_verbose)
            power = np.sum(np.abs(result.probe.astype(np.complex128)) ** 2, axis=(1, 2))
            power = np.sort(power)[::-1] / power.sum()
            summary.update(scan=scan, label=label, engine=name, positions=exp.n_positions, step_px=exp.step,
                           overlap=ov, mode_powers=power.tolist(), modes="/".join(f"{100 * p:.0f}" for p in power))
            summaries.append(summary)
            histories[f"{label}, {scan}"] = curve(rows)
            configs[f"{label}, {scan}"] = result.config
            print(f"   {label}, {scan} scan: correlation {summary['final_correlation']:.4f}, loss "
                  f"{summary['final_loss']:.2f}, {summary['engine_seconds']:.2f} s engine", flush=True)
    true_power = simulate.default_power_fractions(N_MODES)
    dataset = {"preset": PRESET, "seed": args.seed, "n_probe_modes": N_MODES, "true_mode_powers": true_power,
               "full": {"scan_size": [n_full, n_full], "patterns": full.n_positions, "step_px": full.step,
                        "overlap": overlap, "object_shape": full.obj.shape[1:]},
               "half": {"scan_size": list(HALF_SCAN), "patterns": half.n_positions, "step_px": half.step,
                        "overlap": scans[1][2], "object_shape": half.obj.shape[1:]}}
    return summaries, histories, configs, dataset


# --------------------------------------------------------------------------- part C

# 128 x 128 patterns, a 6 x 6 raster (~9.6 px steps), positions 5 px RMS off: the acceptance case of
# the PIE position refinement (tests/test_pie.py), next to the gradient engine's refinement.
C_SIM = dict(shape=(128, 128), probe_options={"width": 32.0, "defocus": 5e-3}, scan_size=(6, 6), position_error=5.0)
C_EPOCHS, QUICK_C_EPOCHS = 80, 30
TABLE_C = [("engine", "label", "s"), ("epochs", "epochs", "d"), ("start rms", "start_rms", ".2f"),
           ("rms px", "final_rms", ".3f"), ("median px", "final_median", ".3f"), ("max px", "final_max", ".3f"),
           ("final corr", "final_correlation", ".4f"), ("seconds", "engine_seconds", ".2f")]


def _part_c_runs():
    return [
        ("rPIE + registration", dict(engine="rpie", positions=Group(lr=0.3, start_epoch=5))),
        ("mPIE + registration", dict(engine="mpie", positions=Group(lr=0.3, start_epoch=5))),
        ("gradient batch 8", dict(batch=8, object=Group(lr=0.2), positions=Group(
            lr=0.2, start_epoch=5, schedule={"kind": "step", "every": 40, "gamma": 0.5}))),
    ]


def part_c(args, every, epochs):
    exp = simulate.preset(PRESET, seed=2, **C_SIM)

    def dataset():
        ds = exp.dataset()
        ds.probe = exp.probe
        return ds

    print(f"\npart C: position refinement, {exp.n_positions} patterns {exp.data.shape[1:]}, step {exp.step:.2f} px, "
          f"positions {C_SIM['position_error']} px RMS off, known probe, {epochs} epochs")
    summaries, histories = [], {}
    for label, kw in _part_c_runs():
        cfg = Config(backend=args.backend, seed=args.seed, metrics_every=10, epochs=epochs, **kw)
        result, rows, summary = run(dataset(), cfg, label, every=every, verbose=args.every_verbose)
        done = [r for r in rows if "position_error_rms" in r]
        summary.update(start_rms=done[0]["position_error_rms"], final_rms=done[-1]["position_error_rms"],
                       final_median=done[-1]["position_error_median"],
                       final_max=float(np.max(np.hypot(*(result.positions - exp.positions
                                                          - np.median(result.positions - exp.positions, axis=0)).T))))
        summaries.append(summary)
        histories[label] = [{"epoch": r["epoch"], "seconds": r["seconds"], "loss": r["loss"],
                             "position_error_rms": r.get("position_error_rms"),
                             "object_correlation": r.get("object_correlation")} for r in rows]
        print(f"   {label}: {summary['start_rms']:.2f} -> {summary['final_rms']:.3f} px RMS, correlation "
              f"{summary['final_correlation']:.4f}, {summary['engine_seconds']:.2f} s engine", flush=True)
    return summaries, histories, {"sim": {k: v for k, v in C_SIM.items()}, "seed": 2, "step_px": exp.step}


# --------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    add_arguments(parser, epochs=100, quick_epochs=30, every=20)
    for action in parser._actions:
        if action.dest == "epochs":
            action.help = ("epochs of every part A run (default: each run its own, 40-150; 50 %% of that with "
                           "--quick)")
    parser.add_argument("--blind-epochs", type=int, default=None,
                        help=f"epochs of the part B runs (default {BLIND_EPOCHS}; {QUICK_BLIND_EPOCHS} with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"part A runs per engine; time per epoch = the median over them (default {REPEATS}; "
                             "1 with --quick)")
    parser.add_argument("--quiet", dest="every_verbose", action="store_false",
                        help="no per-epoch progress rows, only a line per run and the tables")
    args = parser.parse_args(argv)
    if args.epochs is not None:
        resolve_epochs(args)                          # validates
    blind_epochs = args.blind_epochs if args.blind_epochs is not None else \
        (QUICK_BLIND_EPOCHS if args.quick else BLIND_EPOCHS)
    if blind_epochs < 1:
        raise SystemExit(f"--blind-epochs must be >= 1, got {blind_epochs}")
    if args.repeats is not None and args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    every = resolve_every(args, 10 ** 6)

    t_all = time.perf_counter()
    a_rows, a_hist, a_cfg, a_data = part_a(args, every)
    b_rows, b_hist, b_cfg, b_data = part_b(args, every, blind_epochs)
    c_rows, c_hist, c_data = part_c(args, every, QUICK_C_EPOCHS if args.quick else C_EPOCHS)
    total = time.perf_counter() - t_all

    print("\nA: convergence vs engine time (known probe, object only); e = epochs, t = cumulative engine seconds "
          "to reach the correlation")
    print_table(a_rows, TABLE_A)
    print("\nA: object correlation after T seconds of engine time (last epoch completed by then)")
    print_table(a_rows, [("engine", "label", "s")] + [(f"{t:g} s", f"corr_at_{t:g}s", ".4f") for t in TIMES])
    print(f"\nB: blind, {N_MODES} probe modes (true powers "
          f"{'/'.join(f'{100 * p:.0f}' for p in simulate.default_power_fractions(N_MODES))} %), {blind_epochs} epochs")
    print_table(b_rows, TABLE_B)
    print("\nC: position refinement from 5 px RMS (errors after removing the median offset)")
    print_table(c_rows, TABLE_C)
    m = machine()
    print(f"\ntotal {total:.1f} s on {m['cpu_count']} CPUs ({m.get('cpu_model')}), backend {args.backend}"
          + ("  (--quick: a smoke run, not converged)" if args.quick else ""))

    if args.json:
        payload = {
            "experiment": "pie_vs_gradient",
            "config": {"argv": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                       "thresholds": THRESHOLDS, "times": TIMES, "blind_epochs": blind_epochs,
                       "part_a": {"dataset": a_data, "runs": a_cfg},
                       "part_b": {"dataset": b_data, "runs": b_cfg}},
            "histories": {"part_a": a_hist, "part_b": b_hist, "part_c": c_hist},
            "tables": {"part_a": a_rows, "part_b": b_rows, "part_c": c_rows},
            "part_c": c_data,
            "total_seconds": total,
            "machine": m,
        }
        print(f"wrote {write_json(args.json, payload)}")
    return a_rows, b_rows


if __name__ == "__main__":
    main()
