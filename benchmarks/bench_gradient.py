"""A full loss_and_grad step on the compiled backends against the NumPy reference and the FFT floor.

The floor is the time of the FFTs the step cannot avoid, on the whole batch (B, 1, K, N, N), with
the fastest FFT here, planned once and run in place: FFTW through pyFFTW when installed (else
scipy.fft, said in the header), forward + inverse for the far field, twice that for the
transfer-function propagators; on a GPU, cuFFT timed with CUDA events. Each row also gives the
compiled step's time per stage (synchronised at stage boundaries in a separate run).

    python benchmarks/bench_gradient.py                  # N 64/128/256, B 16/64/256, K 1/3
    python benchmarks/bench_gradient.py --quick          # N 64/128, B 16/64
    python benchmarks/bench_gradient.py --sizes 128 --batches 64 --modes 3 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import numpy as np

from common import case, timer

from cuptycho.atomic import open_atomic

from cuptycho import backend, fft, model, reference

GEOMETRY = dict(z=1e-6, wavelength=1e-10, pixel_size=1e-8)


def fft_floor(device, shape, dtype, transforms, median_time, repeat):
    library = fft.cpu_library() if device == "cpu" else "cufft"
    plan = fft.plan(device, library, shape, dtype)

    def run():
        x = plan.buffer
        for i in range(transforms):
            x = plan.forward(x) if i % 2 == 0 else plan.inverse(x)
    return median_time(run, repeat), library


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="+")
    ap.add_argument("--batches", type=int, nargs="+")
    ap.add_argument("--modes", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--propagator", default="farfield", choices=["farfield", "angular_spectrum", "fresnel"])
    ap.add_argument("--loss", default="gaussian", choices=reference.LOSSES)
    ap.add_argument("--dtype", default="complex64", choices=["complex64", "complex128"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-reference", action="store_true", help="skip the (slow) NumPy reference timing")
    ap.add_argument("--json", help="write rows and machine description to this file")
    args = ap.parse_args(argv)

    sizes = args.sizes or ((64, 128) if args.quick else (64, 128, 256))
    batches = args.batches or ((16, 64) if args.quick else (16, 64, 256))
    dtype = np.dtype(args.dtype)
    kw = dict(propagator=args.propagator, **({} if args.propagator == "farfield" else GEOMETRY))
    transforms = 2 if args.propagator == "farfield" else 4
    median_time = timer(args.device)
    to_dev = (lambda a: backend.to_device(args.device, a))
    threads = fft.cpu_threads()

    rows = []
    header = None
    for n in sizes:
        for batch in batches:
            for modes in args.modes:
                obj, probe, pos, data, mask = case(n, batch, modes, dtype)
                d_obj, d_probe, d_pos, d_data, d_mask = map(to_dev, (obj, probe, pos, data, mask))

                def step():
                    model.loss_and_grad(args.device, d_obj, d_probe, d_pos, d_data, d_mask, loss=args.loss, **kw)

                t_step = median_time(step, args.repeat)
                t_fft, library = fft_floor(args.device, (batch, 1, modes, n, n), dtype, transforms, median_time,
                                           args.repeat)
                stages: dict = {}
                model.loss_and_grad(args.device, d_obj, d_probe, d_pos, d_data, d_mask, loss=args.loss,
                                    profile=stages, **kw)
                t_ref = float("nan")
                if not args.no_reference:
                    prop = reference.make_propagator(args.propagator, (n, n), dtype=dtype,
                                                     **({} if args.propagator == "farfield" else
                                                        {**GEOMETRY, "pixel_size": (1e-8, 1e-8)}))
                    t_ref = timer("cpu")(lambda: reference.loss_and_grad(obj, probe, pos, data, mask, args.loss, prop),
                                         max(1, args.repeat // 2))
                if header is None:
                    header = (f"{args.device} loss_and_grad: {args.propagator}, {args.loss}, {args.dtype}; floor = "
                              f"{library} in place, {threads} thread(s); chunk {model.CHUNK_BYTES >> 20} MiB; "
                              f"median of {args.repeat}")
                    print(header)
                    print(f"{'N':>4} {'B':>4} {'K':>2} {'step ms':>9} {'FFT ms':>8} {'/floor':>7} {'ref ms':>9} "
                          f"{'ref/step':>8}  stages ms ({', '.join(model.STAGES)})")
                stage_ms = [1e3 * stages.get(s, 0.0) for s in model.STAGES]
                print(f"{n:>4} {batch:>4} {modes:>2} {1e3 * t_step:>9.1f} {1e3 * t_fft:>8.1f} {t_step / t_fft:>7.2f} "
                      f"{1e3 * t_ref:>9.1f} {t_ref / t_step:>8.1f}  " + " ".join(f"{v:.1f}" for v in stage_ms),
                      flush=True)
                rows.append(dict(N=n, B=batch, K=modes, step_s=t_step, fft_floor_s=t_fft, floor_ratio=t_step / t_fft,
                                 reference_s=t_ref, speedup_vs_reference=t_ref / t_step,
                                 stages_s={s: stages.get(s, 0.0) for s in model.STAGES}))
    if args.json:
        meta = dict(benchmark="bench_gradient", header=header, device=args.device, propagator=args.propagator,
                    loss=args.loss, dtype=args.dtype, fft=library, threads=threads, chunk_bytes=model.CHUNK_BYTES,
                    cpu_count=os.cpu_count(), machine=platform.platform())
        with open_atomic(args.json, "w", overwrite=True) as fh:
            json.dump(dict(meta=meta, rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
