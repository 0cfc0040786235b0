"""Launchers of kernels/likelihood.cu: fused intensity, loss rows and G_Psi over an FFT work buffer.

Shapes: waves (J, *modes, buf_ny, buf_nx) complex, the propagated waves of J patterns as the raw
FFT (or the near-field propagator) left them, every middle axis a mode axis (typically (Mo, K));
data (J, Ny, Nx) and mask (Ny, Nx) or (J, Ny, Nx) in the field's real dtype. The detector window
is waves[..., py:py+Ny, px:px+Nx] for padding = (py, px); window pixel (r, c) pairs with detector
pixel ((r + sy) % Ny, (c + sx) % Nx) for shift = (sy, sx).

Conventions of the two geometries (FFTs are raw, i.e. unnormalised, on every backend):
  far field:  shift = (Ny//2, Nx//2) (the buffer holds the unshifted FFT), padding = (0, 0),
              intensity_scale = 1 / (Ny*Nx);
  near field: shift = (0, 0), the propagator's padding, intensity_scale = 1 (h is pre-divided by
              the padded size, so the buffer holds Psi itself).
Reference twins: `cuptycho.reference.likelihood` (returns (loss_rows, the new waves)) and
`cuptycho.reference.intensity`.
"""
from __future__ import annotations

import numpy as np

from .. import reference
from ..backend import array_module
from ._core import REAL, field_dtype, i64, launch, output, require

LOSS_CODE = {name: code for code, name in enumerate(reference.LOSSES)}   # the kernel's `loss` codes


def _buffer(waves):
    """(dtype, n_pos, n_modes, buf_ny, buf_nx) of a (J, *modes, buf_ny, buf_nx) work buffer."""
    dtype = field_dtype("waves", waves)
    require("waves", waves, dtype)
    if waves.ndim < 3:
        raise ValueError(f"waves must have shape (J, *modes, buf_ny, buf_nx), got {tuple(waves.shape)}")
    n_pos, *modes, buf_ny, buf_nx = waves.shape
    return dtype, n_pos, int(np.prod(modes, dtype=np.int64)), buf_ny, buf_nx


def _window(window, buffer, padding, shift):
    """Checked (padding, shift) as int64 pairs: the window fits the buffer, 0 <= shift < window."""
    (ny, nx), (buf_ny, buf_nx), (py, px), (sy, sx) = window, buffer, padding, shift
    if not (0 <= py and py + ny <= buf_ny and 0 <= px and px + nx <= buf_nx):
        raise ValueError(f"window {(ny, nx)} at padding {tuple(padding)} does not fit the buffer {(buf_ny, buf_nx)}")
    if not (0 <= sy < ny and 0 <= sx < nx):
        raise ValueError(f"shift {tuple(shift)} must lie in [0, {(ny, nx)})")
    return (i64(py), i64(px)), (i64(sy), i64(sx))


def likelihood(waves, data, mask, loss_rows=None, *, loss, n_total, padding=(0, 0), shift=(0, 0),
               intensity_scale=1.0, eps=reference.EPS):
    """Loss per detector row, and G_Psi written over `waves` in place; returns loss_rows (J, Ny) float64.

    Per window pixel: I = intensity_scale * sum_modes |waves|^2; loss_rows[j, r] += w l(I, d)
    (double); waves <- grad_scale * w * l'(I, d) * waves with

        grad_scale = 2 * intensity_scale / n_total

    (MATH.md: G_Psi = 2 w l' Psi / |B| with |B| = n_total, the patterns of the whole minibatch,
    so chunks of one batch add up; with the raw FFT's 1/n in intensity_scale this is the scale
    that makes the raw inverse FFT of the buffer G_psi). Buffer pixels outside the window are
    zeroed (adjoint of the crop). The batch loss is loss_rows.sum() / n_total.

    loss_rows: accumulated into when given (any C-contiguous float64 array of J*Ny elements, in
    (j, r) order; the caller zeroes it), else a new zeroed (J, Ny) array.
    """
    dtype, loss_rows, common, scalars = _checked(waves, data, mask, loss_rows, loss, n_total, padding, shift,
                                                 intensity_scale, eps)
    launch("likelihood", "likelihood", dtype, (waves, data, mask, loss_rows, *common, *scalars),
           rows=int(common[0]) * int(common[2]))
    return loss_rows


def _checked(waves, data, mask, loss_rows, loss, n_total, padding, shift, intensity_scale, eps):
    """The checks `likelihood` and `detector_likelihood` share: (dtype, loss_rows, the sizes and window as
    kernel arguments up to mask_per_pattern, (loss code, eps, intensity_scale, grad_scale))."""
    dtype, n_pos, n_modes, buf_ny, buf_nx = _buffer(waves)
    real = REAL[dtype]
    require("data", data, real, ndim=3)
    ny, nx = data.shape[-2:]
    require("data", data, real, (n_pos, ny, nx))
    require("mask", mask, real, (ny, nx) if mask.ndim == 2 else (n_pos, ny, nx))
    (py, px), (sy, sx) = _window((ny, nx), (buf_ny, buf_nx), padding, shift)
    if loss not in LOSS_CODE:
        raise ValueError(f"loss must be one of {reference.LOSSES}, got {loss!r}")
    if not n_total > 0:
        raise ValueError(f"n_total must be positive, got {n_total!r}")
    if loss_rows is None:
        loss_rows = array_module(waves).zeros((n_pos, ny), np.float64)
    else:
        require("loss_rows", loss_rows, np.float64)
        if loss_rows.size != n_pos * ny:
            raise ValueError(f"loss_rows must have {n_pos} * {ny} elements, got shape {tuple(loss_rows.shape)}")
    grad_scale = 2.0 * intensity_scale / n_total
    common = (i64(n_pos), i64(n_modes), i64(buf_ny), i64(buf_nx), i64(ny), i64(nx), py, px, sy, sx,
              i64(mask.ndim == 3))
    return dtype, loss_rows, common, (i64(LOSS_CODE[loss]), real.type(eps), real.type(intensity_scale),
                                      real.type(grad_scale))


def detector_likelihood(waves, data, mask, scale, background, loss_rows=None, scale_rows=None, dl_di=None, *, loss,
                        n_total, padding=(0, 0), shift=(0, 0), intensity_scale=1.0, eps=reference.EPS,
                        grads=("scale", "background")):
    """`likelihood` of the detector model I = s_j I_coh + b, and its gradients in s and b.

    I_coh is `likelihood`'s I; scale (J,) (s_j; None: 1) and background (Ny, Nx) or (J, Ny, Nx)
    (b in detector order; None: 0), both in the field's real dtype. G_Psi gains the factor s_j.
    Returns (loss_rows, scale_rows, dl_di), the last two None unless named in `grads`:
      scale_rows (J, Ny) float64, accumulated (the caller zeroes it): sum over each window row of
        w l'(I, d) I_coh / n_total, so scale_rows.sum(axis=1) is dL/ds;
      dl_di (J, Ny, Nx) real, detector order, overwritten: w l'(I, d) / n_total, dL/db per
        pattern (sum it over the patterns for a background shared by all).
    """
    dtype, loss_rows, common, scalars = _checked(waves, data, mask, loss_rows, loss, n_total, padding, shift,
                                                 intensity_scale, eps)
    real, n_pos, (ny, nx) = REAL[dtype], waves.shape[0], data.shape[-2:]
    if scale is not None:
        require("scale", scale, real, (n_pos,))
    if background is not None:
        require("background", background, real, (ny, nx) if background.ndim == 2 else (n_pos, ny, nx))
    unknown = set(grads) - {"scale", "background"}
    if unknown:
        raise ValueError(f"grads may name 'scale' and 'background', got {sorted(unknown)}")
    xp = array_module(waves)
    if "scale" in grads:
        scale_rows = output("scale_rows", scale_rows, xp, (n_pos, ny), np.float64, zero=True)
    else:
        scale_rows = None
    dl_di = output("dl_di", dl_di, xp, (n_pos, ny, nx), real) if "background" in grads else None
    per_pattern = background is not None and background.ndim == 3
    launch("likelihood", "detector_likelihood", dtype,
           (waves, data, mask, loss_rows, scale, background, scale_rows, dl_di, *common, i64(per_pattern),
            *scalars, real.type(1.0 / n_total)),
           rows=int(common[0]) * int(common[2]))
    return loss_rows, scale_rows, dl_di


def intensity(waves, out=None, *, padding=(0, 0), shift=(0, 0), intensity_scale=1.0):
    """Modelled intensities (J, Ny, Nx) in detector order; waves are left untouched.

    out[j, (r + sy) % Ny, (c + sx) % Nx] = intensity_scale * sum_modes |waves[j, ..., py + r, px + c]|^2.
    The window is out's (Ny, Nx) when out is given (overwritten), else the buffer less the
    padding on both sides.
    """
    dtype, n_pos, n_modes, buf_ny, buf_nx = _buffer(waves)
    real = REAL[dtype]
    window = (buf_ny - 2 * padding[0], buf_nx - 2 * padding[1]) if out is None else tuple(out.shape[-2:])
    (py, px), (sy, sx) = _window(window, (buf_ny, buf_nx), padding, shift)
    out = output("out", out, array_module(waves), (n_pos, *window), real)
    launch("likelihood", "intensity", dtype,
           (waves, out, i64(n_pos), i64(n_modes), i64(buf_ny), i64(buf_nx), i64(window[0]), i64(window[1]),
            py, px, sy, sx, real.type(intensity_scale)),
           elements=out.size)
    return out
