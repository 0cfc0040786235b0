"""Per-kernel time of every kernels/*.cu entry against its NumPy reference twin.

Each kernel is timed on the device (perf_counter on the CPU, CUDA events on a GPU) and its
same-named twin in cuptycho.reference on host copies of the same inputs (their agreement is
tested in tests/test_kernels_twins.py). Rows give milliseconds and the effective bandwidth of
the arrays the kernel must read and write.

    python benchmarks/bench_kernels.py                       # N 64/128/256, B 16/64/256, K 1/3
    python benchmarks/bench_kernels.py --sizes 128 --batches 64 --modes 3 --json out.json
    python benchmarks/bench_kernels.py --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import platform

import numpy as np
from common import case, timer

from cuptycho.atomic import open_atomic

from cuptycho import backend, reference
from cuptycho.launchers import adam, exitwave, likelihood, pie, propagate, sampling


def kernels(n, batch, modes, dtype, device):
    """(name, device call, reference twin call, bytes moved) for each kernel entry on one case.

    The twin (cuptycho.reference, same name and arguments less the output buffers) runs on the
    host copies of the kernel's inputs; the spectra stand in for each other (timing only).
    """
    obj, probe, pos, data, mask = case(n, batch, modes, dtype)
    real = reference.real_dtype(dtype)
    to = (lambda a: backend.to_device(device, a))
    d_obj, d_probe, d_pos, d_data, d_mask = map(to, (obj, probe, pos, data, mask))
    patches = reference.patch_fwd(obj, pos, (n, n))
    psi = reference.exitwave_fwd(obj, probe, pos)
    waves = to(psi.copy())
    d_patches = to(patches)
    h, kz = reference.geometry.transfer_function("fresnel", (n, n), 1e-6, 1e-10, (1e-8, 1e-8))
    h = (h / n**2).astype(dtype)
    d_h, d_kz = to(h), to(kz)
    spectrum = to(np.empty_like(psi))
    loss_rows = to(np.zeros((batch, n)))
    dz_rows = to(np.zeros(psi.shape[:-1]))
    intensities = to(np.empty(data.shape, real))
    param = to(probe.copy())
    m, v = adam.adam_state(param)
    m0, v0 = adam.adam_state(probe)
    g_probe = to(np.zeros_like(probe))
    weight = np.abs(probe[0]) ** 2
    weight_max = np.array([weight.max()], real)
    d_weight, d_weight_max = to(weight), to(weight_max)
    far = dict(shift=(n // 2, n // 2), intensity_scale=1.0 / n**2)
    pie_kw = dict(step=1.0, alpha=0.1)
    b_wave, b_patch, b_data = psi.nbytes, patches.nbytes, data.nbytes
    return [
        ("patch_fwd", lambda: sampling.patch_fwd(d_obj, d_pos, (n, n)),
         lambda: reference.patch_fwd(obj, pos, (n, n)), b_patch),
        ("patch_adj", lambda: sampling.patch_adj(d_patches, d_pos, obj.shape),
         lambda: reference.patch_adj(patches, pos, obj.shape), b_patch + obj.nbytes),
        ("patch_posgrad", lambda: sampling.patch_posgrad(d_obj, d_pos, d_patches),
         lambda: reference.patch_posgrad(obj, pos, patches), 2 * b_patch),
        ("exitwave_fwd", lambda: exitwave.exitwave_fwd(d_obj, d_probe, d_pos, out=waves),
         lambda: reference.exitwave_fwd(obj, probe, pos), b_wave),
        ("exitwave_adj", lambda: exitwave.exitwave_adj(d_obj, d_probe, d_pos, waves, grad_patches=d_patches,
                                                       grad_probe=g_probe),
         lambda: reference.exitwave_adj(obj, probe, pos, psi), b_wave + b_patch),
        ("likelihood", lambda: likelihood.likelihood(waves, d_data, d_mask, loss_rows, loss="gaussian",
                                                     n_total=batch, **far),
         lambda: reference.likelihood(psi, data, mask, loss="gaussian", n_total=batch, **far),
         2 * b_wave + b_data),
        ("intensity", lambda: likelihood.intensity(waves, intensities, **far),
         lambda: reference.intensity(psi, **far), b_wave + b_data),
        ("spectrum_fwd", lambda: propagate.spectrum_fwd(waves, d_h, spectrum_out=spectrum),
         lambda: reference.spectrum_fwd(psi, h), 3 * b_wave),
        ("spectrum_adj", lambda: propagate.spectrum_adj(waves, d_h, d_kz, spectrum=spectrum, dz_rows=dz_rows),
         lambda: reference.spectrum_adj(psi, h, kz, psi), 3 * b_wave),
        ("adam_step", lambda: adam.adam_step(param, g_probe, m, v, step=1, lr=1e-3),
         lambda: reference.adam_step(probe, probe, m0, v0, step=1, lr=1e-3), 5 * probe.nbytes),
        ("pie_update", lambda: pie.pie_update(param, g_probe, d_weight, d_weight_max, **pie_kw),
         lambda: reference.pie_update(probe, probe, weight, weight_max, **pie_kw), 3 * probe.nbytes),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--modes", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--dtype", default="complex64", choices=["complex64", "complex128"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    dtype = np.dtype(args.dtype)
    device_time, host_time = timer(args.device), timer("cpu")
    print(f"kernels on {args.device} ({args.dtype}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'all')}) "
          f"vs the NumPy reference; median of {args.repeat}")
    print(f"{'kernel':>14} {'N':>4} {'B':>4} {'K':>2} {'ms':>8} {'GB/s':>7} {'ref ms':>9} {'ref/kernel':>10}")
    rows = []
    for n in args.sizes:
        for batch in args.batches:
            for modes in args.modes:
                for name, run, ref, nbytes in kernels(n, batch, modes, dtype, args.device):
                    t = device_time(run, args.repeat)
                    t_ref = host_time(ref, max(1, args.repeat // 2))
                    rows.append(dict(kernel=name, N=n, B=batch, K=modes, s=t, gb_per_s=nbytes / t / 1e9,
                                     reference_s=t_ref))
                    print(f"{name:>14} {n:>4} {batch:>4} {modes:>2} {1e3 * t:>8.2f} {nbytes / t / 1e9:>7.1f} "
                          f"{1e3 * t_ref:>9.2f} {t_ref / t:>10.1f}", flush=True)
    if args.json:
        with open_atomic(args.json, "w", overwrite=True) as fh:
            json.dump(dict(meta=dict(benchmark="bench_kernels", device=args.device, dtype=args.dtype,
                                     machine=platform.platform(), cpu_count=os.cpu_count()), rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
