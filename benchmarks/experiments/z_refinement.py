"""z refinement: recover the sample-to-detector distance of an optical near-field ptychography
experiment together with the object, the probe being known.

After the z-refinement (autofocus) setting of visible-light ptychography: the distance is measured
with a ruler to a few millimetres, and the reconstruction has to find it.

    python benchmarks/experiments/z_refinement.py [--epochs 100] [--backend cpu] [--seed 0]
                                                  [--json out.json] [--quick] [--every 5]
                                                  [--z-start-error 0.3]

Dataset (`cuptycho.simulate.simulate`, deterministic from --seed)
----------------------------------------------------------------
- HeNe laser, lambda = 632.8 nm; parallel beam, a 256 x 256 camera with 6.5 um pixels (sCMOS) at
  z = 10 mm behind the sample (angular-spectrum propagation). The transfer function is sampled
  without aliasing up to N dx^2 / lambda = 17.1 mm, so the start distance (13 mm) is below it too.
  Fresnel zone sqrt(lambda z) = 79.5 um = 12.2 px: the camera records strongly propagated holograms.
- Probe: a diffuser-structured beam (`probe="images"`: gravel amplitude 0.5..1, grass phase
  -1..1 rad, Gaussian envelope 110 px = 0.7 mm FWHM), one mode, known (the probe group is off).
  A structured probe makes z identifiable; with a smooth beam the object absorbs a z error (it turns
  into its own propagated version) and z hardly moves (measured: a 100 px flat Gaussian beam left
  29 % of a 30 % z error after 120 epochs).
- Scan: a 64-point Fermat spiral, 70 % overlap (step 22.7 px = 148 um), positions known exactly;
  the object (camera amplitude 0.5..1, astronaut phase -pi/2..pi/2) is 452 x 451 px (2.9 mm).
- 1e8 photons in the brightest frame, Poisson noise plus 3 counts RMS read-out noise.
- Start: z 30 % too large (13 mm instead of 10 mm, `--z-start-error`).

Reconstruction (`cuptycho.reconstruct` via `cuptycho.engines.create`)
---------------------------------------------------------------------------
- The known probe (`Dataset.probe` = the true probe, `init_probe="dataset"`, `fit_probe_scale`
  off: the probe is already at the photon scale, and rescaling it against the flat start object
  would make it wrong), probe and positions not refined.
- Gaussian (amplitude) likelihood, minibatches of 16 frames (4 Adam steps per epoch).
- z first: z (Adam, lr 0.01, i.e. steps of about 1 % of the start z) from epoch 0, the object (Adam,
  lr 0.1, halved every 30 epochs: at a constant 0.1 the minibatch noise made the loss creep up
  again after epoch 45; flat start) only from epoch 10. For the first 10 epochs the model is the known probe's own
  hologram, |prop_z(P)|^2 against the data, which pins z down from far away; by epoch 10 z is within
  a few per cent and the object then forms at nearly the right distance. Refining both from the
  start (or the object first) lets the object absorb the wrong z: then z is captured only from
  about 10 % (measured with the object from epoch 0 and z from epoch 5: from +10 % z converged;
  from +20 % an error of 18 % was left after 120 epochs, from +30 % one of 29 % after 150).

Columns: epoch, loss (mean minibatch data loss), z_mm (current z), dz_um (z - z_true, micrometres),
z_err (|z - z_true| / z_true), corr (object correlation, every --every epochs), s (engine seconds).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import RAW, add_arguments, machine, resolve_epochs, resolve_every, run_tracked, write_json

from cuptycho import engines, geometry, simulate
from cuptycho import Config, Group

WAVELENGTH = 632.8e-9
PIXEL = 6.5e-6
Z_TRUE = 10e-3

SIMULATION = dict(
    shape=(256, 256),
    probe="images",
    probe_options={"magnitude": "gravel", "phase": "grass", "amplitude_range": (0.5, 1.0), "phase_range": (-1.0, 1.0),
                   "envelope": 110.0},
    n_probe_modes=1,
    scan="fermat", scan_size=64, overlap=0.7, jitter=0.0,
    propagator="angular_spectrum", wavelength=WAVELENGTH, z=Z_TRUE, pixel_size=PIXEL,
    photons=1e8, read_noise=3.0,
    position_error=0.0, z_error=0.3,
)

COLUMNS = [("epoch", "epoch", "d"), ("loss", "loss", ".4e"), ("z_mm", "z_mm", ".4f"), ("dz_um", "dz_um", "+.3f"),
           ("z_err", "z_error", ".6f"), ("corr", "object_correlation", ".5f"), ("s", "seconds", ".3f")]


def make_config(epochs, backend="cpu", seed=0, metrics_every=10, **overrides) -> Config:
    """The z-refinement settings (see the module docstring for why)."""
    kw = dict(
        epochs=epochs, backend=backend, seed=seed, batch=16, loss="gaussian",
        init_probe="dataset", fit_probe_scale=False,
        object=Group(lr=0.1, start_epoch=10, schedule={"kind": "step", "every": 30, "gamma": 0.5}),
        probe=Group(enabled=False),
        positions=Group(enabled=False),
        z=Group(enabled=True, lr=1e-2, start_epoch=0),
        metrics_every=metrics_every,
    )
    kw.update(overrides)
    return Config(**kw)


def simulate_experiment(seed=0, **overrides):
    return simulate.simulate(**{**SIMULATION, **overrides}, seed=seed)


def known_probe_dataset(exp):
    """The experiment's dataset with the true probe as the (known) probe."""
    ds = exp.dataset()
    ds.probe = exp.probe          # Experiment.dataset() attaches the truth but no probe guess
    return ds


def run(exp, config: Config, every=5, verbose=True):
    """Reconstruct; returns (result, history rows, summary)."""
    recon = engines.create(known_probe_dataset(exp), config)
    z_true = exp.z
    start = {"epoch": "start", "z_mm": exp.z_start * 1e3, "dz_um": (exp.z_start - z_true) * 1e6,
             "z_error": abs(exp.z_start - z_true) / z_true}
    result, rows, wall = run_tracked(
        recon, COLUMNS, every=every, verbose=verbose, first=start,
        derive=lambda rec: dict(z_mm=rec["z"] * 1e3, dz_um=(rec["z"] - z_true) * 1e6,
                                z_error=abs(rec["z"] - z_true) / z_true))
    final = rows[-1]
    z_rec = 1.0 - final["z_error"] / start["z_error"] if start["z_error"] else None
    within = next((r["epoch"] for r in rows if r["z_error"] <= 0.01 * start["z_error"]), None)
    seconds = np.array([r["seconds"] for r in rows])
    summary = {
        "epochs_run": len(rows),
        "initial": start,
        "final": {k: final.get(k) for k in ("loss", "z_mm", "dz_um", "z_error", "object_correlation")},
        "z_error_recovered": z_rec,
        "first_epoch_z_within_1pct_of_start_error": within,
        "wall_seconds": wall,
        "seconds_per_epoch_engine_median": float(np.median(seconds)),
        "seconds_per_epoch_wall_mean": wall / max(1, len(rows)),
        "events": result.events,
        "timings": result.timings,
    }
    return result, [start] + rows, summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    add_arguments(parser, epochs=100, quick_epochs=25, every=5)
    parser.add_argument("--z-start-error", type=float, default=SIMULATION["z_error"],
                        help="relative error of the start z (default 0.3: 13 mm for 10 mm)")
    args = parser.parse_args(argv)
    epochs = resolve_epochs(args)
    every = resolve_every(args, epochs)

    t0 = time.perf_counter()
    exp = simulate_experiment(seed=args.seed, z_error=args.z_start_error)
    t_sim = time.perf_counter() - t0
    critical = geometry.asm_critical_distance(exp.data.shape[1:], WAVELENGTH, PIXEL)
    config = make_config(epochs, backend=args.backend, seed=args.seed, metrics_every=every)
    print(f"z refinement: {exp.n_positions} frames {exp.data.shape[1:]}, lambda {WAVELENGTH * 1e9:.1f} nm, pixel "
          f"{PIXEL * 1e6:.1f} um, z {exp.z * 1e3:.2f} mm, start {exp.z_start * 1e3:.2f} mm (N dx^2/lambda "
          f"{critical * 1e3:.1f} mm), Fresnel zone {np.sqrt(WAVELENGTH * exp.z) / PIXEL:.1f} px, known probe, "
          f"backend {args.backend}, {epochs} epochs (simulated in {t_sim:.1f} s)")
    result, history, summary = run(exp, config, every=every)

    f = summary["final"]
    print()
    print("final: z {:.5f} mm (true {:.5f} mm, error {:+.3f} um = {:.2e} relative), object correlation {}".format(
        f["z_mm"], exp.z * 1e3, f["dz_um"], f["z_error"],
        "-" if f["object_correlation"] is None else f"{f['object_correlation']:.5f}"))
    print("recovered {:.2%} of the start z error; within 1 % of it from epoch {}".format(
        summary["z_error_recovered"], summary["first_epoch_z_within_1pct_of_start_error"]))
    print("time: {:.1f} s for {} epochs: {:.3f} s/epoch engine (median), {:.3f} s/epoch wall (mean, metrics every "
          "{} epochs), on {} CPUs".format(summary["wall_seconds"], summary["epochs_run"],
                                          summary["seconds_per_epoch_engine_median"],
                                          summary["seconds_per_epoch_wall_mean"], every, machine()["cpu_count"]))
    if args.json:
        payload = {
            "experiment": "z_refinement",
            "simulation": {**SIMULATION, "z_error": args.z_start_error, "seed": args.seed, "step_px": exp.step,
                           "object_shape": exp.obj.shape[1:], "z_start": exp.z_start,
                           "asm_critical_distance": critical},
            "config": result.config,
            "history": history,
            "summary": summary,
            "machine": machine(),
            "argv": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        }
        print(f"wrote {write_json(args.json, payload)}")
    return summary


if __name__ == "__main__":
    main()
