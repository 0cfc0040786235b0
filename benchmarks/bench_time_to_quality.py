"""Time to quality: wall time for the gradient engine and the PIE engines to reach fixed object correlations
(after registration and phase-ramp removal) on simulated far-field scans, so a change of defaults or kernels
shows what users feel, not only a step's time.

    python benchmarks/bench_time_to_quality.py                    # both cases, 0.99 and 0.995
    python benchmarks/bench_time_to_quality.py --case small --max-epochs 100 --json out.json

Cases (`cuptycho.simulate`, seed 1): "small", the `small_farfield` preset (49 patterns of 64 x 64); "225",
225 patterns of 128 x 128 on a 15 x 15 raster (the preset's focused probe scaled to the window, 70 %
overlap, 1e6 photons). Every engine starts from the same guess: the true probe (refined) and a flat object.
Engines: the gradient engine with the command line's defaults for measured data (`cuptycho.defaults`)
and with Adam at batch 32 and lr 0.1; mPIE, rPIE and ePIE sequential with their defaults. Correlations
are taken after every epoch; the engine's own seconds exclude them (`Result.history[...]["seconds"]`).
Rows: seconds to each threshold (- when not reached within --max-epochs), epochs, the final correlation.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cuptycho import Config, Group, defaults, reconstruct, simulate

THRESHOLDS = (0.99, 0.995)


def make_case(name):
    if name == "small":
        exp = simulate.preset("small_farfield", seed=1)
    else:
        exp = simulate.preset("small_farfield", seed=1, shape=(128, 128), probe_options={"width": 32.0,
                                                                                         "defocus": 5e-3},
                              scan_size=(15, 15))
    ds = exp.dataset()
    ds.probe = exp.probe
    return ds


def engines(n_patterns, max_epochs):
    base = dict(backend="cpu", seed=0, metrics_every=1, probe=Group(enabled=True))
    cli = defaults.apply(Config(**base), n_patterns, set())[0]
    cli.epochs = max_epochs
    yield "gradient (defaults)", cli
    yield "gradient (Adam b32 lr 0.1)", Config(**base, epochs=max_epochs, batch=32, object=Group(lr=0.1))
    for engine in ("mpie", "rpie", "epie"):
        yield engine, Config(**base, epochs=max_epochs, engine=engine)


def measure(ds, cfg):
    result = reconstruct(ds, cfg)
    row, elapsed = {}, 0.0
    for rec in result.history:
        elapsed += rec["seconds"]
        corr = rec.get("object_correlation")
        for t in THRESHOLDS:
            if corr is not None and corr >= t and f"t{t}" not in row:
                row[f"t{t}"], row[f"e{t}"] = elapsed, rec["epoch"] + 1
    row["final"] = result.history[-1].get("object_correlation")
    row["seconds"] = elapsed
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("small", "225", "both"), default="both")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for case in (("small", "225") if args.case == "both" else (args.case,)):
        ds = make_case(case)
        for name, cfg in engines(ds.n_patterns, args.max_epochs):
            rows.append({"case": case, "engine": name, **measure(ds, cfg)})
            r = rows[-1]
            cells = [f"{r[f't{t}']:.2f} s ({r[f'e{t}']} ep)" if f"t{t}" in r else "-" for t in THRESHOLDS]
            print(f"{case:>5}  {name:<27}  to 0.99: {cells[0]:<16}  to 0.995: {cells[1]:<16}  "
                  f"final {r['final']:.4f} after {r['seconds']:.2f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
