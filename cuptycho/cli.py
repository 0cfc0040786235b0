"""Command line: argparse plumbing only; the work lives in the library modules."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def demo(args) -> int:
    """Simulate a small experiment and recover the object with the known probe by gradient steps.

    The step is the preconditioned gradient O <- O - (J / 2) grad / (illumination + delta): for the
    gaussian loss this is the averaged-projection (parallel PIE) update, so it needs no tuning.
    """
    import cuptycho
    from cuptycho import metrics, reference, simulate

    exp = simulate.preset(args.preset, seed=args.seed)
    kw = exp.forward_kwargs()
    n_patterns = exp.positions.shape[0]
    probe_power = np.sum(np.abs(exp.probe) ** 2, axis=0)
    illumination = reference.patch_adj(
        np.broadcast_to(probe_power, (n_patterns, exp.obj.shape[0], *probe_power.shape)).astype(exp.obj.dtype),
        exp.positions, exp.obj.shape).real
    scanned = illumination[0] > 0.1 * illumination.max()
    precondition = (n_patterns / 2) / (illumination + 1e-3 * illumination.max())

    obj = np.ones_like(exp.obj)
    print(f"cuptycho demo: preset {args.preset!r}, {n_patterns} patterns of {probe_power.shape}, "
          f"{exp.probe.shape[0]} probe mode(s), {kw['propagator']} propagation, object {exp.obj.shape[1:]}")
    print(f"{'iteration':>9} {'gaussian loss':>14} {'correlation':>12}")
    t0 = time.perf_counter()
    for it in range(args.iterations + 1):
        loss, grads = cuptycho.loss_and_grad(obj, exp.probe, exp.positions, exp.data, loss="gaussian", **kw)
        if it % max(1, args.iterations // 10) == 0 or it == args.iterations:
            corr = metrics.correlation(obj[0], exp.obj[0], mask=scanned)
            print(f"{it:>9} {loss:>14.4g} {corr:>12.4f}", flush=True)
        if it < args.iterations:
            obj = obj - precondition * grads["object"]
    print(f"{args.iterations} iterations in {time.perf_counter() - t0:.2f} s (numpy reference backend)")
    return 0 if corr > 0.9 else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cuptycho", description="Ptychographic reconstruction engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="simulate a small dataset and recover its object (built-in example)")
    p.add_argument("--preset", default="small_farfield", help="simulator preset (default: small_farfield)")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:                  # user errors: one line, no traceback
        print(f"cuptycho: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
