"""Test images bundled with scikit-image as normalised real images and as complex fields.

The source of the simulated objects (`objects.object_from_images`) and structured probes
(`probes.from_images`). Only images shipped inside the scikit-image wheel (skimage/data/*) are
used: nothing is downloaded.
"""
from __future__ import annotations

import functools

import numpy as np

from .validation import complex_dtype, integer_pair, value_range

__all__ = ["IMAGES", "bundled_image", "resized_image", "complex_from_images"]

# Test images bundled inside the scikit-image wheel (skimage/data/*); none needs a download.
IMAGES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "checkerboard", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom", "text",
)


@functools.lru_cache(maxsize=None)
def bundled_image(name):
    """Grayscale float64 image in [0, 1] (read-only, cached) from skimage.data."""
    import skimage.color
    import skimage.data
    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.float64)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = skimage.color.rgba2rgb(img)
    if img.ndim == 3:
        img = skimage.color.rgb2gray(img)
    img = _normalise(np.asarray(img, dtype=np.float64))
    img.setflags(write=False)
    return img


def _normalise(img):
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def resized_image(name, image, shape):
    """`image` (a name in IMAGES or a real 2-D array) resized to `shape`, normalised to [0, 1].

    `name` is the argument name used in error messages.
    """
    from skimage.transform import resize
    if isinstance(image, str):
        if image not in IMAGES:
            raise ValueError(f"{name} {image!r} is not a bundled scikit-image test image; choose one of {IMAGES} "
                             "or pass a 2-D array")
        img = bundled_image(image)
    else:
        img = np.asarray(image)
        if img.ndim != 2 or img.size == 0 or np.iscomplexobj(img) or not (
                img.dtype == bool or np.issubdtype(img.dtype, np.number)):
            raise ValueError(f"{name} must be an image name or a real 2-D array, got "
                             f"{getattr(img, 'dtype', type(image))} with shape {np.shape(image)}")
        img = img.astype(np.float64)
        if not np.all(np.isfinite(img)):
            raise ValueError(f"{name} contains NaN or Inf")
    if img.shape != tuple(shape):
        img = resize(img, shape, order=1, mode="reflect", anti_aliasing=True, preserve_range=True)
    return _normalise(img)


def complex_from_images(shape, magnitude, phase, amplitude_range, phase_range, dtype, prefix=""):
    """amplitude * exp(i phase) from two images mapped linearly into their ranges.

    As documented in `objects.object_from_images`; `prefix` is prepended to the argument names in
    error messages. None for an image gives a flat amplitude 1 or a flat phase 0.
    """
    shape = integer_pair("shape", shape, low=1)
    a_lo, a_hi = value_range(prefix + "amplitude_range", amplitude_range, low=0.0)
    p_lo, p_hi = value_range(prefix + "phase_range", phase_range)
    dtype = complex_dtype(dtype)
    amp = np.ones(shape) if magnitude is None else \
        a_lo + (a_hi - a_lo) * resized_image(prefix + "magnitude", magnitude, shape)
    ph = np.zeros(shape) if phase is None else p_lo + (p_hi - p_lo) * resized_image(prefix + "phase", phase, shape)
    return (amp * np.exp(1j * ph)).astype(dtype)
