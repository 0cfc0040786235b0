"""Simulated objects: a complex transmission from two images, and incoherent object modes."""
from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from .images import complex_from_images
from .probes import checked_power_fractions
from .validation import complex_image, integer, real_number, seed_sequence

__all__ = ["object_from_images", "object_modes"]


def object_from_images(shape, *, magnitude="camera", phase="astronaut", amplitude_range=(0.5, 1.0),
                       phase_range=(-np.pi / 2, np.pi / 2), dtype=np.complex128):
    """Complex object transmission built from two grayscale images.

    Each image is converted to grayscale (colour and RGBA images), resized to `shape`
    (`skimage.transform.resize`, bilinear, with anti-aliasing; the aspect ratio is not kept),
    normalised to [0, 1] by its own minimum and maximum, and mapped linearly into the range:
    amplitude = lo + (hi - lo) * image, phase likewise. Both ranges are therefore attained exactly
    (unless an image is constant, which maps to lo).

    Parameters
    ----------
    shape : int or (2,) int
        (H, W) of the object.
    magnitude, phase : str, (h, w) real array or None
        A name from `images.IMAGES` (test images bundled in the scikit-image wheel) or any real
        2-D array (resized to `shape`). None gives a flat amplitude of exactly 1 (a pure phase
        object) or a flat phase of exactly 0 (a pure amplitude object).
    amplitude_range : (2,) float
        (low, high) of the amplitude, 0 <= low <= high.
    phase_range : (2,) float
        (low, high) of the phase in radians.
    dtype : complex64 or complex128

    Returns
    -------
    obj : (H, W) dtype
    """
    return complex_from_images(shape, magnitude, phase, amplitude_range, phase_range, dtype)


def object_modes(obj, n_modes, *, shift=1.0, power_fractions=None, seed=0):
    """Incoherent object modes: copies of `obj` displaced by small random sub-pixel shifts.

    A sample that vibrates during the exposure is seen as an incoherent mixture of displaced
    copies. Mode 0 is `obj` itself (unshifted); mode m >= 1 is `obj` shifted by a Gaussian random
    displacement whose RMS length (sqrt(<dy^2 + dx^2>)) is `shift` pixels (cubic spline
    interpolation, edges extended). Mode m is scaled by sqrt(power_fractions[m]), so that
    sum_m |O_m|^2 ~ |obj|^2 (exact without shifts). The modes are not orthogonalised: any
    unitary mix of them describes the same data.

    Parameters
    ----------
    obj : (H, W) complex
    n_modes : int >= 1
    shift : float >= 0
        RMS displacement of the higher modes in pixels.
    power_fractions : (n_modes,) float, optional
        Non-negative, summing to 1 within 1e-6; default `probes.default_power_fractions(n_modes)`.
    seed : int or numpy SeedSequence

    Returns
    -------
    modes : (n_modes, H, W) complex, the dtype of obj
    """
    obj = complex_image("obj", obj)
    n_modes = integer("n_modes", n_modes)
    shift = real_number("shift", shift, low=0.0)
    fractions = checked_power_fractions(power_fractions, n_modes)
    rng = np.random.default_rng(seed_sequence(seed))
    shifts = rng.standard_normal((n_modes, 2)) * (shift / np.sqrt(2.0))
    modes = np.empty((n_modes, *obj.shape), dtype=obj.dtype)
    modes[0] = obj
    for m in range(1, n_modes):   # a handful of modes, each a vectorised whole-image shift
        s = shifts[m]
        modes[m] = (ndi.shift(obj.real.astype(np.float64), s, order=3, mode="nearest")
                    + 1j * ndi.shift(obj.imag.astype(np.float64), s, order=3, mode="nearest"))
    return modes * np.sqrt(fractions)[:, None, None].astype(modes.real.dtype)
