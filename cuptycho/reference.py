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

Twins. Every kernel launcher (a public function of cuptycho/launchers/*.py that launches a kernel)
has a twin here of the same name and parameters, less the launcher's output buffers (out=,
loss_rows=, scale_rows=, dl_di=, spectrum_out=, dz_rows=, grad_patches=, grad_probe=); tests/test_kernels_twins.py
runs each pair on the same inputs and checks the signatures. A twin never writes its arguments.
It returns what its launcher returns (an output buffer the launcher accumulates into is taken
as zeros), followed by the new value of every other argument the launcher writes in place:
    likelihood -> (loss_rows, new waves)        spectrum_adj -> (dz_rows or None, new g)
    detector_likelihood -> (loss_rows, scale_rows or None, dl_di or None, new waves)
    adam_step  -> (new param, new m, new v)     spectrum_fwd, pie_update -> new x, new param
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

def _pad(x, padding):
    """Zero-pad the last two axes by padding = (py, px) pixels on each side."""
    py, px = padding
    if py == px == 0:
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(py, py), (px, px)])


def _crop(x, padding, shape):
    """The (Ny, Nx) = shape window at offset padding = (py, px) of the last two axes: adjoint of _pad."""
    py, px = padding
    return x[..., py:py + shape[0], px:px + shape[1]]


def _modulate(probe, patches):
    """psi[j, m, k] = probe[k] * o[j, m]:  (K, Ny, Nx), (J, Mo, Ny, Nx) -> (J, Mo, K, Ny, Nx)."""
    return patches[:, :, None] * probe[None, None]


def _modulate_adj_patches(probe, grad_psi):
    """Adjoint of `_modulate` in the patches: G_o[j, m] = sum_k conj(probe[k]) G_psi[j, m, k]."""
    return np.einsum("kyx,jmkyx->jmyx", np.conj(probe), grad_psi)


def _modulate_adj_probe(patches, grad_psi):
    """Adjoint of `_modulate` in the probe: G_probe[k] = sum_{j, m} conj(o[j, m]) G_psi[j, m, k]."""
    return np.einsum("jmyx,jmkyx->kyx", np.conj(patches), grad_psi)


def exitwave_fwd(obj, probe, positions, padding=(0, 0)):
    """Exit waves probe[k] * patch_fwd(obj)[j, m] zero-padded by `padding` = (py, px) on each side.

    obj (Mo, H, W), probe (K, Ny, Nx), positions (J, 2) -> (J, Mo, K, Ny + 2 py, Nx + 2 px).
    """
    return _pad(_modulate(probe, patch_fwd(obj, positions, probe.shape[-2:])), padding)


def exitwave_adj(obj, probe, positions, grad_waves, padding=(0, 0)):
    """Adjoint of `exitwave_fwd` in both arguments, from the centre window of `grad_waves`.

    Returns (grad_patches (J, Mo, Ny, Nx), grad_probe (K, Ny, Nx)); the object gradient is
    patch_adj(grad_patches). The padding of grad_waves is ignored (the adjoint of the zero pad).
    """
    grad_psi = _crop(grad_waves, padding, probe.shape[-2:])
    patches = patch_fwd(obj, positions, probe.shape[-2:])
    return _modulate_adj_patches(probe, grad_psi), _modulate_adj_probe(patches, grad_psi)


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

    def __init__(self, kind, shape, z, wavelength, pixel_size, padding=(0, 0), dtype=np.complex128,
                 z_direction=(1.0, 0.0)):
        self.shape = tuple(shape)
        self.padding = tuple(int(p) for p in padding)
        padded = (self.shape[0] + 2 * self.padding[0], self.shape[1] + 2 * self.padding[1])
        h, _ = geometry.transfer_function(kind, padded, z, wavelength, pixel_size)
        self.h = h.astype(dtype)
        # the "z" gradient is the derivative along z_direction = (dz, d pixel scale): plain dL/dz by default
        self.kz = geometry.phase_derivative(kind, padded, z, wavelength, pixel_size, z_direction)

    def _pad(self, x):
        return _pad(x, self.padding)

    def _crop(self, x):
        return _crop(x, self.padding, self.shape)

    def spectrum(self, psi):
        """H_z F P psi, the propagated spectrum the z-gradient needs (kept from the forward pass)."""
        return spectrum_fwd(fft2(self._pad(psi)), self.h)

    def fwd(self, psi, spectrum=None):
        return self._crop(ifft2(self.spectrum(psi) if spectrum is None else spectrum))

    def adj(self, grad):
        """Adjoint of `fwd`."""
        return self.adj_and_dz(grad, None)[0]

    def adj_and_dz(self, grad, spectrum):
        """(A^H G, dL/dz) with dL/dz = -sum kz Im(conj(F P G) spectrum); dz is None without a spectrum."""
        dz_rows, ghat = spectrum_adj(fft2(self._pad(grad)), self.h, self.kz, spectrum)
        return self._crop(ifft2(ghat)), None if dz_rows is None else float(np.sum(dz_rows))


def spectrum_fwd(x, h):
    """The spectral multiply h * x (h (..., buf_ny, buf_nx) broadcast over x's leading axes)."""
    return h * x


def spectrum_adj(g, h, kz=None, spectrum=None):
    """(dz_rows, conj(h) * g): the adjoint multiply and, with the forward spectrum, the rows of
    dL/dz = -sum kz Im(conj(g) spectrum), summed over each buffer row in float64 (g.shape[:-1]);
    dz_rows is None without a spectrum."""
    dz_rows = None
    if spectrum is not None:
        c = np.complex128
        dz_rows = -np.sum(kz * np.imag(np.conj(g.astype(c)) * spectrum.astype(c)), axis=-1)
    return dz_rows, np.conj(h) * g


def make_propagator(kind, shape, *, z=None, wavelength=None, pixel_size=None, padding=(0, 0),
                    dtype=np.complex128, z_direction=(1.0, 0.0)):
    """The propagator named `kind` for patches of `shape`; arguments are assumed validated. Its "z"
    gradient is the derivative along `z_direction` (`geometry.phase_derivative`)."""
    if kind == "farfield":
        return FarField()
    return TransferFunctionPropagator(kind, shape, z, wavelength, pixel_size, padding, dtype, z_direction)


# --------------------------------------------------------------------------- losses

def loss_terms(name, intensity, data, eps=EPS):
    """Per-pixel loss l(I, d), MATH.md step 5 (mask not applied)."""
    i, d = intensity, data
    if name == "gaussian":
        return (np.sqrt(i + eps) - np.sqrt(d + eps)) ** 2
    if name == "poisson":
        # Poisson deviance in I + eps and d + eps: >= 0, zero exactly at I = d (the data-only
        # constant (d + eps) log(d + eps) - d - eps is added as MATH.md asks)
        i_eps, d_eps = i + eps, d + eps
        return i_eps - d_eps * np.log(i_eps) + d_eps * np.log(d_eps) - d_eps
    if name == "intensity":
        return (i - d) ** 2
    if name == "weighted":
        positive = d > 0
        return np.where(positive, (i - d) ** 2 / (2 * np.where(positive, d, 1)), i)
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")


def loss_derivative(name, intensity, data, eps=EPS):
    """dl/dI of `loss_terms`, elementwise."""
    i, d = intensity, data
    if name == "gaussian":
        return 1 - np.sqrt(d + eps) / np.sqrt(i + eps)
    if name == "poisson":
        return 1 - (d + eps) / (i + eps)
    if name == "intensity":
        return 2 * (i - d)
    if name == "weighted":
        positive = d > 0
        return np.where(positive, (i - d) / np.where(positive, d, 1), 1)
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")


def _window_intensity(waves, padding, shape, intensity_scale):
    """intensity_scale * sum over the mode axes of |waves|^2 in the `shape` window at `padding`.

    waves (J, *modes, buf_ny, buf_nx) -> (J, Ny, Nx), in window (not detector) order.
    """
    win = _crop(waves, padding, shape)
    return intensity_scale * np.sum(win.real ** 2 + win.imag ** 2, axis=tuple(range(1, waves.ndim - 2)))


def intensity(waves, *, padding=(0, 0), shift=(0, 0), intensity_scale=1.0):
    """Modelled intensities in detector order: I[j] = intensity_scale * sum_modes |Psi[j, ...]|^2.

    waves (J, *modes, buf_ny, buf_nx); the window is the buffer less `padding` = (py, px) on each
    side, and window pixel (r, c) lands on detector pixel ((r + sy) % Ny, (c + sx) % Nx) for
    shift = (sy, sx). With the defaults: (J, Mo, K, Ny, Nx) -> (J, Ny, Nx), MATH.md step 4.
    """
    shape = (waves.shape[-2] - 2 * padding[0], waves.shape[-1] - 2 * padding[1])
    return np.roll(_window_intensity(waves, padding, shape, intensity_scale), shift, axis=_AXES)


def likelihood(waves, data, mask, *, loss, n_total, padding=(0, 0), shift=(0, 0), intensity_scale=1.0, eps=EPS):
    """Loss rows and G_Psi of the waves of J patterns (MATH.md steps 4-5, first backward link).

    waves (J, *modes, buf_ny, buf_nx); data (J, Ny, Nx) and mask (Ny, Nx) or (J, Ny, Nx) in
    detector order. Window pixel (r, c) (buffer pixel (py + r, px + c)) pairs with detector pixel
    ((r + sy) % Ny, (c + sx) % Nx); I = intensity_scale * sum_modes |waves|^2 there.
    Returns (loss_rows, grad_waves):
      loss_rows (J, Ny) float64, per window row r: sum_c w l(I, d) (the batch loss is
        loss_rows.sum() / n_total);
      grad_waves like waves: (2 intensity_scale / n_total) w l'(I, d) waves in the window, 0 outside
        (the adjoint of the crop); with intensity_scale = 1 that is MATH.md's G_Psi = 2 w l' Psi / |B|.
    """
    loss_rows, _, _, grad_waves = detector_likelihood(waves, data, mask, None, None, loss=loss, n_total=n_total,
                                                      padding=padding, shift=shift,
                                                      intensity_scale=intensity_scale, eps=eps, grads=())
    return loss_rows, grad_waves


def detector_likelihood(waves, data, mask, scale, background, *, loss, n_total, padding=(0, 0), shift=(0, 0),
                        intensity_scale=1.0, eps=EPS, grads=("scale", "background")):
    """`likelihood` of the detector model I = s_j I_coh + b (MATH.md step 4's background, and a scale
    per pattern), with I_coh `likelihood`'s I; scale (J,) or None (1), background (Ny, Nx) or
    (J, Ny, Nx) in detector order, or None (0).

    Returns (loss_rows, scale_rows, dl_di, grad_waves): grad_waves = (2 intensity_scale / n_total)
    s_j w l'(I, d) waves in the window; scale_rows (J, Ny) float64, sum over window row r of
    w l' I_coh / n_total (their sum per pattern is dL/ds_j), and dl_di (J, Ny, Nx) in detector
    order, w l' / n_total (dL/db per pattern), each None unless named in `grads`.
    """
    shape = data.shape[-2:]
    i_coh = _window_intensity(waves, padding, shape, intensity_scale)
    d, w = (np.roll(a, (-shift[0], -shift[1]), axis=_AXES) for a in (data, mask))    # to window order
    s = np.ones(len(waves), i_coh.dtype) if scale is None else np.asarray(scale)
    i = s[:, None, None] * i_coh
    if background is not None:
        i = i + np.roll(background, (-shift[0], -shift[1]), axis=_AXES)
    # loss values in float64 whatever the field precision: the poisson terms cancel to O(1) from
    # O(d log d), which float32 would resolve only to ~1e-2 per pixel at 1e4 counts
    f64 = np.float64
    loss_rows = np.sum(w.astype(f64) * loss_terms(loss, i.astype(f64), d.astype(f64), eps), axis=-1)
    dl = w * loss_derivative(loss, i, d, eps)
    factor = ((2.0 * intensity_scale / n_total) * s[:, None, None] * dl).astype(i_coh.dtype)
    factor = factor.reshape(factor.shape[:1] + (1,) * (waves.ndim - 3) + factor.shape[1:])   # over the modes
    grad_waves = np.zeros_like(waves)
    _crop(grad_waves, padding, shape)[...] = factor * _crop(waves, padding, shape)
    scale_rows = np.sum(dl.astype(f64) * i_coh.astype(f64), axis=-1) / n_total if "scale" in grads else None
    dl_di = np.roll(dl / n_total, shift, axis=_AXES).astype(i_coh.dtype) if "background" in grads else None
    return loss_rows, scale_rows, dl_di, grad_waves


# --------------------------------------------------------------------------- the whole model

def forward(obj, probe, positions, propagator, scale=None, background=None):
    """Modelled intensities (J, Ny, Nx) for validated (Mo, H, W) obj and (K, Ny, Nx) probe:
    scale_j I_coh + background when those are given (`detector_likelihood`)."""
    out = intensity(propagator.fwd(exitwave_fwd(obj, probe, positions)))
    if scale is not None:
        out = out * scale[:, None, None]
    return out if background is None else out + background


def loss_and_grad(obj, probe, positions, data, mask, loss, propagator, scale=None, background=None, n_total=None):
    """Loss (1/J) sum_j sum_pixels w l(I_j, d_j) and its gradients (MATH.md backward chain).

    mask : (Ny, Nx) or (J, Ny, Nx) real weights, same real dtype as the fields.
    scale (J,), background (Ny, Nx) or (J, Ny, Nx): the detector model I = scale_j I_coh + background
    (`detector_likelihood`); each given one adds its gradient ("scale", "background", same shape).
    n_total: the patterns the loss averages over (default J; more when these are a part of a larger batch).
    Returns (loss float, dict with "object", "probe", "positions" and "z" when it applies).
    """
    n_patterns = positions.shape[0] if n_total is None else n_total
    patches = patch_fwd(obj, positions, probe.shape[-2:])
    psi = _modulate(probe, patches)
    spectrum = propagator.spectrum(psi) if propagator.depends_on_z else None
    psi_far = propagator.fwd(psi, spectrum) if propagator.depends_on_z else propagator.fwd(psi)
    wanted = tuple(name for name, given in (("scale", scale), ("background", background)) if given is not None)
    loss_rows, scale_rows, dl_di, grad_far = detector_likelihood(psi_far, data, mask, scale, background, loss=loss,
                                                                 n_total=n_patterns, grads=wanted)
    value = float(np.sum(loss_rows)) / n_patterns

    grads = {}
    if scale is not None:
        grads["scale"] = scale_rows.sum(axis=1)
    if background is not None:
        grads["background"] = dl_di if background.ndim == 3 else dl_di.sum(axis=0)
    if propagator.depends_on_z:
        grad_psi, grads["z"] = propagator.adj_and_dz(grad_far, spectrum)
    else:
        grad_psi = propagator.adj(grad_far)
    grad_patches = _modulate_adj_patches(probe, grad_psi)
    grads["object"] = patch_adj(grad_patches, positions, obj.shape)
    grads["probe"] = _modulate_adj_probe(patches, grad_psi)
    grads["positions"] = patch_posgrad(obj, positions, grad_patches)
    return value, grads


# --------------------------------------------------------------------------- parameter updates

def pie_update(param, grad, weight, weight_max, *, step, alpha, rel_floor=1e-8):
    """The PIE family's regularised step, returned as a new array (twin of kernels/pie.cu):
    param + step grad / d with d = max((1 - alpha) weight + alpha weight_max, rel_floor weight_max),
    weight broadcast over the leading (mode) axes; unchanged where d = 0."""
    wmax = np.asarray(weight_max).reshape(-1)[0]
    d = np.maximum((1 - alpha) * weight + alpha * wmax, rel_floor * wmax)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(d > 0, step / d, 0)
    return (param + gain * grad).astype(param.dtype)


def adam_step(param, grad, m, v, *, step, lr, betas=(0.9, 0.999), eps=1e-8):
    """One Adam step (PyTorch's formulation) computed in float64; returns new (param, m, v).

    param, grad : (S) real or complex (grad = dL/dRe + i dL/dIm for complex).
    m, v : (S) for real param; for complex param (*S, 2), [..., 0] the real-part and [..., 1] the
        imaginary-part moments (MATH.md "Adam on complex parameters": a complex number is two
        reals to the optimiser; the layout of `cuptycho.launchers.adam.adam_state`).
    The results have the dtypes of the inputs.
    """
    param, grad = np.asarray(param), np.asarray(grad)
    is_complex = np.iscomplexobj(param)
    if is_complex:                       # each complex number is the pair (real part, imaginary part)
        p = np.stack([param.real, param.imag], axis=-1).astype(np.float64)
        g = np.stack([grad.real, grad.imag], axis=-1).astype(np.float64)
    else:
        p, g = param.astype(np.float64), grad.astype(np.float64)
    b1, b2 = betas
    m_new = b1 * np.asarray(m, np.float64) + (1 - b1) * g
    v_new = b2 * np.asarray(v, np.float64) + (1 - b2) * g**2
    m_hat = m_new / (1 - b1**step)
    v_hat = v_new / (1 - b2**step)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    p_new = p[..., 0] + 1j * p[..., 1] if is_complex else p
    return p_new.astype(param.dtype), m_new.astype(np.asarray(m).dtype), v_new.astype(np.asarray(v).dtype)
