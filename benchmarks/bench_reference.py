"""Time of one `loss_and_grad` on the NumPy reference against its FFT floor.

The floor is the time of the FFTs the same step cannot avoid, on the same batch and with the same
FFT library (scipy.fft, all cores): two transforms per exit wave for the far field (forward and
adjoint), four for the transfer-function propagators. The ratio says how much of a step is not
FFT: sampling, exit waves, likelihood, adjoints, reductions.

    python benchmarks/bench_reference.py                # full grid (N 64/128/256, B 16..256, K 1/3)
    python benchmarks/bench_reference.py --quick        # a small grid for a smoke run
    python benchmarks/bench_reference.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform

import numpy as np
import scipy
import scipy.fft as sfft

from common import case, timer

import cuptycho
from cuptycho import reference
from cuptycho.atomic import open_atomic

median_time = timer("cpu")

GEOMETRY = dict(wavelength=1e-10, pixel_size=1e-8)


def fft_floor(shape, dtype, transforms, repeat):
    x = np.ones(shape, dtype)

    def run():
        y = x
        for i in range(transforms):
            y = (sfft.fft2 if i % 2 == 0 else sfft.ifft2)(y, axes=(-2, -1), norm="ortho", workers=-1)
        return y
    return median_time(run, repeat)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N 64/128, B 16/64, K 1/3")
    ap.add_argument("--propagator", default="farfield", choices=cuptycho.geometry.PROPAGATORS)
    ap.add_argument("--loss", default="gaussian", choices=reference.LOSSES)
    ap.add_argument("--dtype", default="complex64", choices=["complex64", "complex128"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the rows and the machine description to this file")
    args = ap.parse_args(argv)

    sizes = (64, 128) if args.quick else (64, 128, 256)
    batches = (16, 64) if args.quick else (16, 64, 256)
    kw = {"propagator": args.propagator}
    if args.propagator != "farfield":
        kw.update(GEOMETRY, z=1e-6)
    transforms = 2 if args.propagator == "farfield" else 4

    print(f"reference loss_and_grad vs FFT floor: {args.propagator}, {args.loss}, {args.dtype}, "
          f"scipy {scipy.__version__} fft with {os.cpu_count()} workers, median of {args.repeat}")
    print(f"{'N':>5} {'B':>5} {'K':>3} {'step ms':>10} {'FFT ms':>10} {'ratio':>7}")
    rows = []
    for n in sizes:
        for batch in batches:
            for modes in (1, 3):
                obj, probe, pos, data, _ = case(n, batch, modes, np.dtype(args.dtype))
                step = median_time(lambda: cuptycho.loss_and_grad(obj, probe, pos, data, loss=args.loss,
                                                                   backend="numpy", **kw), args.repeat)
                floor = fft_floor((batch, 1, modes, n, n), np.dtype(args.dtype), transforms, args.repeat)
                rows.append(dict(N=n, B=batch, K=modes, step_s=step, fft_s=floor, ratio=step / floor))
                print(f"{n:>5} {batch:>5} {modes:>3} {step * 1e3:>10.1f} {floor * 1e3:>10.1f} {step / floor:>7.1f}",
                      flush=True)
    if args.json:
        meta = dict(benchmark="bench_reference", propagator=args.propagator, loss=args.loss, dtype=args.dtype,
                    fft="scipy.fft", cpu_count=os.cpu_count(), machine=platform.platform(),
                    numpy=np.__version__, scipy=scipy.__version__)
        with open_atomic(args.json, "w", overwrite=True) as fh:
            json.dump(dict(meta=meta, rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
