"""Detector preprocessing: pure functions from patterns (or a `Dataset`) to new patterns (or a new one).

None modifies its argument. Given an array they return a new array; given a `cuptycho.Dataset`, a
new Dataset: `subtract_dark`, `clip_negative`, `crop` (also centring on the beam, `find_centre`),
`bin_patterns`, `mask_pixels` (bad and saturated pixels), `fftshift_patterns` /
`ifftshift_patterns` (detector images stored with the zero frequency at [0, 0]). Operations that
change the detector sampling (`crop`, `bin_patterns`) update the pixel size, the positions in pixels
and the object size, and drop the probe guess and the truth, which no longer match the patterns'
shape (`cuptycho.units.sampling_ratio`).

The array building blocks (`as_float`, `dark_frame`, `crop_window`, `crop_array`, `bin_array`,
`saturated_mask`) are public too: the streaming readers of `cuptycho.io` apply them slab by slab.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import validation
from .dataset import Dataset
from .units import derive_sampling, sampling_ratio


class NegativeCountsWarning(UserWarning):
    """Negative intensities (dark-subtracted noise, detector gap flags) were clipped to zero."""


# --------------------------------------------------------------------------- arrays

def as_float(a) -> np.ndarray:
    """Intensities as floating point: float32 for integer input (exact to 2^24 counts), else as given."""
    a = np.asarray(a)
    return a if a.dtype.kind == "f" else a.astype(np.float32)


def clip_negative(x, *, what: str = "data"):
    """Negative intensities set to 0, with a `NegativeCountsWarning` stating how many (never silent).

    Parameters
    ----------
    x : Dataset or array
        Patterns (any shape). A `Dataset` never holds negative data, so it comes back unchanged.
    what : str
        Name used in the warning.

    Returns
    -------
    Dataset or ndarray
        A copy with ``max(x, 0)`` (floating point), or `x` itself when nothing was negative.
    """
    if isinstance(x, Dataset):
        return x
    a = as_float(x)
    n_negative = int(np.count_nonzero(a < 0))
    if not n_negative:
        return a
    warnings.warn(f"{what}: {n_negative} negative value(s) (min {float(a.min()):g}) clipped to 0",
                  NegativeCountsWarning, stacklevel=2)
    return np.maximum(a, 0, dtype=a.dtype)


def dark_frame(dark, frame_shape) -> np.ndarray:
    """One float dark frame of `frame_shape` from a frame or a (K, Ny, Nx) stack (averaged); ValueError
    for another shape or NaN / Inf values."""
    d = as_float(dark)
    if d.ndim == 3:
        d = d.mean(axis=0, dtype=np.float64).astype(np.float32)
    if d.shape != tuple(frame_shape):
        raise ValueError(f"dark frame(s) must have the patterns' shape {tuple(frame_shape)} (or a stack of "
                         f"them), got {np.shape(dark)}")
    if not np.all(np.isfinite(d)):
        raise ValueError("dark frame(s) contain NaN or Inf")
    return d


def subtract_dark(x, dark, *, clip: bool = True):
    """Patterns minus the (mean) dark frame.

    Parameters
    ----------
    x : Dataset or (..., Ny, Nx) array
        Patterns.
    dark : (Ny, Nx) or (K, Ny, Nx) array
        A dark frame, or K of them (averaged).
    clip : bool
        Clip the negative values the subtraction leaves to 0 with a `NegativeCountsWarning` stating
        the count (default). A Dataset always clips (it cannot hold negative intensities).

    Returns
    -------
    Dataset or ndarray
        New patterns (float32 for integer input).
    """
    a = as_float(x.data if isinstance(x, Dataset) else x)
    out = (a - dark_frame(dark, a.shape[-2:])).astype(a.dtype, copy=False)
    if isinstance(x, Dataset):
        return x.replace(data=clip_negative(out, what="dark-subtracted data"))
    return clip_negative(out, what="dark-subtracted data") if clip else out


def fftshift_patterns(x):
    """Detector images stored with the zero frequency at [0, 0] (tike, some FFT-based codes) -> centred.

    Applies ``numpy.fft.fftshift`` over the last two axes of the patterns (and of the mask), moving
    index [0, 0] to (Ny//2, Nx//2), cuptycho's far-field convention. Inverse: `ifftshift_patterns`.
    """
    if isinstance(x, Dataset):
        mask = None if x.mask is None else np.fft.fftshift(np.asarray(x.mask), axes=(-2, -1))
        return x.replace(data=np.fft.fftshift(x.data, axes=(-2, -1)), mask=mask)
    return np.fft.fftshift(np.asarray(x), axes=(-2, -1))


def ifftshift_patterns(x):
    """Centred patterns -> zero frequency at [0, 0]; inverse of `fftshift_patterns` (also for odd sizes)."""
    if isinstance(x, Dataset):
        mask = None if x.mask is None else np.fft.ifftshift(np.asarray(x.mask), axes=(-2, -1))
        return x.replace(data=np.fft.ifftshift(x.data, axes=(-2, -1)), mask=mask)
    return np.fft.ifftshift(np.asarray(x), axes=(-2, -1))


def find_centre(patterns, method: str = "mass") -> tuple[int, int]:
    """Integer (row, column) of the beam centre in the mean of `patterns` ((..., Ny, Nx) or (Ny, Nx)).

    method "mass": centre of mass of the mean pattern (robust for a donut-shaped beam with a central
    stop); "max": its brightest pixel.
    """
    a = np.asarray(patterns)
    mean = a.reshape(-1, *a.shape[-2:]).mean(axis=0, dtype=np.float64) if a.ndim > 2 else a.astype(np.float64)
    if method == "max":
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(mean)), mean.shape))
    validation.choice("centre method", method, ("mass", "max"))
    mean = np.clip(np.nan_to_num(mean), 0, None)
    total = mean.sum()
    if total <= 0:
        return mean.shape[0] // 2, mean.shape[1] // 2
    yy, xx = np.indices(mean.shape)
    return int(round(float((mean * yy).sum() / total))), int(round(float((mean * xx).sum() / total)))


def crop_window(frame_shape, shape, center=None) -> tuple[int, int]:
    """Top-left (y0, x0) of the `shape` window whose centre pixel (ny//2, nx//2) lands on `center`.

    `center` defaults to the frame's centre (Ny//2, Nx//2), which keeps a centred zero frequency centred.
    """
    (fy, fx), (ny, nx) = frame_shape, validation.integer_pair("crop shape", shape)
    cy, cx = (fy // 2, fx // 2) if center is None else (int(center[0]), int(center[1]))
    y0, x0 = cy - ny // 2, cx - nx // 2
    if y0 < 0 or x0 < 0 or y0 + ny > fy or x0 + nx > fx:
        raise ValueError(f"a {ny} x {nx} crop centred on ({cy}, {cx}) does not fit in {fy} x {fx} patterns "
                         f"(window rows {y0}..{y0 + ny - 1}, columns {x0}..{x0 + nx - 1})")
    return y0, x0


def crop_array(a, window, shape):
    """The `shape` window with top-left `window` (`crop_window`) of the last two axes of `a` (a view)."""
    (y0, x0), (ny, nx) = window, validation.integer_pair("crop shape", shape)
    return np.asarray(a)[..., y0:y0 + ny, x0:x0 + nx]


def bin_array(a, factor, reduce="sum"):
    """Blocks of `factor` pixels over the last two axes reduced by "sum" (as float), "min" or "max";
    edges that do not fill a block are dropped."""
    by, bx = validation.integer_pair("bin factor", factor)
    a = np.asarray(a)
    ny, nx = a.shape[-2] // by, a.shape[-1] // bx
    if ny == 0 or nx == 0:
        raise ValueError(f"cannot bin {a.shape[-2]} x {a.shape[-1]} patterns by {by} x {bx}")
    a = a[..., :ny * by, :nx * bx].reshape(*a.shape[:-2], ny, by, nx, bx)
    if reduce == "sum":
        return a.sum(axis=(-3, -1), dtype=as_float(a[..., :0, 0, :0, 0]).dtype)
    if reduce == "min":
        return a.min(axis=(-3, -1))
    return a.max(axis=(-3, -1))


def saturated_mask(patterns, saturation) -> np.ndarray:
    """Weights (same shape as `patterns`, float32): 0 where a value is >= `saturation`, 1 elsewhere."""
    level = validation.real_number("saturation", saturation)
    return (np.asarray(patterns) < level).astype(np.float32)


# --------------------------------------------------------------------------- datasets

def _resampled(ds: Dataset, data, mask, ratio, detector_factor) -> Dataset:
    """`ds` with new patterns whose sample-plane pixel is `ratio` x the old one (per axis)."""
    ratio = np.asarray(ratio, dtype=np.float64)
    dps = ds.detector_pixel_size
    if dps is not None:
        dps = tuple((np.asarray(dps) * detector_factor).tolist())
    pixel_size = ds.pixel_size
    derived = derive_sampling(ds.geometry_kind, ds.wavelength, ds.detector_distance, dps, ds.focus_distance,
                              data.shape[1:])
    if derived is not None:
        pixel_size = derived[0]
    elif pixel_size is not None:
        pixel_size = tuple((np.asarray(validation.length_pair("pixel_size", pixel_size)) * ratio).tolist())
    if ds.positions_m is not None and pixel_size is not None:
        positions = ds.positions_m / np.asarray(validation.length_pair("pixel_size", pixel_size))
    else:
        positions = ds.positions / ratio
    if np.all(ratio == 1) and data.shape[1:] == ds.patch_shape:
        return ds.replace(data=data, mask=mask)
    return ds.replace(data=data, mask=mask, positions=positions, pixel_size=pixel_size, detector_pixel_size=dps,
                      obj_shape=None, probe=None, truth={})


def crop(x, shape, center=None):
    """Crop every pattern to `shape` around `center`; with ``center="mass"`` or ``"max"`` this centres
    the beam (the centre is found in the mean pattern, `find_centre`).

    Parameters
    ----------
    x : Dataset or (..., Ny, Nx) array
    shape : int or (ny, nx)
        New pattern size.
    center : (row, col), "mass", "max" or None
        Detector pixel that becomes the new (ny//2, nx//2); None: the current centre (Ny//2, Nx//2).

    Returns
    -------
    Dataset or ndarray
        For a Dataset also the mask is cropped and the geometry updated: in the far field the
        sample-plane pixel size grows by Ny/ny (positions in pixels shrink accordingly); in the near
        field it is unchanged. The probe guess and the truth are dropped (module notes).
    """
    a = x.data if isinstance(x, Dataset) else np.asarray(x)
    if isinstance(center, str):
        center = find_centre(a, center)
    window = crop_window(a.shape[-2:], shape, center)
    out = crop_array(a, window, shape)
    if not isinstance(x, Dataset):
        return out.copy()
    mask = None if x.mask is None else crop_array(x.mask, window, shape).copy()
    ratio = sampling_ratio(x.geometry_kind, x.patch_shape, out.shape[1:], 1)
    return _resampled(x, out.copy(), mask, ratio, 1)


def bin_patterns(x, factor):
    """Sum `factor` x `factor` blocks of detector pixels (edges that do not fill a block are dropped).

    Parameters
    ----------
    x : Dataset or (..., Ny, Nx) array
    factor : int or (by, bx)

    Returns
    -------
    Dataset or ndarray
        Binned patterns (float). For a Dataset the mask is binned conservatively (a binned pixel is
        valid only if all its pixels were: the minimum weight), the detector pixel size grows by the
        factor and the geometry is updated: in the far field the sample-plane pixel size is unchanged
        (N p is unchanged, up to dropped edges), in the near field it grows by the factor. The probe
        guess and the truth are dropped.
    """
    a = x.data if isinstance(x, Dataset) else np.asarray(x)
    out = bin_array(as_float(a), factor, "sum")
    if not isinstance(x, Dataset):
        return out
    f = np.asarray(validation.integer_pair("bin factor", factor), dtype=np.float64)
    mask = None if x.mask is None else bin_array(np.asarray(x.mask), factor, "min")
    ratio = sampling_ratio(x.geometry_kind, x.patch_shape, out.shape[1:], f)
    return _resampled(x, out, mask, ratio, f)


def mask_pixels(x, *, bad=None, saturation=None, per_frame: bool = True):
    """Mask bad and saturated detector pixels.

    Parameters
    ----------
    x : Dataset or (J, Ny, Nx) array
    bad : (Ny, Nx) bool array or sequence of (row, col), optional
        Known bad pixels (True = bad).
    saturation : float, optional
        Values >= `saturation` are saturated (their true count is unknown) and masked.
    per_frame : bool
        Mask a saturated pixel only in the frames where it saturates (a (J, Ny, Nx) mask, memory
        J Ny Nx x 4 bytes); False masks it in every frame (an (Ny, Nx) mask).

    Returns
    -------
    Dataset or ndarray
        A Dataset with its mask combined (multiplied) with the new one, or for an array the weights
        (float32, 1 valid, 0 masked): (Ny, Nx) or, with per-frame saturation, (J, Ny, Nx).
    """
    a = x.data if isinstance(x, Dataset) else np.asarray(x)
    frame = a.shape[-2:]
    weights = np.ones(frame, dtype=np.float32)
    if bad is not None:
        b = np.asarray(bad)
        if b.dtype == bool:
            if b.shape != frame:
                raise ValueError(f"bad-pixel mask must have the patterns' shape {frame}, got {b.shape}")
            weights[b] = 0
        else:
            b = b.reshape(-1, 2).astype(int)
            if np.any(b < 0) or np.any(b >= np.asarray(frame)):
                raise ValueError(f"bad pixel coordinates must lie inside {frame}")
            weights[b[:, 0], b[:, 1]] = 0
    if saturation is not None:
        sat = saturated_mask(a, saturation)
        if per_frame and sat.ndim == 3:
            weights = weights * sat
        else:
            weights = weights * sat.reshape(-1, *frame).min(axis=0)
    if not isinstance(x, Dataset):
        return weights
    if x.mask is not None:
        weights = np.asarray(x.mask, dtype=np.float32) * weights
    return x.replace(mask=weights)
