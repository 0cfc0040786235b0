"""Launchers of kernels/propagate.cu: the spectral multiplies of the transfer-function propagators.

Shapes: x, g, spectrum (..., buf_ny, buf_nx) complex raw-FFT buffers on the (padded) grid, any
number of leading batch axes; h (buf_ny, buf_nx) complex in the same dtype; kz (buf_ny, buf_nx)
float64; dz_rows (..., buf_ny) float64, one per buffer row (batch = the product of the leading axes).

The caller passes h = H_z / n (n = buf_ny * buf_nx) so that raw FFT -> spectrum_fwd -> raw IFFT is
exactly F^-1 diag(H_z) F, and raw FFT -> spectrum_adj -> raw IFFT its adjoint; the dz rows then
need no rescaling (kernels/propagate.cu explains why). Reference twins: `cuptycho.reference.spectrum_fwd`
and `spectrum_adj` (returns (dz_rows, the new g)), both used by `reference.TransferFunctionPropagator`.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ._core import field_dtype, i64, launch, require


def _grid(name, x, h):
    dtype = field_dtype(name, x)
    require(name, x, dtype)
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions, got shape {tuple(x.shape)}")
    buf_ny, buf_nx = x.shape[-2:]
    require("h", h, dtype, (buf_ny, buf_nx))
    return dtype, i64(np.prod(x.shape[:-2], dtype=np.int64)), i64(buf_ny), i64(buf_nx)


def spectrum_fwd(x, h, spectrum_out=None):
    """x *= h in place (broadcast over the leading axes); also stores the product in `spectrum_out`
    (same shape and dtype as x) when given, the forward spectrum dL/dz needs. Returns x."""
    dtype, batch, buf_ny, buf_nx = _grid("x", x, h)
    if spectrum_out is not None:
        require("spectrum_out", spectrum_out, dtype, x.shape)
    launch("propagate", "spectrum_fwd", dtype, (x, spectrum_out, h, batch, buf_ny, buf_nx), elements=x.size)
    return x


def spectrum_adj(g, h, kz=None, spectrum=None, dz_rows=None):
    """g *= conj(h) in place; with the forward `spectrum`, first dz_rows += -sum_cols kz Im(conj(g) spectrum).

    g is the raw FFT of G_Psi. Returns dz_rows, whose sum is dL/dz, or None without a spectrum:
    accumulated into when given (any C-contiguous float64 array of batch * buf_ny elements, in
    row order; the caller zeroes it), else a new zeroed g.shape[:-1] array.
    """
    dtype, batch, buf_ny, buf_nx = _grid("g", g, h)
    if spectrum is None:
        kz = dz_rows = None
    else:
        require("spectrum", spectrum, dtype, g.shape)
        if kz is None:
            raise ValueError("kz is required with a spectrum")
        require("kz", kz, np.float64, (buf_ny, buf_nx))
        if dz_rows is None:
            dz_rows = array_module(g).zeros(g.shape[:-1], np.float64)
        else:
            require("dz_rows", dz_rows, np.float64)
            if dz_rows.size != batch * buf_ny:
                raise ValueError(f"dz_rows must have {batch} * {buf_ny} elements, got shape {tuple(dz_rows.shape)}")
    launch("propagate", "spectrum_adj", dtype, (g, spectrum, h, kz, dz_rows, batch, buf_ny, buf_nx),
           rows=int(batch) * int(buf_ny))
    return dz_rows
