"""One reconstruction over R MPI ranks: seconds per epoch and bytes summed per step, against the model of the
communication, and a projection of the efficiency on 8 GPUs for a production case.

    python benchmarks/bench_mpi.py                        # R = 1, 2, 4 (4 oversubscribed on 2 cores)
    python benchmarks/bench_mpi.py --ranks 1 2 --epochs 5 --bandwidth 25e9

Each R runs `mpiexec -n R python benchmarks/bench_mpi.py --worker ...`: a simulated far-field scan (the
`small_farfield` preset, a 14 x 14 raster: 196 patterns of 64 x 64, complex64), batch 32, object and
probe refined, OMP_NUM_THREADS = 1 per rank. Ranks beyond the machine's cores are marked oversubscribed:
their seconds say nothing about scaling, only that the run is right.

Communication model (`cuptycho.parallel`): per minibatch step every rank allreduces the object gradient
(Mo H W complex), the probe gradient (K Ny Nx complex) and the loss (8 bytes; near field also dL/dz),
so bytes per step = itemsize x (Mo H W + K Ny Nx) + 8, whatever R; after each epoch the position corrections
(16 bytes a pattern; with [positions] refined their Adam moments too) are exchanged once, and the ranks agree
whether to stop (8 bytes: a Ctrl-C stops every rank after the same epoch); an epoch that records the loss
over every pattern sums 16 bytes per chunk of it. A ring
allreduce moves 2 (R-1)/R of that through each rank's link, so a step's communication takes
2 (R-1)/R x bytes / bandwidth.

Projection: the production case (10,000 patterns of 256 x 256, 3 probe modes, a 4096 x 4096 object,
complex64, batch 256 -> 40 steps an epoch) on R GPUs: compute time per step = the measured one-rank compute
per pattern here, scaled by the FFT work (N^2 log N and modes) and by --gpu-speedup (the GPU's step is that
many times faster than this machine's: state it from a measured GPU step), communication as modelled over
--bandwidth (bytes/s of the interconnect; default 25e9, an HDR InfiniBand or PCIe 4 x16 link).
Efficiency = compute / R / (compute / R + communication).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_PATTERNS_SIDE, PATCH, BATCH = 14, 64, 32


def worker(out, epochs):
    from mpi4py import MPI

    from cuptycho import Config, Group, create, simulate

    comm = MPI.COMM_WORLD
    exp = simulate.preset("small_farfield", scan_size=(N_PATTERNS_SIDE, N_PATTERNS_SIDE), seed=0)
    ds = exp.dataset()
    ds.probe = exp.probe
    cfg = Config(epochs=epochs + 1, batch=BATCH, backend="cpu", object=Group(lr=0.1), probe=Group(enabled=True),
                 metrics_every=10 ** 6)
    rec = create(ds, cfg, comm=comm)
    rec.run(until=1)                                         # the first epoch builds plans and caches
    before, t0 = rec.comm.bytes_summed, time.perf_counter()
    rec.run()
    seconds = (time.perf_counter() - t0) / epochs
    steps = epochs * math.ceil(ds.n_patterns / BATCH)
    if comm.Get_rank() == 0:
        Path(out).write_text(json.dumps({
            "ranks": comm.Get_size(), "seconds_per_epoch": seconds,
            "bytes_per_step": (rec.comm.bytes_summed - before) / steps if comm.Get_size() > 1 else 0.0,
            # + once an epoch the corrections (16 bytes a pattern) and the ranks' agreement on stopping (8 bytes),
            # spread over the epoch's steps
            "model_bytes_per_step": model_bytes(rec.obj.shape, rec.probe.shape, rec.obj.dtype.itemsize)
            + (16 * ds.n_patterns + 8) / math.ceil(ds.n_patterns / BATCH) + record_bytes(ds) / steps,
            "patterns": ds.n_patterns}))


def record_bytes(ds):
    """The loss record of the run's last epoch (the only one recorded in the timed epochs): its chunk sums, the
    loss and the weight of each chunk of LOSS_CHUNK_BYTES of float64 terms (Distributed.chunk_sums)."""
    from cuptycho.memory_plan import LOSS_CHUNK_BYTES

    per_chunk = max(1, LOSS_CHUNK_BYTES // (8 * math.prod(ds.patch_shape)))
    return 16 * math.ceil(ds.n_patterns / per_chunk)


def model_bytes(obj_shape, probe_shape, itemsize, near_field=False):
    """Bytes each rank allreduces per step: the object and probe gradients, the loss (and dL/dz)."""
    return itemsize * (math.prod(obj_shape) + math.prod(probe_shape)) + 8 * (2 if near_field else 1)


def projection(one_rank_epoch_seconds, patterns, bandwidth, gpu_speedup, ranks=8):
    n, modes, obj, batch, total = 256, 3, 4096, 256, 10_000
    per_pattern_here = one_rank_epoch_seconds / patterns                    # 64 x 64, 1 mode, complex64
    scale = (n * n * math.log2(n) * modes) / (PATCH * PATCH * math.log2(PATCH))
    step = per_pattern_here * scale * batch / gpu_speedup
    message = model_bytes((1, obj, obj), (modes, n, n), 8)
    comm = 2 * (ranks - 1) / ranks * message / bandwidth
    return {"compute_step_s": step, "bytes_per_step": message, "comm_step_s": comm,
            "efficiency": (step / ranks) / (step / ranks + comm),
            "epoch_s": math.ceil(total / batch) * (step / ranks + comm)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--bandwidth", type=float, default=25e9, help="interconnect bytes/s for the projection")
    parser.add_argument("--gpu-speedup", type=float, default=30.0,
                        help="a GPU step's speed over this machine's 2-core CPU step (state it from a measurement)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.epochs)
        return
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cores = os.cpu_count() or 1
    rows = []
    for r in args.ranks:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            env = dict(os.environ, OMP_NUM_THREADS="1")
            subprocess.run([str(mpiexec), "-n", str(r), sys.executable, __file__, "--worker", str(out),
                            "--epochs", str(args.epochs)], check=True, env=env)
            row = json.loads(out.read_text())
        row["oversubscribed"] = r > cores
        rows.append(row)
    print(f"{'ranks':>5}  {'s/epoch':>8}  {'bytes/step':>11}  {'model':>11}  note")
    for row in rows:
        note = "oversubscribed: timing not meaningful" if row["oversubscribed"] else ""
        print(f"{row['ranks']:>5}  {row['seconds_per_epoch']:>8.3f}  {row['bytes_per_step']:>11.0f}  "
              f"{row['model_bytes_per_step']:>11.0f}  {note}")
    one = next((r for r in rows if r["ranks"] == 1), rows[0])
    p = projection(one["seconds_per_epoch"] * one["ranks"], one["patterns"], args.bandwidth, args.gpu_speedup)
    print(f"projection, 8 GPUs, 10k x 256^2 x 3 modes, 4096^2 object, batch 256 (GPU {args.gpu_speedup:g}x this "
          f"CPU, {args.bandwidth / 1e9:g} GB/s): compute {p['compute_step_s']:.3f} s/step on one GPU, allreduce "
          f"{p['bytes_per_step'] / 1e6:.0f} MB/step in {p['comm_step_s']:.3f} s, efficiency {p['efficiency']:.2f}, "
          f"{p['epoch_s']:.1f} s/epoch")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "projection": p, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
