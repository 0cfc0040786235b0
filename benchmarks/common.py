"""Shared by the benchmarks: the synthetic scan case and the device-aware median timer."""
from __future__ import annotations

import statistics
import time

import numpy as np

from cuptycho import reference


def case(n, batch, modes, dtype, seed=0):
    """A random object scanned by `batch` overlapping n x n patches with `modes` probe modes."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(batch)))
    step = n // 4
    size = n + step * (side - 1) + 2
    obj = (1 + 0.1 * rng.standard_normal((1, size, size))).astype(dtype)
    probe = (rng.standard_normal((modes, n, n)) + 1j * rng.standard_normal((modes, n, n))).astype(dtype)
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:batch]
    positions = grid * step + rng.uniform(0.1, 0.9, size=(batch, 2))
    data = rng.poisson(100, size=(batch, n, n)).astype(reference.real_dtype(dtype))
    mask = np.ones((n, n), reference.real_dtype(dtype))
    return obj, probe, positions, data, mask


def timer(device):
    """median_time(fn, repeat): perf_counter on the CPU, CUDA events on the GPU (after a warm-up)."""
    if device != "cuda":
        def median_time(fn, repeat):
            fn()
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)
        return median_time
    import cupy

    def median_time(fn, repeat):
        fn()
        times = []
        for _ in range(repeat):
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        return statistics.median(times)
    return median_time
