"""Launchers of kernels/exitwave.cu: fused mixed-state exit waves and their fused adjoint.

Shapes: obj (Mo, H, W); positions (J, 2) float64 inside the object; probe (K, Ny, Nx);
waves (J, Mo, K, Ny + 2 py, Nx + 2 px), the FFT work buffer with the exit wave in its centre
window and `padding` = (py, px) zero pixels on each side.
Reference twins: `cuptycho.reference.exitwave_fwd` and `exitwave_adj`.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ._core import field_dtype, grid_threads, i64, launch, output, require
from .sampling import _geometry


def _shapes(obj, probe, positions, padding):
    dtype = field_dtype("obj", obj)
    require("obj", obj, dtype, ndim=3)
    require("probe", probe, dtype, ndim=3)
    (mo, h, w), n, (ny, nx) = _geometry(obj.shape, positions, probe.shape[-2:])
    py, px = padding
    k = i64(probe.shape[0])
    buf = (int(n), int(mo), int(k), int(ny) + 2 * py, int(nx) + 2 * px)
    return dtype, (mo, h, w, n, k, ny, nx, i64(buf[3]), i64(buf[4]), i64(py), i64(px)), buf


def exitwave_fwd(obj, probe, positions, padding=(0, 0), out=None):
    """Exit waves probe[k] * patch(obj[m], pos[j]) in a zero-padded buffer (J, Mo, K, BNy, BNx)."""
    dtype, (mo, h, w, n, k, ny, nx, bny, bnx, py, px), buf = _shapes(obj, probe, positions, padding)
    out = output("out", out, array_module(obj), buf, dtype)
    launch("exitwave", "exitwave_fwd", dtype,
           (obj, mo, h, w, positions, n, probe, k, ny, nx, bny, bnx, py, px, out), elements=out.size // int(k))
    return out


def exitwave_adj(obj, probe, positions, grad_waves, padding=(0, 0), grad_patches=None, grad_probe=None):
    """Adjoint of `exitwave_fwd` in both arguments, from the window of `grad_waves`.

    Returns (grad_patches (J, Mo, Ny, Nx), overwritten; grad_probe (K, Ny, Nx), accumulated into
    when given, else started from zeros). The object gradient is `sampling.patch_adj(grad_patches)`.
    """
    dtype, (mo, h, w, n, k, ny, nx, bny, bnx, py, px), buf = _shapes(obj, probe, positions, padding)
    require("grad_waves", grad_waves, dtype, buf)
    xp = array_module(obj)
    grad_patches = output("grad_patches", grad_patches, xp, (int(n), int(mo), int(ny), int(nx)), dtype)
    grad_probe = output("grad_probe", grad_probe, xp, probe.shape, dtype, zero=True)
    pixels = int(ny) * int(nx)
    if xp is np:                       # the CPU walks every position per thread: no scratch
        chunks, partial = 1, None
    else:                              # the GPU: enough (chunk, pixel) threads to fill the grid
        chunks = max(1, min(int(n), -(-grid_threads() // pixels)))
        partial = xp.zeros((chunks, *probe.shape), dtype)
    launch("exitwave", "exitwave_adj", dtype,
           (obj, mo, h, w, positions, n, probe, k, ny, nx, bny, bnx, py, px, grad_waves, grad_patches, grad_probe,
            i64(chunks), partial), elements=chunks * pixels)
    if partial is not None:
        launch("exitwave", "exitwave_adj_probe_sum", dtype, (partial, i64(chunks), i64(probe.size), grad_probe),
               elements=probe.size)
    return grad_patches, grad_probe
