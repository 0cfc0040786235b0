"""Launchers of kernels/sampling.cu: bilinear patches, their scatter adjoint, position gradients.

Shapes: obj (Mo, H, W) complex; positions (J, 2) float64 (y, x), each patch inside the object
(0 <= y <= H - Ny, 0 <= x <= W - Nx; `cuptycho.validation.positions` checks it at the API);
patches (J, Mo, Ny, Nx). Reference twins: `cuptycho.reference.patch_fwd`, `patch_adj`, `patch_posgrad`.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ._core import field_dtype, i64, launch, output, require

TILE = 32        # object pixels per side of the GPU patch_adj's tiles: 1024 pixels for a block of 256 threads


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

    Accumulates into `out` when given (the chunked pipeline sums over chunks), else into zeros. Every object
    pixel adds the patches covering it in index order (one writer, no atomics): the same on every run.
    """
    dtype = field_dtype("patches", patches)
    (mo, h, w), n, (ny, nx) = _geometry(obj_shape, positions, patches.shape[-2:])
    require("patches", patches, dtype, (n, mo, ny, nx))
    xp = array_module(patches)
    out = output("out", out, xp, tuple(obj_shape), dtype, zero=True)
    if not n:
        return out
    if xp is np:
        launch("sampling", "patch_adj", dtype, (patches, mo, h, w, positions, n, ny, nx, None, None, i64(0), out),
               elements=patches.size)
        return out
    tile_start, tile_pos, n_blocks = _tile_lists(xp, positions, (h, w), (ny, nx))
    launch("sampling", "patch_adj", dtype, (patches, mo, h, w, positions, n, ny, nx, tile_start, tile_pos, i64(TILE),
                                            out), rows=n_blocks)
    return out


def tile_slots(patch_shape):
    """The object tiles a patch's scatter may reach (its footprint is one pixel larger than the patch)."""
    return (patch_shape[0] // TILE + 2) * (patch_shape[1] // TILE + 2)


def _tile_lists(xp, positions, obj_hw, patch_shape):
    """(tile_start, tile_pos, blocks) of the GPU gather: each TILE x TILE object tile's patches, ascending, and
    how many blocks the launch needs (one per tile). One patch needs no lists: (None, None, its own tiles)."""
    (h, w), (ny, nx), n = obj_hw, patch_shape, positions.shape[0]
    slots = tile_slots(patch_shape)
    if n == 1:
        return None, None, slots
    keys = xp.empty(n * slots, np.int64)
    launch("sampling", "patch_tile_keys", np.float64,
           (positions, i64(n), i64(ny), i64(nx), i64(h), i64(w), i64(TILE), keys), elements=keys.size)
    keys.sort()
    n_tiles = -(-h // TILE) * -(-w // TILE)
    tile_start = xp.searchsorted(keys, xp.arange(n_tiles + 1, dtype=np.int64) * n)
    return tile_start.astype(np.int64, copy=False), keys % n, n_tiles


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
