"""Subpixel image registration by upsampled-DFT matrix products, for NumPy and CuPy arrays.

Algorithm of Guizar-Sicairos, Thurman & Fienup, "Efficient subpixel image registration
algorithms", Opt. Lett. 33, 156 (2008), written here from the paper:

1. the cross-power spectrum C(f) = F_moving(f) conj(F_reference(f)) is inverse transformed
   with an FFT; the peak of |c| gives the integer shift s0;
2. the cross-correlation is then evaluated on a grid of spacing 1/`upsample` pixel over
   s0 +- 0.75 pixel by a matrix-multiply DFT, c(t) = sum_f C(f) exp(+2 pi i f.t) =
   (E_y C E_x^T)(t), and its peak gives the subpixel shift. The cost is
   O(M H W + M^2 W) per image, M = 1.5 `upsample`, with no zero-padded FFT.

Sign convention (used by every function here and by `metrics`):
    ``moving(r) = reference(r - shift)``, i.e. `moving` is `reference` translated by
    `+shift` pixels along (y, x): a feature at index r0 in `reference` sits at r0 + shift
    in `moving`. ``fourier_shift(image, shift)`` applies exactly this translation and
    ``np.roll(image, shift, axis=(-2, -1))`` agrees with it for integer shifts, so
    ``register_shift(ref, fourier_shift(ref, s)) == s``. (scikit-image's
    `phase_cross_correlation` returns the opposite sign: the shift that registers
    `moving` back onto `reference`.)

Array-generic: the array namespace (numpy or cupy) is taken from the inputs, everything
runs on that namespace, and there is no Python loop over images: leading dimensions are
batch dimensions (broadcast between `reference` and `moving`), so thousands of small
patches register in one call of a few batched FFTs and matrix products.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import array_module

__all__ = ["fourier_shift", "register_shift"]


def _fft(xp):
    """FFT namespace: scipy.fft on the host (keeps complex64, multithreaded), xp.fft otherwise."""
    if xp is np:
        import scipy.fft

        return scipy.fft
    return xp.fft


def _complex_dtype(*dtypes):
    """complex64 for float32/complex64 (and smaller) inputs, complex128 for everything else."""
    rt = np.result_type(*dtypes)
    return np.dtype(np.complex64) if rt in (np.float16, np.float32, np.complex64) else np.dtype(np.complex128)


def _check_images(name, a):
    if a.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., H, W), got shape {a.shape}")
    if a.shape[-1] == 0 or a.shape[-2] == 0:
        raise ValueError(f"{name} has an empty image axis: shape {a.shape}")


def _wrap(xp, s, n):
    """Map shifts to their periodic equivalents in [-n/2, n/2)."""
    return s - n * xp.floor(s / n + 0.5)


def fourier_shift(image, shift):
    """Translate images by subpixel amounts with the Fourier shift theorem (periodic boundary).

    Returns ``out(r) = image(r - shift)``: content moves by `+shift` pixels, so integer shifts
    reproduce ``np.roll(image, shift, axis=(-2, -1))``.

    Parameters
    ----------
    image : (..., H, W) real or complex, numpy or cupy
        Images; leading dimensions are batch dimensions.
    shift : (..., 2) float
        (y, x) translation in pixels; its leading dimensions broadcast against
        ``image.shape[:-2]`` (a single (2,) shift moves every image alike). Host arrays are
        moved to the device of `image`.

    Returns
    -------
    out : (broadcast(...), H, W), same kind and precision as `image`
        Complex in, complex out. For a real image the real part is returned; that equals
        shifting with a Hermitian-symmetric Nyquist term (cos(pi s) instead of exp(i pi s)
        on even axes), so the result stays real.

    Notes
    -----
    Frequencies are ``fftfreq(N)`` (the Nyquist bin of an even axis is -1/2), as in
    `register_shift`. Phases are formed in float64 and cast once to the working precision
    (complex64 for float32/complex64 input, complex128 otherwise).
    """
    xp = array_module(image)
    image = xp.asarray(image)
    _check_images("image", image)
    if xp is np and hasattr(shift, "get") and not isinstance(shift, np.ndarray):
        shift = shift.get()                                      # device shifts for a host image
    shift = xp.asarray(shift, dtype=xp.float64)
    if shift.ndim == 0 or shift.shape[-1] != 2:
        raise ValueError(f"shift must have shape (..., 2) in (y, x) order, got {shift.shape}")
    is_complex = xp.iscomplexobj(image)
    cdtype = _complex_dtype(image.dtype)
    h, w = image.shape[-2:]
    fy = xp.asarray(np.fft.fftfreq(h))
    fx = xp.asarray(np.fft.fftfreq(w))
    # separable ramp exp(-2 pi i (fy sy + fx sx)), built per axis: (..., H, 1) * (..., 1, W)
    ry = xp.exp(-2j * np.pi * fy * shift[..., 0:1]).astype(cdtype)[..., :, None]
    rx = xp.exp(-2j * np.pi * fx * shift[..., 1:2]).astype(cdtype)[..., None, :]
    fft = _fft(xp)
    out = fft.ifft2(fft.fft2(image.astype(cdtype, copy=False), axes=(-2, -1)) * ry * rx, axes=(-2, -1))
    if not is_complex:
        out = out.real.astype(image.dtype if image.dtype.kind == "f" else out.real.dtype, copy=False)
    return out


# Long for its docstring (39 lines: the method, the sign convention, the batched shapes); the body is
# the two stages of one upsampled-DFT search, which share their device arrays.
def register_shift(reference, moving, *, upsample=100, return_error=False):
    """Subpixel translation of `moving` relative to `reference` (batched, numpy or cupy).

    Finds `shift` with ``moving(r) ~ exp(i phase) reference(r - shift)``, i.e. `moving` is
    `reference` translated by `+shift`; ``register_shift(a, fourier_shift(a, s))`` returns s
    and ``fourier_shift(moving, -shift)`` registers `moving` onto `reference`.

    Parameters
    ----------
    reference : (..., H, W) real or complex
        Reference images.
    moving : (..., H, W) real or complex, same namespace as `reference`
        Images to register. The leading dimensions of both broadcast (one reference against a
        stack of moving images is one FFT of the reference).
    upsample : float, optional
        Refinement factor: the result is on a grid of 1/`upsample` pixel (default 100,
        i.e. 0.01 px). ``upsample=1`` returns the integer peak of the FFT cross-correlation.
    return_error : bool, optional
        Also return the registration error and the global phase difference.

    Returns
    -------
    shift : (..., 2) float64, same namespace as the inputs
        (y, x) shift in pixels, wrapped into [-H/2, H/2) x [-W/2, W/2) (shifts are periodic).
    error : (...) float64, only if `return_error`
        sqrt(1 - |c_max|^2 / (E_ref E_mov)): 0 for a perfect (shifted, phase-rotated, scaled)
        copy, 1 for orthogonal images; NaN where either image has zero energy.
    phase : (...) float64, only if `return_error`
        Global phase of `moving` relative to `reference` at the peak, angle(sum conj(ref) mov)
        after alignment, in radians.

    Notes
    -----
    The integer peak comes from the full spectrum. In the refinement the Nyquist row/column of
    even axes is left out: its phase at fractional shifts is ambiguous (exp(+i pi s) vs
    exp(-i pi s)), and dropping it makes the refined peak exactly the shift for band-limited
    data whatever convention produced it. |c(t)| <= sum_f |C(f)| with equality at the true
    shift for a pure translation, so the peak is unbiased to within the 1/(2 `upsample`) grid.
    The work precision follows the inputs (complex64 for float32/complex64, else complex128);
    only the shapes (never data) are examined on the host.
    """
    xp = array_module(reference, moving)
    reference, moving = xp.asarray(reference), xp.asarray(moving)
    _check_images("reference", reference)
    _check_images("moving", moving)
    if reference.shape[-2:] != moving.shape[-2:]:
        raise ValueError(f"reference and moving must have the same image shape, got "
                         f"{reference.shape[-2:]} and {moving.shape[-2:]}")
    try:
        batch = np.broadcast_shapes(reference.shape[:-2], moving.shape[:-2])
    except ValueError:
        raise ValueError(f"leading (batch) dimensions of reference {reference.shape[:-2]} and moving "
                         f"{moving.shape[:-2]} do not broadcast") from None
    upsample = float(upsample)
    if not (math.isfinite(upsample) and upsample >= 1):
        raise ValueError(f"upsample must be a finite number >= 1, got {upsample}")

    h, w = reference.shape[-2:]
    cdtype = _complex_dtype(reference.dtype, moving.dtype)
    fft = _fft(xp)
    f_ref = fft.fft2(reference.astype(cdtype, copy=False), axes=(-2, -1))
    f_mov = fft.fft2(moving.astype(cdtype, copy=False), axes=(-2, -1))
    cross = f_mov * xp.conj(f_ref)                                     # (*batch, H, W)

    # 1. integer peak of c = ifft2(C), periodic index -> signed shift
    cc = fft.ifft2(cross, axes=(-2, -1))
    flat = xp.abs(cc).reshape(*batch, h * w)
    k = xp.argmax(flat, axis=-1)
    iy, ix = k // w, k % w
    sy = xp.where(iy > h // 2, iy - h, iy).astype(xp.float64)
    sx = xp.where(ix > w // 2, ix - w, ix).astype(xp.float64)

    fy = np.fft.fftfreq(h)
    fx = np.fft.fftfreq(w)
    if upsample == 1:
        peak = xp.take_along_axis(cc.reshape(*batch, h * w), k[..., None], axis=-1)[..., 0] * (h * w)
        e_ref = xp.sum(xp.abs(f_ref) ** 2, axis=(-2, -1))
        e_mov = xp.sum(xp.abs(f_mov) ** 2, axis=(-2, -1))
    else:
        # 2. matrix-multiply DFT on s0 + d, d = (j - c)/upsample, j = 0..M-1, |d| <= 0.75 px.
        # Centre the spectrum on s0 (C * exp(+2 pi i f.s0)), then c(s0 + d) = Ey C' Ex^T with
        # Ey[j, m] = exp(2 pi i fy_m d_j) shared by the whole batch; Nyquist bins weighted 0.
        half = math.ceil(0.75 * upsample)
        m = 2 * half + 1
        d = (np.arange(m) - half) / upsample
        wy = np.ones(h)
        wx = np.ones(w)
        if h % 2 == 0:
            wy[h // 2] = 0.0
        if w % 2 == 0:
            wx[w // 2] = 0.0
        ey = xp.asarray(wy * np.exp(2j * np.pi * np.outer(d, fy))).astype(cdtype)        # (M, H)
        ext = xp.asarray((wx * np.exp(2j * np.pi * np.outer(d, fx))).T).astype(cdtype)   # (W, M)
        fy_d, fx_d = xp.asarray(fy), xp.asarray(fx)
        centre_y = xp.exp(2j * np.pi * fy_d * sy[..., None]).astype(cdtype)[..., :, None]
        centre_x = xp.exp(2j * np.pi * fx_d * sx[..., None]).astype(cdtype)[..., None, :]
        up = ey @ ((cross * centre_y * centre_x) @ ext)                                 # (*batch, M, M)
        up = up.reshape(*batch, m * m)
        j = xp.argmax(xp.abs(up), axis=-1)
        sy = sy + ((j // m) - half).astype(xp.float64) / upsample
        sx = sx + ((j % m) - half).astype(xp.float64) / upsample
        peak = xp.take_along_axis(up, j[..., None], axis=-1)[..., 0]
        wyx = xp.asarray(np.outer(wy, wx))
        e_ref = xp.sum(xp.abs(f_ref) ** 2 * wyx, axis=(-2, -1))
        e_mov = xp.sum(xp.abs(f_mov) ** 2 * wyx, axis=(-2, -1))

    shift = xp.stack([_wrap(xp, sy, h), _wrap(xp, sx, w)], axis=-1).astype(xp.float64)
    if not return_error:
        return shift
    energy = e_ref.astype(xp.float64) * e_mov.astype(xp.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = xp.abs(peak).astype(xp.float64) ** 2 / energy
        error = xp.sqrt(xp.maximum(1.0 - ratio, 0.0))
    error = xp.where(energy > 0, error, xp.nan)
    phase = xp.angle(peak).astype(xp.float64)
    return shift, error, phase
