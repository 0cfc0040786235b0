"""Launchers of kernels/sampling.cu: bilinear patches, their scatter adjoint, position gradients.

Shapes: obj (Mo, H, W) complex; positions (J, 2) float64 (y, x), each patch inside the object
(0 <= y <= H - Ny, 0 <= x <= W - Nx; `cuptycho.validation.positions` checks it at the API);
patches (J, Mo, Ny, Nx). Reference twins: `cuptycho.reference.patch_fwd`, `patch_adj`, `patch_posgrad`.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ._core import field_dtype, i64, launch, output, require


def _geometry(obj_shape, positions, patch_shape):
    require("positions", positions, np.float64, ndim=2)
    if positions.shape[1] != 2:
        raise ValueError(f"positions must have shape (J, 2), got {positions.shape}")
    mo, h, w = obj_shape
    ny, nx = patch_shape
    if h <= ny or w <= nx:
        raise ValueError(f"obj {obj_shape[1:]} must be larger than the patch {tuple(patch_shape)}")
    return (i64(mo), i64(h), i64(w)), i64(positions.shape[0]), (i64(ny), i64(nx))


def patch_fwd(obj, positions, patch_shape, out=None):
    """Bilinear patches of `obj` at `positions`: (J, Mo, Ny, Nx)."""
    dtype = field_dtype("obj", obj)
    require("obj", obj, dtype, ndim=3)
    (mo, h, w), n, (ny, nx) = _geometry(obj.shape, positions, patch_shape)
    out = output("out", out, array_module(obj), (n, mo, ny, nx), dtype)
    launch("sampling", "patch_fwd", dtype, (obj, mo, h, w, positions, n, ny, nx, out), elements=out.size)
    return out


def patch_adj(patches, positions, obj_shape, out=None):
    """Adjoint of `patch_fwd`: scatter-add of patches (J, Mo, Ny, Nx) into (Mo, H, W).

    Accumulates into `out` when given (the chunked pipeline sums over chunks), else into zeros.
    """
    dtype = field_dtype("patches", patches)
    (mo, h, w), n, (ny, nx) = _geometry(obj_shape, positions, patches.shape[-2:])
    require("patches", patches, dtype, (n, mo, ny, nx))
    out = output("out", out, array_module(patches), tuple(obj_shape), dtype, zero=True)
    launch("sampling", "patch_adj", dtype, (patches, mo, h, w, positions, n, ny, nx, out), elements=patches.size)
    return out


def patch_posgrad(obj, positions, grad_patches, out=None):
    """dL/d(y, x) (J, 2) float64 of each position from the patch gradient (J, Mo, Ny, Nx)."""
    dtype = field_dtype("obj", obj)
    require("obj", obj, dtype, ndim=3)
    (mo, h, w), n, (ny, nx) = _geometry(obj.shape, positions, grad_patches.shape[-2:])
    require("grad_patches", grad_patches, dtype, (n, mo, ny, nx))
    out = output("out", out, array_module(obj), (int(n), 2), np.float64)
    launch("sampling", "patch_posgrad", dtype, (obj, mo, h, w, positions, n, ny, nx, grad_patches, out),
           blocks=int(n))
    return out
