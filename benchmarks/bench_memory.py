"""Peak host memory of a whole reconstruction from a file, against the size of its data.

For each pattern count, a simulated far-field measurement of 128 x 128 patterns is written as CXI
(gzip, one frame per chunk), then `cuptycho reconstruct FILE --set epochs=2` runs in a fresh process
(the command line's measured-data defaults: probe from the data, positions, background and scale
refined) and its peak resident set size is read from the operating system. The same command on a
16-pattern file gives the baseline (the interpreter, NumPy, SciPy, h5py, the compiled kernels).

    python benchmarks/bench_memory.py                      # 1000 and 4000 patterns, loaded and streamed
    python benchmarks/bench_memory.py --patterns 4000 16000 --json out.json

Each file is reconstructed twice: with the data loaded (``data.stream=false``: held once, so the ideal
is 1.0 x the data plus the engine's state and bounded chunks) and streamed (``data.stream=true``,
`cuptycho.patterns`: rows read from the file per block; the target is 0.5 x the data plus the state
plus 200 MB, and no growth with the number of patterns). Columns: the data's size in memory (float32),
the peak RSS, the peak less the baseline, that excess over the data's size, and for the streamed run
the engine's state (object, probe and their optimiser copies, `budget.estimate`) and what is left of
the excess beside it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cuptycho.atomic import open_atomic

MEASURE = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def write_measurement(path: Path, n_patterns: int) -> int:
    """A simulated CXI file of about `n_patterns` 128 x 128 patterns; returns the data's bytes (float32)."""
    from cuptycho import io, simulate
    side = max(2, int(round(np.sqrt(n_patterns))))
    exp = simulate.simulate(shape=(128, 128), scan="raster", scan_size=(side, max(2, n_patterns // side)),
                            overlap=0.6, photons=1e5, probe_options={"width": 24.0}, seed=0)
    io.write_cxi(path, exp.measurement(), overwrite=True)
    return int(exp.data.astype(np.float32).nbytes)


def peak_rss(path: Path, out: Path, stream: bool = False) -> int:
    """Peak RSS in bytes of `cuptycho reconstruct path` (2 epochs), in a fresh process."""
    cmd = [sys.executable, "-m", "cuptycho", "reconstruct", str(path), "-o", str(out), "--force",
           "--set", "epochs=2", "--set", f"data.stream={'true' if stream else 'false'}"]
    kib = subprocess.run([sys.executable, "-c", MEASURE, *cmd], check=True, capture_output=True, text=True)
    return int(kib.stdout.strip().splitlines()[-1]) * 1024


def state_bytes(path: Path) -> int:
    """The engine's object and probe with their optimiser copies (`budget.estimate`'s terms) for `path`."""
    from cuptycho import budget, io
    ds = io.load(path, stream=True)
    terms = budget.estimate(ds.n_patterns, ds.patch_shape, ds.obj_shape)
    return terms["object"].bytes + terms["probe"].bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patterns", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_measurement(tmp / "base.cxi", 16)
        baseline = peak_rss(tmp / "base.cxi", tmp / "base_out.cxi")
        print(f"baseline (16 patterns): {baseline / 2**20:.0f} MiB")
        print(f"{'patterns':>9} {'mode':>9} {'data MiB':>9} {'peak MiB':>9} {'excess MiB':>11} {'excess/data':>12} "
              f"{'state MiB':>10} {'rest MiB':>9}")
        for n in args.patterns:
            data_bytes = write_measurement(tmp / f"d{n}.cxi", n)
            state = state_bytes(tmp / f"d{n}.cxi")
            for stream in (False, True):
                peak = peak_rss(tmp / f"d{n}.cxi", tmp / f"r{n}.cxi", stream)
                row = {"patterns": n, "streamed": stream, "data_bytes": data_bytes, "peak_bytes": peak,
                       "baseline_bytes": baseline, "state_bytes": state,
                       "excess_over_data": (peak - baseline) / data_bytes}
                rows.append(row)
                print(f"{n:9d} {'streamed' if stream else 'loaded':>9} {data_bytes / 2**20:9.0f} {peak / 2**20:9.0f} "
                      f"{(peak - baseline) / 2**20:11.0f} {row['excess_over_data']:12.2f} {state / 2**20:10.0f} "
                      f"{(peak - baseline - state) / 2**20:9.0f}", flush=True)
    if args.json:
        with open_atomic(args.json, "w") as fh:
            json.dump({"rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
