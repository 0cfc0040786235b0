"""Joint refinement: object, probe modes, scan positions and propagation distance z all at once.

After the parameter-refinement setting of gradient ptychography: every experimental parameter
starts wrong and is refined together with the object, by Adam on the hand-derived gradients.

    python benchmarks/experiments/joint_refinement.py [--epochs 300] [--backend cpu] [--seed 0]
                                                      [--json out.json] [--quick] [--every 10]

Acceptance (the issue): within 300 epochs recover >= 95 % of the initial z error and of the
initial median position error; report the wall time per epoch on this machine.

Dataset (`cuptycho.simulate.simulate`, deterministic from --seed)
----------------------------------------------------------------
- 128 x 128 patterns, 10 keV (lambda = 0.124 nm), sample pixels 50 nm, angular-spectrum propagation
  over z = 1.5 mm. z has to be in the model, and the far-field propagator has no z, so the geometry
  is the near-field (in-line holography) one. The angular-spectrum transfer function is sampled
  without aliasing up to N dx^2 / lambda = 2.58 mm, so the true z (1.5 mm) and the start z
  (1.95 mm) both lie below it (no warning). The Fresnel zone sqrt(lambda z) is 8.6 px: the patterns
  are strongly propagated holograms, not images.
- Probe: a structured ("diffuser") illumination, `probe="images"` (gravel amplitude 0.5..1, grass
  phase -1..1 rad) under a Gaussian envelope of 40 px FWHM, with 3 mutually incoherent modes
  (power 0.81 / 0.16 / 0.03). Why a diffuser and not a smooth focused spot: with a smooth probe the
  object absorbs a z error almost exactly (the object becomes its own propagated version,
  O' = prop(z - z') O, which reproduces every pattern because the probe barely varies across a
  Fresnel zone), so z is hardly identifiable. Measured with a 40 px Gaussian spot, known probe and
  positions, 60 epochs: data loss 1.16e4 at the true z, 1.26e4 at +10 %, 1.47e4 at +30 %; a joint run
  walked z from +30 % to -23 %. A probe with structure on the Fresnel scale breaks that degeneracy
  (diffuser: 1.1e4 / 3.9e4 / 8.4e4 with the probe refined as well). A diverging (curved) probe would
  also make z identifiable, but through the magnification, which trades z against the scale of the
  scan: the positions then drifted (median error 8 -> 15 px).
- Scan: an 11 x 11 raster with 70 % linear overlap (step 9.4 px from `step_from_overlap`) and 1 px
  RMS jitter of the true positions; the object (camera amplitude 0.5..1, astronaut phase
  -pi/2..pi/2, the simulator's default) is 272 x 272 px.
- 1e7 photons in the brightest pattern, Poisson noise.
- Start: positions with a 10 px RMS random error (7.1 px per axis; median error 8.3 px, a few start
  20-25 px off: as large as two scan steps), z 30 % too large.

Reconstruction (`cuptycho.reconstruct` via `cuptycho.engines.create`)
---------------------------------------------------------------------------
- Start: a flat object; the probe from the data (`init_probe="data"`: the mean pattern's amplitude
  propagated back over the start z, plus two small orthogonal modes), scaled to the photon count.
- Gaussian (amplitude) likelihood, minibatches of 16 patterns (8 Adam steps per epoch).
- object: lr 0.1 from epoch 0, |O| clamped to [0, 1] after every epoch (a transmission never
  exceeds 1; without the clamp, object pixels lit by misplaced patterns ran up to |O| ~ 20 and
  wrecked the correlation) and adaptive TV {"ratio": 0.5, "p": 1, "q": 1} (anisotropic TV, weight
  reset every epoch to 0.5 x the data loss over the unweighted TV). The TV keeps the object smooth
  early, which widens the capture range of the position gradients: positions left more than 3 px
  off, with the true probe and z, 20-36 of 121 without TV, 9-10 with ratio 0.3 (p 2, q 1); in the
  joint run 4-8 with ratio 0.3, 3-5 with 0.5 (p 1, q 1); ratio 1.0 ran away (the weight follows
  the data loss, which the smoothing raises).
- probe: lr 0.2 (relative to the probe's RMS amplitude) from epoch 5. This is what makes z converge.
  The probe is defined in the sample plane, so a step in z at a fixed probe changes the probe's own
  hologram on the detector: the loss is very stiff in z along that direction (one 1 % step of z
  flips the sign of dL/dz and multiplies it by ten) and z moves only as fast as the probe follows.
  Probe lr 0.01: z went from 30 % to 27 % in 200 epochs; 0.1: 0.2 % by epoch 240 (with TV 0.3);
  0.2: within 5 % of the start error by epoch 175-205, 0.01-0.2 % at epoch 300.
- positions: lr 3 px from epoch 5 (after a first rough object), halved every 35 epochs (3 px ->
  0.08 px by epoch 180, 0.01 px at the end). Large early steps let a position cross the smooth early
  object's basin before the object sharpens. Worse (more positions left behind), in the joint run
  or with the true probe and z: lr 1, 2 or 8 px, halving every 25 epochs, a start at epoch 0, 10 or
  20, minibatches of 4/8/32/all patterns, the Poisson or the intensity likelihood.
- z: lr 0.01 (relative: a step changes z by about 1 % of the start z) from epoch 0, constant. The
  probe limits it (above), not its own lr: 0.02 and 0.05 behaved the same.

Measured (this machine, 2 CPU cores, 300 epochs): seeds 0 / 1 / 2 / 3 recovered 95.7 / 95.4 / 95.0 /
86.5 % of the median position error by the engine's metric (99.5-99.8 % with the median offset
removed: the captured positions end within 0.02-0.04 px), 99.5-100 % of the z error, object
correlation 0.96-0.99; CPU runs are not bitwise reproducible from one process to the next (FFTW
plans are timed), so a rerun moves these numbers a little: a later run of seed 0 gave 94.9 %
(0.423 px; 0.023 px with the median offset removed, 3 positions left behind), z 99.7 %, 0.11 s per
epoch (0.12 s with the per-epoch metrics), 37 s in all. So the goal is met at the margin, not
robustly.

What limits the result: z and almost all positions converge, but 2-5 of the 121 positions (in
every seed tried), those that start 15-25 px from the truth, end in local minima one or two scan
steps away. Gradient refinement cannot capture them: with the true object, the loss of one pattern
against its position has a basin of only about +-6 px (set by the object's texture) and a rough
plateau outside it. The engine has no global search for such positions. They also bias the
engine's metric `position_error_median`, which removes the *mean* offset (a global translation is
not determined) before taking the median: one position 20 px off moves that mean by 20/121 =
0.17 px, and every good position then reports the shift as its error, so whether the 95 % goal is
met depends on how the outliers' errors happen to cancel. The script therefore also prints the
median error after removing the *median* offset (`pos_med_robust`) and the number of positions
more than 3 px off (`n_far`), and reports the acceptance for both.

Columns: epoch, loss (the epoch's mean minibatch data loss, TV included), z_err (|z - z_true| /
z_true), pos_med / pos_rms (engine metric, mean offset removed), pos_med_robust, n_far,
corr (`object_correlation`: complex correlation over the scanned region after phase-ramp removal and
subpixel registration), s (engine seconds of the epoch, without the metrics).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import RAW, add_arguments, machine, resolve_epochs, resolve_every, run_tracked, write_json

from cuptycho import engines, simulate
from cuptycho import Config, Group

WAVELENGTH = 1.24e-10          # 10 keV
PIXEL = 50e-9
Z_TRUE = 1.5e-3

SIMULATION = dict(
    shape=(128, 128),
    probe="images",
    probe_options={"magnitude": "gravel", "phase": "grass", "amplitude_range": (0.5, 1.0), "phase_range": (-1.0, 1.0),
                   "envelope": 40.0},
    n_probe_modes=3,
    scan="raster", scan_size=(11, 11), overlap=0.7, jitter=1.0,
    propagator="angular_spectrum", wavelength=WAVELENGTH, z=Z_TRUE, pixel_size=PIXEL,
    photons=1e7,
    position_error=10.0, z_error=0.3,
)

FAR = 3.0          # px: a position further than this from the truth counts as not captured

COLUMNS = [("epoch", "epoch", "d"), ("loss", "loss", ".4e"), ("z_err", "z_error", ".5f"),
           ("pos_med", "position_error_median", ".3f"), ("pos_rms", "position_error_rms", ".3f"),
           ("pos_med_robust", "position_error_median_robust", ".3f"), ("n_far", "n_far", "d"),
           ("corr", "object_correlation", ".4f"), ("s", "seconds", ".3f")]


def make_config(epochs, backend="cpu", seed=0, **overrides) -> Config:
    """The tuned joint-refinement settings (see the module docstring for why)."""
    kw = dict(
        epochs=epochs, backend=backend, seed=seed, batch=16, loss="gaussian",
        init_probe="data", n_probe_modes=3,
        object=Group(lr=0.1),
        probe=Group(lr=0.2, start_epoch=5),
        positions=Group(lr=3.0, start_epoch=5, schedule={"kind": "step", "every": 35, "gamma": 0.5}),
        z=Group(lr=1e-2, start_epoch=0),
        constraints={"amplitude_range": (0.0, 1.0)},
        tv={"ratio": 0.5, "p": 1, "q": 1},
        metrics_every=1,
    )
    kw.update(overrides)
    return Config(**kw)


def robust_position_errors(estimate, truth):
    """Per-position errors (px) after removing the median offset, which outliers cannot drag."""
    d = np.asarray(estimate, np.float64) - np.asarray(truth, np.float64)
    d = d - np.median(d, axis=0)
    return np.hypot(d[:, 0], d[:, 1])


def simulate_experiment(seed=0, **overrides):
    return simulate.simulate(**{**SIMULATION, **overrides}, seed=seed)


def run(exp, config: Config, every=10, verbose=True):
    """Reconstruct `exp` with `config`; returns (result, history rows, summary dict)."""
    ds = exp.dataset()
    recon = engines.create(ds, config)
    truth_pos = exp.positions
    start = {"epoch": "start", "z_error": abs(exp.z_start - exp.z) / exp.z}
    start_err = robust_position_errors(exp.positions_start, truth_pos)
    from cuptycho import metrics
    e0 = metrics.position_errors(exp.positions_start, truth_pos)
    start.update(position_error_median=e0["median"], position_error_rms=e0["rms"],
                 position_error_median_robust=float(np.median(start_err)), n_far=int(np.sum(start_err > FAR)))
    def derive(rec):
        err = robust_position_errors(recon.positions(), truth_pos)
        return {"position_error_median_robust": float(np.median(err)), "n_far": int(np.sum(err > FAR))}

    result, rows, wall = run_tracked(recon, COLUMNS, every=every, verbose=verbose, first=start, derive=derive)
    final = rows[-1]
    summary = _summary(start, final, rows, wall, result)
    return result, [start] + rows, summary


def _summary(start, final, rows, wall, result):
    def recovered(key):
        a, b = start.get(key), final.get(key)
        return None if a is None or b is None or a == 0 else 1.0 - b / a

    z_rec = recovered("z_error")
    p_rec = recovered("position_error_median")
    p_rec_robust = recovered("position_error_median_robust")
    seconds = np.array([r["seconds"] for r in rows])
    walls = np.array([r["wall"] for r in rows])
    return {
        "epochs_run": len(rows),
        "initial": start,
        "final": {k: final.get(k) for k in ("loss", "z_error", "position_error_median", "position_error_rms",
                                            "position_error_median_robust", "n_far", "object_correlation")},
        "z_error_recovered": z_rec,
        "position_median_recovered": p_rec,
        "position_median_recovered_robust": p_rec_robust,
        "goal": ">= 0.95 of the initial z error and of the initial median position error recovered",
        "goal_met": bool(z_rec is not None and p_rec is not None and z_rec >= 0.95 and p_rec >= 0.95),
        "goal_met_robust_positions": bool(z_rec is not None and p_rec_robust is not None and z_rec >= 0.95
                                          and p_rec_robust >= 0.95),
        "first_epoch_z_within_5pct_of_start_error": _first(rows, lambda r: r["z_error"] <= 0.05 * start["z_error"]),
        "wall_seconds": wall,
        "seconds_per_epoch_engine_median": float(np.median(seconds)),
        "seconds_per_epoch_wall_median": float(np.median(walls)),
        "seconds_per_epoch_wall_mean": float(np.mean(walls)),
        "events": result.events,
        "timings": result.timings,
    }


def _first(rows, cond):
    for r in rows:
        if r.get("z_error") is not None and cond(r):
            return r["epoch"]
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    add_arguments(parser, epochs=300, quick_epochs=30, every=10)
    args = parser.parse_args(argv)
    epochs = resolve_epochs(args)
    every = resolve_every(args, epochs)

    t0 = time.perf_counter()
    exp = simulate_experiment(seed=args.seed)
    t_sim = time.perf_counter() - t0
    config = make_config(epochs, backend=args.backend, seed=args.seed)
    print(f"joint refinement: {exp.n_positions} patterns {exp.data.shape[1:]}, {exp.probe.shape[0]} probe modes, "
          f"object {exp.obj.shape[1:]}, step {exp.step:.1f} px, z {exp.z * 1e3:.2f} mm (start "
          f"{exp.z_start * 1e3:.3f} mm), backend {args.backend}, {epochs} epochs (simulated in {t_sim:.1f} s)")
    result, history, summary = run(exp, config, every=every)

    print()
    print("start:  z error {:.4f}, median position error {:.3f} px (robust {:.3f}), {} positions > {} px".format(
        summary["initial"]["z_error"], summary["initial"]["position_error_median"],
        summary["initial"]["position_error_median_robust"], summary["initial"]["n_far"], FAR))
    f = summary["final"]
    print("final:  z error {:.5f}, median position error {:.3f} px (robust {:.3f}), {} positions > {} px, "
          "object correlation {:.4f}".format(f["z_error"], f["position_error_median"],
                                             f["position_error_median_robust"], f["n_far"], FAR,
                                             f["object_correlation"]))
    print("recovered: z {:.1%}, median position {:.1%} (engine metric) / {:.1%} (median offset removed); "
          "goal >= 95 %: {} (engine metric), {} (robust)".format(
              summary["z_error_recovered"], summary["position_median_recovered"],
              summary["position_median_recovered_robust"], "met" if summary["goal_met"] else "NOT met",
              "met" if summary["goal_met_robust_positions"] else "NOT met"))
    print("time: {:.1f} s for {} epochs: {:.3f} s/epoch engine (median), {:.3f} s/epoch with the per-epoch "
          "metrics (median), on {} CPUs".format(summary["wall_seconds"], summary["epochs_run"],
                                                 summary["seconds_per_epoch_engine_median"],
                                                 summary["seconds_per_epoch_wall_median"], machine()["cpu_count"]))
    if args.json:
        payload = {
            "experiment": "joint_refinement",
            "simulation": {**SIMULATION, "seed": args.seed, "step_px": exp.step, "object_shape": exp.obj.shape[1:],
                           "z_start": exp.z_start},
            "config": result.config,
            "history": history,
            "summary": summary,
            "machine": machine(),
            "argv": vars(args),
        }
        payload["argv"] = {k: v for k, v in payload["argv"].items() if not k.startswith("_")}
        print(f"wrote {write_json(args.json, payload)}")
    return summary


if __name__ == "__main__":
    main()
