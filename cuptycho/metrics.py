"""Reconstruction quality metrics: object correlation, SSIM, FRC, phase ramps, positions, z.

All functions work on the host in float64/complex128. CuPy arrays are accepted and copied to
the host (``.get()``). Inputs are checked: mismatched shapes, NaN/Inf and unusable masks raise
ValueError naming the argument.

Conventions shared with `registration`: images are (H, W) arrays indexed (y, x); a shift
``s`` means ``estimate(r) ~ truth(r - s)`` (the estimate is the truth translated by +s), and
``registration.fourier_shift(estimate, -s)`` puts the estimate back onto the truth grid.
Masks are boolean or non-negative real weights of the image shape; metrics are computed over
(weighted by) the mask.
"""
from __future__ import annotations

import numpy as np

from . import reference, registration

__all__ = [
    "align", "correlation", "object_correlation", "cpcc", "ssim", "fourier_ring_correlation", "frc_resolution",
    "remove_phase_ramp", "position_errors", "z_error", "illuminated",
]


# ------------------------------------------------------------------ input checks

def _host(name, a, *, ndim=None):
    """`a` as a NumPy array (CuPy arrays are copied with .get()); finite, numeric, of `ndim` dims."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        a = a.get()
    a = np.asarray(a)
    if a.dtype.kind not in "biufc":
        raise ValueError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0] if a.ndim else ()
        raise ValueError(f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})")
    return a


def _pair(estimate, truth, names=("estimate", "truth")):
    """Two finite 2-D images of the same shape, as complex128 or float64 host arrays."""
    a = _host(names[0], estimate, ndim=2)
    b = _host(names[1], truth, ndim=2)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty")
    kind = np.complex128 if (np.iscomplexobj(a) or np.iscomplexobj(b)) else np.float64
    return a.astype(kind, copy=False), b.astype(kind, copy=False)


def _weights(mask, shape):
    """Mask as float64 weights of `shape` (all ones when None); non-negative with a positive sum."""
    if mask is None:
        return np.ones(shape)
    w = _host("mask", mask)
    if w.shape != tuple(shape):
        raise ValueError(f"mask must have the image shape {tuple(shape)}, got {w.shape}")
    if np.iscomplexobj(w):
        raise ValueError("mask must be boolean or real, got a complex array")
    w = w.astype(np.float64)
    if np.any(w < 0):
        raise ValueError("mask weights must be non-negative")
    if not np.any(w > 0):
        raise ValueError("mask selects no pixel (all weights are zero)")
    return w


def _energy(name, a, w):
    e = float(np.sum(w * np.abs(a) ** 2))
    if e <= 0:
        raise ValueError(f"{name} has zero energy within the mask; the metric is undefined")
    return e


# ------------------------------------------------------------------ where to measure

def illuminated(probe, positions, obj_shape, fraction=0.1):
    """Object pixels (bool (H, W)) the probe, all modes summed, lights to at least `fraction` of the
    maximum power accumulated over the scan (subpixel positions, the model's bilinear sampling):
    the region where a reconstruction can be compared with anything."""
    probe = _host("probe", probe)
    power = np.sum(np.abs(probe.reshape(-1, *probe.shape[-2:])) ** 2, axis=0).astype(np.complex128)
    pos = np.ascontiguousarray(_host("positions", positions, ndim=2), dtype=np.float64)
    # in chunks of positions: the patches of a whole scan (10k x 256^2 complex128 = 10 GB) never exist at once
    step = max(1, ILLUMINATED_CHUNK_BYTES // power.nbytes)
    lit = np.zeros(tuple(obj_shape)[-2:])
    for start in range(0, len(pos), step):
        chunk = pos[start:start + step]
        patches = np.ascontiguousarray(np.broadcast_to(power, (len(chunk), 1, *power.shape)))
        lit += reference.patch_adj(patches, chunk, (1, *tuple(obj_shape)[-2:])).real[0]
    return lit >= fraction * lit.max()


ILLUMINATED_CHUNK_BYTES = 64 * 2 ** 20         # patches per chunk of `illuminated`


# ------------------------------------------------------------------ correlation and alignment

def _window(w, soften=4.0):
    """The mask's weights tapered inside by a Gaussian of `soften` pixels: a smooth edge adds little
    correlation of its own (a hard-edged window pulls the peak towards zero shift)."""
    from scipy.ndimage import gaussian_filter

    inside = (w > 0).astype(np.float64)
    return w * np.clip(2 * gaussian_filter(inside, soften, mode="constant") - 1, 0, None)


def _register(estimate, truth, w, shift, upsample):
    """Shift of `estimate` relative to `truth` ((2,) float64) and the estimate moved back by it.

    Registered on the mask's region (tapered, means over it removed), or on the whole images (means
    removed) without a mask. A reconstruction's unlit region holds whatever the start or the
    optimiser left there (a flat 1, noise, a phase ramp): registered on the whole image, that
    region decided the peak and the metric locked onto it (a correlation of 0.04-0.1 reported for an
    object that matches to 0.99 where it is lit)."""
    if not shift:
        return np.zeros(2), estimate
    if np.all(w == w.flat[0]):
        s = registration.register_shift(truth - truth.mean(), estimate - estimate.mean(), upsample=upsample)
    else:
        win = _window(w)
        if not np.any(win > 0):                      # a region too thin to taper: its hard edge, then
            win = w
        mean = lambda a: np.sum(win * a) / np.sum(win)                           # noqa: E731
        target, s = win * (truth - mean(truth)), np.zeros(2)
        for _ in range(4):      # the window pulls a peak towards zero by a fraction of the shift left
            moved = registration.fourier_shift(estimate, -s)
            s = s + registration.register_shift(target, win * (moved - mean(moved)), upsample=upsample)
    return s, registration.fourier_shift(estimate, -s)


def align(estimate, truth, *, mask=None, shift=True, upsample=100):
    """Estimate translated and phase-rotated onto the truth, for display next to it.

    Parameters
    ----------
    estimate : (H, W) complex or real
        Reconstructed object.
    truth : (H, W) complex or real
        Ground truth on the same pixel grid.
    mask : (H, W) bool or float, optional
        Region (weights) used to register and to fit the phase; None = whole image (see
        `correlation`).
    shift : bool, optional
        Compensate a subpixel translation (`registration.register_shift`, then
        `registration.fourier_shift` by the opposite shift; periodic boundary). Default True.
    upsample : float, optional
        Registration precision 1/`upsample` pixel (default 100).

    Returns
    -------
    aligned : (H, W) complex128 (float64 for two real inputs)
        ``fourier_shift(estimate, -s) * exp(-i phi)`` with phi = angle(sum w conj(t) e_shifted),
        the least-squares global phase, so `aligned` matches `truth` up to a real scale.
        Real inputs get no phase factor.
    shift : (2,) float64
        (y, x) shift s of the estimate relative to the truth: ``estimate(r) ~ truth(r - s)``
        (zeros when `shift` is False).
    """
    e, t = _pair(estimate, truth)
    w = _weights(mask, t.shape)
    s, e = _register(e, t, w, shift, upsample)
    if np.iscomplexobj(e):
        e = e * np.exp(-1j * np.angle(np.sum(w * np.conj(t) * e)))
    return e, s


def correlation(estimate, truth, *, mask=None, shift=True, upsample=100):
    """Complex correlation coefficient between an estimate and the truth, after registration.

    gamma = |sum w conj(t) e| / sqrt(sum w |e|^2  sum w |t|^2), with e the estimate moved back
    by its subpixel shift relative to the truth when `shift` is True. A global phase factor
    and a global scale of either image drop out; 1 means identical up to those, ~0 unrelated.
    This is the object error measure of Maiden, Humphry, Sarahan, Kraus & Rodenburg,
    Ultramicroscopy 120, 64 (2012) ("An annealing algorithm to correct positioning errors in
    ptychography"), where it is reported as 1 - gamma or gamma.

    Parameters
    ----------
    estimate : (H, W) complex or real
        Reconstructed object.
    truth : (H, W) complex or real
        Ground truth on the same pixel grid.
    mask : (H, W) bool or float, optional
        Pixels (weights) over which gamma is computed, typically the well-illuminated scan
        area; None = whole image. The registration uses the same region, tapered (a hard edge
        would pull the peak towards zero shift), with the means over it removed.
    shift : bool, optional
        Compensate the estimate's translation first (default True). The translation is
        periodic, so keep the mask away from the image borders when shifts are large.
    upsample : float, optional
        Registration precision 1/`upsample` pixel (default 100).

    Returns
    -------
    gamma : float
        In [0, 1].

    Raises
    ------
    ValueError
        Shapes differ, inputs are not finite, the mask is unusable, or an image has zero
        energy within the mask.
    """
    e, t = _pair(estimate, truth)
    w = _weights(mask, t.shape)
    et = _energy("truth", t, w)
    _energy("estimate", e, w)
    _, e = _register(e, t, w, shift, upsample)
    ee = float(np.sum(w * np.abs(e) ** 2))
    if ee <= 0:
        return 0.0
    gamma = abs(np.sum(w * np.conj(t) * e)) / np.sqrt(ee * et)
    return float(min(max(gamma, 0.0), 1.0))


def cpcc(a, b, *, mask=None):
    """Complex Pearson correlation coefficient (Chang et al., DAP paper, eq. A1).

    cpcc = |sum w (a - <a>) conj(b - <b>)| / sqrt(sum w |a - <a>|^2  sum w |b - <b>|^2),
    with <.> the w-weighted mean over the mask. Invariant to a global complex scale and a
    complex offset of either image; no registration is done.

    Parameters
    ----------
    a : (H, W) complex or real
    b : (H, W) complex or real
    mask : (H, W) bool or float, optional
        Pixels (weights) included; None = whole image.

    Returns
    -------
    cpcc : float
        In [0, 1].

    Raises
    ------
    ValueError
        Shapes differ, inputs not finite, unusable mask, or an image is constant within the mask.
    """
    a, b = _pair(a, b, ("a", "b"))
    w = _weights(mask, a.shape)
    da = a - np.sum(w * a) / np.sum(w)
    db = b - np.sum(w * b) / np.sum(w)
    va = float(np.sum(w * np.abs(da) ** 2))
    vb = float(np.sum(w * np.abs(db) ** 2))
    if va <= 0 or vb <= 0:
        raise ValueError("cpcc is undefined for an image that is constant within the mask")
    r = abs(np.sum(w * da * np.conj(db))) / np.sqrt(va * vb)
    return float(min(r, 1.0))


# ------------------------------------------------------------------ SSIM

def ssim(estimate, truth, *, part="magnitude", mask=None, shift=False, remove_ramp=False,
         data_range=None, upsample=100, **kwargs):
    """Structural similarity of the magnitude or the phase of an estimate against the truth.

    Uses `skimage.metrics.structural_similarity` with an explicit `data_range` taken from the
    truth (max - min within the mask). For ``part="phase"`` the global phase offset of the
    estimate relative to the truth is removed first (and a linear phase ramp too with
    `remove_ramp`, see `remove_phase_ramp`); phases are then compared in (-pi, pi]. No scale
    is fitted for the magnitude: an estimate with a different overall amplitude scores lower.

    Parameters
    ----------
    estimate : (H, W) complex or real
        Reconstructed object; H, W >= 7 (the default 7x7 window).
    truth : (H, W) complex or real
        Ground truth on the same grid.
    part : {"magnitude", "phase"}
        Which real image to compare.
    mask : (H, W) bool or float, optional
        The SSIM map is averaged over pixels with mask > 0 (weighted by the mask); the phase
        offset/ramp and the data range are also taken over it. None = whole image (the mean
        of the SSIM map, as skimage returns it).
    shift : bool, optional
        Register and shift the estimate onto the truth first (as in `align`). Default False.
    remove_ramp : bool, optional
        For the phase: remove a linear ramp in addition to the constant offset.
    data_range : float, optional
        Overrides the range from the truth (needed when the truth's `part` is constant,
        e.g. the phase of a pure-amplitude object).
    upsample : float, optional
        Registration precision when `shift` is True.
    **kwargs
        Passed on to `skimage.metrics.structural_similarity` (e.g. ``win_size``,
        ``gaussian_weights``).

    Returns
    -------
    ssim : float
        Mean SSIM, at most 1 (1 for identical images).
    """
    from skimage.metrics import structural_similarity

    if part not in ("magnitude", "phase"):
        raise ValueError(f"part must be 'magnitude' or 'phase', got {part!r}")
    e, t = _pair(estimate, truth)
    w = _weights(mask, t.shape)
    if shift:
        _, e = _register(e, t, w, True, upsample)
    if part == "magnitude":
        x, y = np.abs(e), np.abs(t)
    else:
        e = e.astype(np.complex128)
        t = t.astype(np.complex128)
        if remove_ramp:
            e = remove_phase_ramp(e, mask=w, reference=t)
        else:
            e = e * np.exp(-1j * np.angle(np.sum(w * np.conj(t) * e)))
        x, y = np.angle(e), np.angle(t)
    inside = w > 0
    if data_range is None:
        data_range = float(np.max(y[inside]) - np.min(y[inside]))
        if data_range <= 0:
            raise ValueError(f"the truth's {part} is constant within the mask; pass data_range explicitly")
    elif not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be positive and finite, got {data_range}")
    if mask is None:
        return float(structural_similarity(x, y, data_range=data_range, **kwargs))
    _, smap = structural_similarity(x, y, data_range=data_range, full=True, **kwargs)
    return float(np.sum(w * smap) / np.sum(w))


# ------------------------------------------------------------------ Fourier ring correlation

def _ring_index(shape, rings):
    """Ring number of every FFT pixel (unshifted grid) and the ring frequencies (cycles/pixel)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    if rings is None:
        rings = min(shape) // 2 + 1
    rings = int(rings)
    if rings < 2:
        raise ValueError(f"rings must be an integer >= 2, got {rings}")
    step = 0.5 / (rings - 1)
    idx = np.rint(np.sqrt(fy**2 + fx**2) / step).astype(np.int64)
    return idx, np.arange(rings) * step


def fourier_ring_correlation(a, b, *, rings=None, return_counts=False):
    """Fourier ring correlation of two images.

    FRC(f) = sum_ring A conj(B) / sqrt(sum_ring |A|^2 sum_ring |B|^2), with A, B the DFTs of
    `a` and `b` and the rings of equal spatial frequency |f| = sqrt(fy^2 + fx^2), fy, fx in
    cycles per pixel along each axis. For two real images the real part is returned (the
    usual signed FRC); if either is complex, the modulus (insensitive to a global phase
    offset). No window is applied: taper the images first if their borders differ.

    Parameters
    ----------
    a : (H, W) real or complex
    b : (H, W) real or complex
    rings : int, optional
        Number of rings n >= 2: ring k collects the pixels with round(|f| / df) == k,
        df = 0.5 / (n - 1), so the rings are centred on 0, df, ..., 0.5. Default
        min(H, W) // 2 + 1 (rings one Fourier pixel wide). Corners beyond 0.5 are left out.
    return_counts : bool, optional
        Also return the number of Fourier pixels per ring (for the half-bit threshold).

    Returns
    -------
    spatial_frequency : (n,) float64
        Ring centres in cycles per pixel, 0 to 0.5.
    frc : (n,) float64
        FRC per ring; NaN for a ring with no pixel or zero energy.
    counts : (n,) int64, only if `return_counts`
    """
    a, b = _pair(a, b, ("a", "b"))
    idx, freq = _ring_index(a.shape, rings)
    n = freq.size
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    keep = idx < n
    lab = idx[keep]
    cross = fa[keep] * np.conj(fb[keep])
    num = np.bincount(lab, weights=cross.real, minlength=n) + 1j * np.bincount(lab, weights=cross.imag, minlength=n)
    pa = np.bincount(lab, weights=np.abs(fa[keep]) ** 2, minlength=n)
    pb = np.bincount(lab, weights=np.abs(fb[keep]) ** 2, minlength=n)
    counts = np.bincount(lab, minlength=n)
    num = num.real if not (np.iscomplexobj(a) or np.iscomplexobj(b)) else np.abs(num)
    den = np.sqrt(pa * pb)
    with np.errstate(divide="ignore", invalid="ignore"):
        frc = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    if return_counts:
        return freq, frc, counts
    return freq, frc


def frc_resolution(freq, frc, threshold="1/7", *, counts=None):
    """First spatial frequency where the FRC falls below a threshold.

    Parameters
    ----------
    freq : (n,) float
        Ring frequencies (cycles per pixel), increasing, as from `fourier_ring_correlation`.
    frc : (n,) float
        FRC values; NaN rings are skipped.
    threshold : {"1/7", "half-bit"} or float
        Fixed 1/7 criterion, the half-bit curve of van Heel & Schatz (J. Struct. Biol. 151, 250
        (2005)), T = (0.2071 + 1.9102/sqrt(n)) / (1.2071 + 0.9102/sqrt(n)) with n Fourier
        pixels per ring, or a constant.
    counts : (n,) int, optional
        Pixels per ring for "half-bit" (``return_counts=True`` of `fourier_ring_correlation`).
        Default: n = max(1, 2 pi f / df), exact enough for square images and rings one Fourier
        pixel wide (the default rings).

    Returns
    -------
    f : float
        Crossing frequency in cycles per pixel, linearly interpolated between the last ring at
        or above the threshold and the first one below it (ring 0, the mean, is never a
        crossing); NaN if the FRC never drops below. Resolution (half-period) in pixels is
        1 / (2 f).
    """
    freq = np.asarray(freq, dtype=np.float64)
    frc = np.asarray(frc, dtype=np.float64)
    if freq.ndim != 1 or freq.shape != frc.shape:
        raise ValueError(f"freq and frc must be 1-D of equal length, got {freq.shape} and {frc.shape}")
    if not np.all(np.isfinite(freq)) or np.any(np.diff(freq) <= 0):
        raise ValueError("freq must be finite and strictly increasing")
    if isinstance(threshold, str):
        if threshold == "1/7":
            thr = np.full(freq.shape, 1.0 / 7.0)
        elif threshold == "half-bit":
            if counts is None:
                df = freq[1] - freq[0] if freq.size > 1 else 1.0
                n = np.maximum(1.0, 2.0 * np.pi * freq / df)
            else:
                n = np.asarray(counts, dtype=np.float64)
                if n.shape != freq.shape or np.any(n < 0):
                    raise ValueError("counts must be non-negative and match freq")
                n = np.maximum(n, 1.0)
            r = 1.0 / np.sqrt(n)
            thr = (0.2071 + 1.9102 * r) / (1.2071 + 0.9102 * r)
        else:
            raise ValueError(f"threshold must be '1/7', 'half-bit' or a number, got {threshold!r}")
    else:
        thr = np.full(freq.shape, float(threshold))
    ok = np.isfinite(frc)
    f, d = freq[ok], (frc - thr)[ok]
    below = np.flatnonzero(d[1:] < 0) + 1
    if below.size == 0:
        return float("nan")
    i = below[0]
    return float(f[i - 1] + (f[i] - f[i - 1]) * d[i - 1] / (d[i - 1] - d[i]))


# ------------------------------------------------------------------ phase ramp

def object_correlation(estimate, truth, *, mask=None):
    """`correlation` of a reconstructed object with the truth after what no data can tell: a global
    translation (registered first, subpixel) and a linear phase ramp (removed relative to the truth over
    `mask`: in the far field it moves freely into a refined probe). The engine's "object_correlation"."""
    aligned, _ = align(estimate, truth, mask=mask)
    aligned = remove_phase_ramp(aligned, mask=mask, reference=truth)
    return correlation(aligned, truth, mask=mask, shift=False)


def remove_phase_ramp(image, *, mask=None, reference=None, return_params=False):
    """Remove a linear phase ramp and a constant phase offset, robustly to phase wrapping.

    The phase of z = image (or image * conj(reference)) is modelled as
    phi(y, x) = offset + slope_y y + slope_x x (y, x array indices). The slopes are the angles
    of the neighbour products sum w[y+1,x] w[y,x] z[y+1,x] conj(z[y,x]) (and likewise along x),
    so a phase that wraps many times across the image is no problem as long as the true slope
    is below pi rad/pixel; the offset is the angle of the weighted sum of the ramp-corrected z.
    Pixels are weighted by the mask and by |z| (each product carries |z| |z'|).

    Parameters
    ----------
    image : (H, W) complex
        Field to correct (a real input is treated as complex).
    mask : (H, W) bool or float, optional
        Weights of the fit; None = all pixels.
    reference : (H, W) complex, optional
        Fit the ramp of image * conj(reference) instead, i.e. the phase of `image` relative to
        `reference`; the returned image then matches `reference` in phase.
    return_params : bool, optional
        Also return (offset, slope_y, slope_x).

    Returns
    -------
    corrected : (H, W) complex128
        image * exp(-i phi).
    params : tuple of float, only if `return_params`
        (offset rad, slope_y rad/pixel, slope_x rad/pixel); slopes in (-pi, pi].
    """
    img = _host("image", image, ndim=2).astype(np.complex128)
    w = _weights(mask, img.shape)
    z = img
    if reference is not None:
        ref = _host("reference", reference, ndim=2)
        if ref.shape != img.shape:
            raise ValueError(f"image and reference must have the same shape, got {img.shape} and {ref.shape}")
        z = img * np.conj(ref)
    zw = w * z
    sy = np.sum(zw[1:, :] * np.conj(zw[:-1, :])) if img.shape[0] > 1 else 0.0
    sx = np.sum(zw[:, 1:] * np.conj(zw[:, :-1])) if img.shape[1] > 1 else 0.0
    slope_y = float(np.angle(sy))
    slope_x = float(np.angle(sx))
    yy = np.arange(img.shape[0])[:, None]
    xx = np.arange(img.shape[1])[None, :]
    ramp = np.exp(-1j * (slope_y * yy + slope_x * xx))
    offset = float(np.angle(np.sum(zw * ramp)))
    corrected = img * ramp * np.exp(-1j * offset)
    if return_params:
        return corrected, (offset, slope_y, slope_x)
    return corrected


# ------------------------------------------------------------------ positions and z

def position_errors(estimate, truth, *, remove_offset=True):
    """Errors of refined scan positions against the true ones.

    Parameters
    ----------
    estimate : (N, 2) float
        Estimated (y, x) positions in pixels.
    truth : (N, 2) float
        True positions, same order.
    remove_offset : bool, optional
        Subtract the global offset (a translation ptychography does not determine) before
        measuring: the per-axis median of estimate - truth, so that a few positions stuck far
        off do not shift every other position's error (a mean would). Default True.

    Returns
    -------
    errors : dict
        ``rms``, ``median``, ``max`` : float, of the Euclidean per-position errors (pixels);
        ``offset`` : (2,) float64, the offset removed (zeros when `remove_offset` is False);
        ``mean_offset`` : (2,) float64, the mean of estimate - truth (y, x), always reported;
        ``errors`` : (N,) float64, the per-position Euclidean errors.
    """
    e = _host("estimate", estimate, ndim=2)
    t = _host("truth", truth, ndim=2)
    if e.shape != t.shape or e.shape[1] != 2:
        raise ValueError(f"estimate and truth must both have shape (N, 2), got {e.shape} and {t.shape}")
    if e.shape[0] == 0:
        raise ValueError("no positions given")
    if np.iscomplexobj(e) or np.iscomplexobj(t):
        raise ValueError("positions must be real")
    d = e.astype(np.float64) - t.astype(np.float64)
    mean_offset = d.mean(axis=0)
    offset = np.median(d, axis=0) if remove_offset else np.zeros(2)
    d = d - offset
    err = np.hypot(d[:, 0], d[:, 1])
    return {
        "rms": float(np.sqrt(np.mean(err**2))),
        "median": float(np.median(err)),
        "max": float(np.max(err)),
        "offset": offset,
        "mean_offset": mean_offset,
        "errors": err,
    }


def z_error(z_estimate, z_truth):
    """Error of a refined propagation distance.

    Parameters
    ----------
    z_estimate : float
        Estimated distance (any unit; metres in cuptycho).
    z_truth : float
        True distance, nonzero for the relative error.

    Returns
    -------
    errors : dict
        ``error`` = z_estimate - z_truth (signed), ``absolute`` = |error|,
        ``relative`` = |error| / |z_truth| (NaN if z_truth is 0).
    """
    ze = _host("z_estimate", z_estimate)
    zt = _host("z_truth", z_truth)
    if ze.size != 1 or zt.size != 1 or np.iscomplexobj(ze) or np.iscomplexobj(zt):
        raise ValueError(f"z_estimate and z_truth must be real scalars, got shapes {ze.shape} and {zt.shape}")
    ze, zt = float(ze.reshape(())), float(zt.reshape(()))
    err = ze - zt
    return {
        "error": err,
        "absolute": abs(err),
        "relative": abs(err) / abs(zt) if zt != 0 else float("nan"),
    }
