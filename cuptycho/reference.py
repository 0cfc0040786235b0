"""NumPy reference of the forward model and its complete Wirtinger gradient chain (MATH.md).

Slow where it must be, obviously correct everywhere: this module is the oracle that every
compiled kernel is tested against, and the fallback when no compiler exists. It is vectorised
(no Python loops over pixels or positions) and runs in complex64 or complex128.

Arrays, batch first (C order):
    obj       : (Mo, H, W) complex      object modes
    probe     : (K, Ny, Nx) complex     probe modes
    positions : (J, 2) float64          (y, x) top-left corner of each patch, object pixels
    patches   : (J, Mo, Ny, Nx)         bilinearly sampled object patches o[j, m]
    psi, Psi  : (J, Mo, K, Ny, Nx)      exit waves and propagated waves
    data, I   : (J, Ny, Nx) real        measured and modelled intensities

Gradients use g = dL/dRe + i dL/dIm (a step dx changes L by Re(vdot(g, dx))). Inputs are
assumed valid here; `cuptycho.api` checks them before calling in.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from . import geometry

LOSSES = ("gaussian", "poisson", "intensity", "weighted")

# Guard against 0/0 where the model intensity vanishes, in photon-count units. It is added to
# both I and d in the gaussian and poisson terms, so each loss is zero with a zero gradient
# exactly at I = d, and the derivative below is exact for the value reported.
EPS = 1e-6

_AXES = (-2, -1)


def real_dtype(dtype) -> np.dtype:
    return np.finfo(np.dtype(dtype)).dtype


# --------------------------------------------------------------------------- bilinear sampling

def bilinear_taps(positions, patch_shape, obj_shape):
    """Integer corner (y0, x0) and fractions (ty, tx) of each patch, all (J,).

    y0 = floor(y) except at the object's far edge, where y0 = H - Ny - 1 and ty = 1: every tap
    then lies inside the object for 0 <= y <= H - Ny, and integer positions still give exact
    crops. The position derivative is one-sided there (from inside the object).
    """
    pos = np.asarray(positions, dtype=np.float64)
    (ny, nx), (h, w) = patch_shape, obj_shape[-2:]
    y0 = np.minimum(np.floor(pos[:, 0]), h - ny - 1).astype(np.int64)
    x0 = np.minimum(np.floor(pos[:, 1]), w - nx - 1).astype(np.int64)
    return y0, x0, pos[:, 0] - y0, pos[:, 1] - x0


def _corner_index(y0, x0, patch_shape, width, dy, dx):
    """Flat object index of corner (dy, dx) for every patch pixel: (J, Ny, Nx) int64."""
    rows = y0[:, None] + dy + np.arange(patch_shape[0])
    cols = x0[:, None] + dx + np.arange(patch_shape[1])
    return rows[:, :, None] * width + cols[:, None, :]


_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _corner_weights(ty, tx, dtype):
    """Bilinear weights of the four corners, each (J, 1, 1, 1) for broadcasting over (J, Mo, Ny, Nx)."""
    w = ((1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx)
    return [wi.astype(real_dtype(dtype))[:, None, None, None] for wi in w]


def _corners(obj, positions, patch_shape):
    """The four corner samples O[m, y0+r+dy, x0+c+dx], each (J, Mo, Ny, Nx), and the taps."""
    y0, x0, ty, tx = bilinear_taps(positions, patch_shape, obj.shape)
    flat = obj.reshape(obj.shape[0], -1)
    corners = [np.moveaxis(flat[:, _corner_index(y0, x0, patch_shape, obj.shape[-1], dy, dx)], 0, 1)
               for dy, dx in _CORNERS]
    return corners, (y0, x0, ty, tx)


def patch_fwd(obj, positions, patch_shape):
    """Bilinear patches o[j, m] of the object at fractional positions.

    obj : (Mo, H, W) complex;  positions : (J, 2) float64;  returns (J, Mo, Ny, Nx) complex.
    """
    corners, (_, _, ty, tx) = _corners(obj, positions, patch_shape)
    weights = _corner_weights(ty, tx, obj.dtype)
    return sum(w * c for w, c in zip(weights, corners))


def patch_adj(patches, positions, obj_shape):
    """Adjoint of `patch_fwd`: scatter-add each patch into the object with the same weights.

    patches : (J, Mo, Ny, Nx) complex;  returns (Mo, H, W) complex.
    """
    n_modes, h, w = obj_shape
    j, _, ny, nx = patches.shape
    y0, x0, ty, tx = bilinear_taps(positions, (ny, nx), obj_shape)
    weights = _corner_weights(ty, tx, patches.dtype)
    mode_offset = (np.arange(n_modes) * h * w)[None, :, None, None]
    index = np.concatenate([
        np.broadcast_to(_corner_index(y0, x0, (ny, nx), w, dy, dx)[:, None] + mode_offset, patches.shape).ravel()
        for dy, dx in _CORNERS])
    values = np.concatenate([(wi * patches).ravel() for wi in weights])
    size = n_modes * h * w
    out = np.bincount(index, values.real, size) + 1j * np.bincount(index, values.imag, size)
    return out.astype(patches.dtype).reshape(obj_shape)


def patch_posgrad(obj, positions, grad_patches):
    """dL/d(y, x) of every position from the patch gradient G_o (MATH.md, backward chain).

    obj : (Mo, H, W);  grad_patches : (J, Mo, Ny, Nx);  returns (J, 2) float64.
    """
    corners, (_, _, ty, tx) = _corners(obj, positions, grad_patches.shape[-2:])
    c00, c01, c10, c11 = corners
    ty, tx = (t[:, None, None, None] for t in (ty, tx))
    do_dty = (1 - tx) * (c10 - c00) + tx * (c11 - c01)
    do_dtx = (1 - ty) * (c01 - c00) + ty * (c11 - c10)
    g = np.conj(grad_patches)
    return np.stack([np.real(g * do_dty).sum(axis=(1, 2, 3), dtype=np.float64),
                     np.real(g * do_dtx).sum(axis=(1, 2, 3), dtype=np.float64)], axis=1)


# --------------------------------------------------------------------------- mixed-state exit waves

def exitwave_fwd(probe, patches):
    """psi[j, m, k] = probe[k] * o[j, m].  probe (K, Ny, Nx), patches (J, Mo, Ny, Nx) -> (J, Mo, K, Ny, Nx)."""
    return patches[:, :, None] * probe[None, None]


def exitwave_adj_obj(probe, grad_psi):
    """Adjoint of `exitwave_fwd` in the patches: G_o[j, m] = sum_k conj(probe[k]) G_psi[j, m, k]."""
    return np.einsum("kyx,jmkyx->jmyx", np.conj(probe), grad_psi)


def exitwave_adj_probe(patches, grad_psi):
    """Adjoint of `exitwave_fwd` in the probe: G_probe[k] = sum_{j, m} conj(o[j, m]) G_psi[j, m, k]."""
    return np.einsum("jmyx,jmkyx->kyx", np.conj(patches), grad_psi)


# --------------------------------------------------------------------------- propagation

def fft2(x):
    return sfft.fft2(x, axes=_AXES, norm="ortho", workers=-1)


def ifft2(x):
    return sfft.ifft2(x, axes=_AXES, norm="ortho", workers=-1)


class FarField:
    """Psi = fftshift(F psi): unitary, detector zero frequency at (Ny//2, Nx//2).

    fwd: (..., Ny, Nx) -> (..., Ny, Nx);  adj: inverse shift, then F^H.
    """
    clinear = True
    depends_on_z = False

    def fwd(self, psi):
        return sfft.fftshift(fft2(psi), axes=_AXES)

    def adj(self, grad):
        """Adjoint of `fwd`."""
        return ifft2(sfft.ifftshift(grad, axes=_AXES))


class TransferFunctionPropagator:
    """Psi = C F^-1 diag(H_z) F P psi for `angular_spectrum` or `fresnel` (MATH.md step 3).

    P zero-pads `padding` = (py, px) pixels on each side, C crops the centre back; H_z and kz
    come from `geometry.transfer_function` on the padded grid. fwd/adj: (..., Ny, Nx) both ways.
    """
    clinear = True
    depends_on_z = True

    def __init__(self, kind, shape, z, wavelength, pixel_size, padding=(0, 0), dtype=np.complex128):
        self.shape = tuple(shape)
        self.padding = tuple(int(p) for p in padding)
        padded = (self.shape[0] + 2 * self.padding[0], self.shape[1] + 2 * self.padding[1])
        h, kz = geometry.transfer_function(kind, padded, z, wavelength, pixel_size)
        self.h = h.astype(dtype)
        self.kz = kz

    def _pad(self, x):
        py, px = self.padding
        if py == px == 0:
            return x
        return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(py, py), (px, px)])

    def _crop(self, x):
        py, px = self.padding
        return x[..., py:py + self.shape[0], px:px + self.shape[1]]

    def spectrum(self, psi):
        """H_z F P psi, the propagated spectrum the z-gradient needs (kept from the forward pass)."""
        return self.h * fft2(self._pad(psi))

    def fwd(self, psi, spectrum=None):
        return self._crop(ifft2(self.spectrum(psi) if spectrum is None else spectrum))

    def adj(self, grad):
        """Adjoint of `fwd`."""
        return self.adj_and_dz(grad, None)[0]

    def adj_and_dz(self, grad, spectrum):
        """(A^H G, dL/dz) with dL/dz = -sum kz Im(conj(F P G) spectrum); dz is None without a spectrum."""
        ghat = fft2(self._pad(grad))
        dz = None
        if spectrum is not None:
            dz = -float(np.sum(self.kz * np.imag(np.conj(ghat) * spectrum), dtype=np.float64))
        return self._crop(ifft2(np.conj(self.h) * ghat)), dz


def make_propagator(kind, shape, *, z=None, wavelength=None, pixel_size=None, padding=(0, 0),
                    dtype=np.complex128):
    """The propagator named `kind` for patches of `shape`; arguments are assumed validated."""
    if kind == "farfield":
        return FarField()
    return TransferFunctionPropagator(kind, shape, z, wavelength, pixel_size, padding, dtype)


# --------------------------------------------------------------------------- losses

def loss_terms(name, intensity, data):
    """Per-pixel loss l(I, d), MATH.md step 5 (mask not applied)."""
    i, d = intensity, data
    if name == "gaussian":
        return (np.sqrt(i + EPS) - np.sqrt(d + EPS)) ** 2
    if name == "poisson":
        # Poisson deviance in I + eps and d + eps: >= 0, zero exactly at I = d (the data-only
        # constant (d + eps) log(d + eps) - d - eps is added as MATH.md asks)
        i_eps, d_eps = i + EPS, d + EPS
        return i_eps - d_eps * np.log(i_eps) + d_eps * np.log(d_eps) - d_eps
    if name == "intensity":
        return (i - d) ** 2
    if name == "weighted":
        positive = d > 0
        return np.where(positive, (i - d) ** 2 / (2 * np.where(positive, d, 1)), i)
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")


def loss_derivative(name, intensity, data):
    """dl/dI of `loss_terms`, elementwise."""
    i, d = intensity, data
    if name == "gaussian":
        return 1 - np.sqrt(d + EPS) / np.sqrt(i + EPS)
    if name == "poisson":
        return 1 - (d + EPS) / (i + EPS)
    if name == "intensity":
        return 2 * (i - d)
    if name == "weighted":
        positive = d > 0
        return np.where(positive, (i - d) / np.where(positive, d, 1), 1)
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")


# --------------------------------------------------------------------------- the whole model

def intensity(psi_far):
    """I[j] = sum_{m, k} |Psi[j, m, k]|^2:  (J, Mo, K, Ny, Nx) -> (J, Ny, Nx)."""
    return np.sum(psi_far.real ** 2 + psi_far.imag ** 2, axis=(1, 2))


def forward(obj, probe, positions, propagator):
    """Modelled intensities (J, Ny, Nx) for validated (Mo, H, W) obj and (K, Ny, Nx) probe."""
    psi = exitwave_fwd(probe, patch_fwd(obj, positions, probe.shape[-2:]))
    return intensity(propagator.fwd(psi))


def loss_and_grad(obj, probe, positions, data, mask, loss, propagator):
    """Loss (1/J) sum_j sum_pixels w l(I_j, d_j) and its gradients (MATH.md backward chain).

    mask : (Ny, Nx) or (J, Ny, Nx) real weights, same real dtype as the fields.
    Returns (loss float, dict with "object", "probe", "positions" and "z" when it applies).
    """
    n_patterns = positions.shape[0]
    patches = patch_fwd(obj, positions, probe.shape[-2:])
    psi = exitwave_fwd(probe, patches)
    spectrum = propagator.spectrum(psi) if propagator.depends_on_z else None
    psi_far = propagator.fwd(psi, spectrum) if propagator.depends_on_z else propagator.fwd(psi)
    i = intensity(psi_far)

    # loss values in float64 whatever the field precision: the poisson terms cancel to O(1) from
    # O(d log d), which float32 would resolve only to ~1e-2 per pixel at 1e4 counts
    f64 = np.float64
    value = float(np.sum(mask.astype(f64) * loss_terms(loss, i.astype(f64), data.astype(f64)))) / n_patterns
    weight = (2.0 / n_patterns) * mask * loss_derivative(loss, i, data)
    grad_far = weight[:, None, None].astype(i.dtype) * psi_far

    grads = {}
    if propagator.depends_on_z:
        grad_psi, grads["z"] = propagator.adj_and_dz(grad_far, spectrum)
    else:
        grad_psi = propagator.adj(grad_far)
    grad_patches = exitwave_adj_obj(probe, grad_psi)
    grads["object"] = patch_adj(grad_patches, positions, obj.shape)
    grads["probe"] = exitwave_adj_probe(patches, grad_psi)
    grads["positions"] = patch_posgrad(obj, positions, grad_patches)
    return value, grads


def pie_update(param, grad, weight, weight_max, step, alpha, rel_floor=1e-8):
    """The PIE family's regularised step (twin of kernels/pie.cu), returned as a new array:
    param + step grad / d with d = max((1 - alpha) weight + alpha weight_max, rel_floor weight_max),
    weight broadcast over the leading (mode) axes; unchanged where d = 0."""
    wmax = np.asarray(weight_max).reshape(-1)[0]
    d = np.maximum((1 - alpha) * weight + alpha * wmax, rel_floor * wmax)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(d > 0, step / d, 0)
    return (param + gain * grad).astype(param.dtype)
