"""Per-epoch projections of the object and probe, each a pure function returning new arrays.

The ptychographic model has exact ambiguities: a unitary mix of probe modes, a common
translation of probe and object, a global phase or a scale moved from the object to the probe
all leave the data unchanged. The functions here fix these gauges (`orthogonalize_modes`,
`recentre_probe`, `zero_probe_phase`, `renormalise`) without changing any modelled intensity,
and apply the physical bounds `clamp_phase` / `clamp_amplitude` and the probe's support
`apply_probe_support` (which do change it).

Array-generic: NumPy in, NumPy out; CuPy in, CuPy out. Nothing is copied to the host and
nothing synchronises the device, except the small checks of `renormalise`'s weights.
Shapes follow MATH.md: obj (Mo, H, W) or (H, W), probe (K, Ny, Nx) or (Ny, Nx), complex64 or
complex128; results keep the shapes and dtypes given.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import array_module
from .registration import fourier_shift
from .validation import COMPLEX_DTYPES

__all__ = ["orthogonalize_modes", "recentre_probe", "zero_probe_phase", "renormalise",
           "clamp_phase", "clamp_amplitude", "probe_window", "apply_probe_support"]


def _field(name, arr):
    """`arr` as an array of its namespace, complex64/128 with 2 or 3 non-empty dimensions."""
    xp = array_module(arr)
    arr = xp.asarray(arr)
    if arr.dtype not in COMPLEX_DTYPES:
        raise ValueError(f"{name} must be complex64 or complex128, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise ValueError(f"{name} must have shape (modes, Ny, Nx) or (Ny, Nx), got {arr.shape}")
    return xp, arr


def _stack(arr):
    return arr if arr.ndim == 3 else arr[None]


def _real(dtype):
    return np.finfo(dtype).dtype


def _bounds(low, high, *, floor=None, name="bounds"):
    """(low, high) as floats with None = unbounded; ValueError for NaN, low > high or low < floor."""
    lo = -math.inf if low is None else low
    hi = math.inf if high is None else high
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be real numbers or None, got low={low!r}, high={high!r}") from None
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"{name} need low <= high, got low={low!r}, high={high!r}")
    if floor is not None and lo < floor:
        raise ValueError(f"{name}: low must be >= {floor}, got {low!r}")
    return lo, hi


# --------------------------------------------------------------------------- probe modes

def orthogonalize_modes(probe):
    """Mutually orthogonal probe modes, sorted by power (descending), spanning the same field.

    With A the (K, Ny*Nx) matrix of the modes and A = U S V^H its thin SVD, the new modes are
    the rows of S V^H = U^H A. Because A^H A is unchanged, the incoherent intensity
    sum_k |P_k(r)|^2 is preserved at every pixel (and with it the total power and every
    modelled intensity of a mixed-state model); mode k carries power S_k^2. The phase of each
    new mode k is chosen so that <P_k(old), P_k(new)> is real and >= 0: modes that are already
    orthogonal and sorted come back unchanged (the function is idempotent), and repeated calls
    during a reconstruction do not flip mode phases (which would upset the optimiser's moments).

    Parameters
    ----------
    probe : (K, Ny, Nx) or (Ny, Nx) complex64 / complex128, numpy or cupy

    Returns
    -------
    probe : same shape, dtype and namespace
        Computed in complex128 and cast back.
    """
    xp, probe = _field("probe", probe)
    p = _stack(probe)
    a = p.reshape(p.shape[0], -1).astype(xp.complex128)
    u, s, vh = xp.linalg.svd(a, full_matrices=False)
    # <A_k, (S V^H)_k> = S_k^2 conj(U_kk): multiplying mode k by U_kk / |U_kk| makes it real, >= 0
    d = xp.diagonal(u)
    mag = xp.abs(d)
    phase = xp.where(mag > 0, d / xp.where(mag > 0, mag, 1.0), 1.0)
    modes = (phase * s)[:, None] * vh
    return modes.reshape(probe.shape).astype(probe.dtype)


def _centre_of_mass(intensity):
    """(y, x) centre of mass of a (Ny, Nx) real image (float64, namespace of the image)."""
    xp = array_module(intensity)
    total = intensity.sum()
    y = xp.arange(intensity.shape[0], dtype=xp.float64)
    x = xp.arange(intensity.shape[1], dtype=xp.float64)
    safe = xp.where(total > 0, total, 1.0)
    return xp.stack([(intensity.sum(axis=1) * y).sum() / safe, (intensity.sum(axis=0) * x).sum() / safe]), total


def recentre_probe(probe, obj):
    """Shift the probe so its intensity centre of mass is at (Ny//2, Nx//2), and the object with it.

    s = (Ny//2, Nx//2) - centre of mass of sum_k |P_k|^2 (subpixel). Every probe mode becomes
    P'(r) = P(r - s) and every object mode O'(u) = O(u - s) (`registration.fourier_shift`), so
    each exit wave is only translated, P'(r) O'(r + x_j) = psi_j(r - s), and a far-field
    intensity is unchanged (a translation is a phase ramp in the detector plane). Positions are
    not touched. A probe of zero power gets s = 0.

    Caveats: both shifts are periodic. The object's content wraps around its edges (keep its
    border outside every scanned patch, or accept that the wrapped strip is wrong), and the
    probe's content wraps around the window (harmless for a probe that is ~0 near its edges).
    The identity is exact for band-limited (smooth) fields at integer positions; elsewhere it
    holds up to the error of the bilinear sampling and of the product of two subpixel-shifted
    fields. Near-field intensities move by s (they are real-space images), so this projection
    is meant for the far field.

    Parameters
    ----------
    probe : (K, Ny, Nx) or (Ny, Nx) complex
    obj : (Mo, H, W) or (H, W) complex, same namespace

    Returns
    -------
    probe, obj : the shapes and dtypes given
    shift : (2,) float64 array of the namespace
        The applied (y, x) shift s in pixels.
    """
    xp, probe = _field("probe", probe)
    _, obj = _field("obj", obj)
    p = _stack(probe)
    intensity = (p.real.astype(xp.float64) ** 2 + p.imag.astype(xp.float64) ** 2).sum(axis=0)
    com, total = _centre_of_mass(intensity)
    target = xp.asarray([p.shape[-2] // 2, p.shape[-1] // 2], dtype=xp.float64)
    shift = xp.where(total > 0, target - com, 0.0)
    return fourier_shift(probe, shift), fourier_shift(obj, shift), shift


def zero_probe_phase(probe, obj):
    """Remove the mean phase of the dominant probe mode, moving it to the object.

    phi = angle(sum_r P_d(r) |P_d(r)|) for the mode d of largest power (an intensity-weighted
    mean phase); probe *= exp(-i phi) and obj *= exp(+i phi), so every exit wave P_k O_m is
    unchanged.

    Parameters
    ----------
    probe : (K, Ny, Nx) or (Ny, Nx) complex
    obj : (Mo, H, W) or (H, W) complex, same namespace

    Returns
    -------
    probe, obj : the shapes and dtypes given
    """
    xp, probe = _field("probe", probe)
    _, obj = _field("obj", obj)
    p = _stack(probe).astype(xp.complex128)
    mag = xp.abs(p)
    weighted = (p * mag).sum(axis=(-2, -1))                # (K,)
    power = (mag ** 2).sum(axis=(-2, -1))
    c = xp.take(weighted, xp.argmax(power))
    mag_c = xp.abs(c)
    rot = xp.where(mag_c > 0, c / xp.where(mag_c > 0, mag_c, 1.0), 1.0)   # exp(i phi)
    return ((probe * xp.conj(rot).astype(probe.dtype)).astype(probe.dtype),
            (obj * rot.astype(obj.dtype)).astype(obj.dtype))


def renormalise(obj, probe, weights=None):
    """Scale the object to a weighted mean amplitude of 1, moving the scale to the probe.

    c = sum_r w(r) A(r) / sum_r w(r) with A = sqrt(sum_m |O_m|^2) (|O| for one object mode);
    obj /= c, probe *= c, so every exit wave P_k O_m is unchanged. c = 1 (nothing changes) when
    the weighted mean is 0.

    Parameters
    ----------
    obj : (Mo, H, W) or (H, W) complex
    probe : (K, Ny, Nx) or (Ny, Nx) complex, same namespace
    weights : (H, W) real >= 0, optional
        E.g. the illumination sum_j |P(r - x_j)|^2, so unscanned regions do not count; default
        uniform. Checked for shape, finiteness, negativity and a positive sum (small device
        reductions read on the host).

    Returns
    -------
    obj, probe : the shapes and dtypes given
    c : 0-d float64 array of the namespace (``float(c)`` gives the number)
    """
    xp, obj = _field("obj", obj)
    _, probe = _field("probe", probe)
    o = _stack(obj)
    amp = xp.sqrt((o.real.astype(xp.float64) ** 2 + o.imag.astype(xp.float64) ** 2).sum(axis=0))
    if weights is None:
        c = amp.mean()
    else:
        w = xp.asarray(weights)
        if w.dtype == bool or w.dtype.kind not in "fiu":
            raise ValueError(f"weights must be real, got dtype {w.dtype}")
        if w.shape != amp.shape:
            raise ValueError(f"weights must have the object's shape {amp.shape}, got {w.shape}")
        w = w.astype(xp.float64)
        if not bool(xp.all(xp.isfinite(w))) or bool(xp.any(w < 0)):
            raise ValueError("weights must be finite and >= 0")
        wsum = w.sum()
        if not float(wsum) > 0:
            raise ValueError("weights must have a positive sum")
        c = (w * amp).sum() / wsum
    c = xp.where(c > 0, c, 1.0)
    return ((obj / c.astype(_real(obj.dtype))).astype(obj.dtype),
            (probe * c.astype(_real(probe.dtype))).astype(probe.dtype), c)


# --------------------------------------------------------------------------- object bounds

def clamp_phase(obj, low, high):
    """Clip the object's phase to [low, high] radians, keeping the amplitude.

    Phases are taken in (-pi, pi] (`angle`, no unwrapping); pixels already inside the range are
    returned exactly. None means unbounded on that side.

    Parameters
    ----------
    obj : (Mo, H, W) or (H, W) complex
    low, high : float or None, low <= high

    Returns
    -------
    obj : the shape and dtype given
    """
    xp, obj = _field("obj", obj)
    lo, hi = _bounds(low, high, name="phase bounds")
    phase = xp.angle(obj)
    clipped = xp.clip(phase, lo, hi)
    return (obj * xp.exp(1j * (clipped - phase)).astype(obj.dtype)).astype(obj.dtype)


def clamp_amplitude(obj, low, high):
    """Clip the object's amplitude |O| to [low, high], keeping the phase.

    Pixels already inside the range are returned exactly; a zero pixel raised to `low` gets
    phase 0. None means unbounded on that side (e.g. ``clamp_amplitude(obj, 0, 1)`` forbids gain).

    Parameters
    ----------
    obj : (Mo, H, W) or (H, W) complex
    low, high : float or None, 0 <= low <= high

    Returns
    -------
    obj : the shape and dtype given
    """
    xp, obj = _field("obj", obj)
    lo, hi = _bounds(low, high, floor=0.0, name="amplitude bounds")
    amp = xp.abs(obj)
    clipped = xp.clip(amp, lo, hi).astype(amp.dtype)
    nonzero = amp > 0
    scale = xp.where(nonzero, clipped / xp.where(nonzero, amp, 1), 0).astype(amp.dtype)
    return (obj * scale + xp.where(nonzero, 0, clipped).astype(amp.dtype)).astype(obj.dtype)


# --------------------------------------------------------------------------- probe support

def probe_window(shape, radius, width=0.1, dtype=np.float64):
    """A soft support for the probe window (Ny, Nx): 1 within `radius`, then exp(-((r - radius) / width)^2),
    r the distance from the window's centre in units of half its size per axis (1 at the middle of
    an edge, sqrt(2) in a corner). radius 0.9 keeps a disc just inside the edges and damps the corners."""
    if not (radius > 0 and width > 0):
        raise ValueError(f"probe support: radius and width must be positive, got {radius!r}, {width!r}")
    ny, nx = shape
    y = (np.arange(ny) - (ny - 1) / 2) / (ny / 2)
    x = (np.arange(nx) - (nx - 1) / 2) / (nx / 2)
    r = np.hypot(y[:, None], x[None, :])
    return np.where(r <= radius, 1.0, np.exp(-(((r - radius) / width) ** 2))).astype(dtype)


def apply_probe_support(probe, radius, width=0.1):
    """The probe multiplied by `probe_window`: power that drifts into the window's corners (where a real
    illumination has none, but the data barely constrain it) is damped each time this runs."""
    xp, probe = _field("probe", probe)
    window = xp.asarray(probe_window(probe.shape[-2:], radius, width, _real(probe.dtype)))
    return probe * window
