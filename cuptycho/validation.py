"""Checks of user input at the public boundary: one clear ValueError naming the argument.

Nothing here repairs input. Each function returns the array in the layout the model uses
(e.g. a 2-D probe becomes (1, Ny, Nx)) and raises on anything it cannot use as given.
"""
from __future__ import annotations

import numpy as np

from . import geometry
from .backend import array_module
from .reference import LOSSES

COMPLEX_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))
BACKENDS = ("auto", "numpy", "cpu", "cuda")


def _asarray(arr):
    """The argument as an array of its own namespace (CuPy arrays stay on their device)."""
    xp = array_module(arr)
    return xp, xp.asarray(arr)


def _finite(name, arr):
    xp = array_module(arr)
    if not bool(xp.all(xp.isfinite(arr))):
        bad = xp.argwhere(~xp.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)})")


def field(name, arr, *, dtype=None):
    """A complex (M, Ny, Nx) stack from a 2-D or 3-D complex64/complex128 array."""
    xp, arr = _asarray(arr)
    if arr.dtype not in COMPLEX_DTYPES:
        raise ValueError(f"{name} must be complex64 or complex128, got dtype {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise ValueError(f"{name} has dtype {arr.dtype} but obj has dtype {dtype}; use one precision for both")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"{name} must have shape (modes, Ny, Nx) or (Ny, Nx), got {arr.shape}")
    _finite(name, arr)
    return xp.ascontiguousarray(arr)


def positions(arr, patch_shape, obj_shape):
    """(J, 2) float64 positions on the host whose bilinear taps all lie inside the object."""
    arr = to_host(arr)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"positions must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"positions must have shape (J, 2) with (y, x) per row, got {arr.shape}")
    arr = arr.astype(np.float64)
    _finite("positions", arr)
    (ny, nx), (h, w) = patch_shape, obj_shape[-2:]
    if h <= ny or w <= nx:
        raise ValueError(f"obj ({h}, {w}) must be larger than the probe ({ny}, {nx}) by at least one pixel "
                         "in each direction for bilinear sampling")
    limit = np.array([h - ny, w - nx], dtype=np.float64)
    outside = np.any((arr < 0) | (arr > limit), axis=1)
    if np.any(outside):
        j = int(np.argmax(outside))
        raise ValueError(f"positions[{j}] = ({arr[j, 0]:g}, {arr[j, 1]:g}) puts the patch outside the object: "
                         f"y must lie in [0, {h - ny}] and x in [0, {w - nx}] for an obj of ({h}, {w}) "
                         f"and a probe of ({ny}, {nx}); {int(outside.sum())} position(s) are outside")
    return arr


def data(arr, n_patterns, patch_shape, real):
    """Measured intensities (J, Ny, Nx), finite and non-negative, cast to the field precision."""
    xp, arr = _asarray(arr)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"data must be real intensities, got dtype {arr.dtype}")
    expected = (n_patterns, *patch_shape)
    if arr.shape != expected:
        raise ValueError(f"data must have shape {expected} (one pattern per position, probe-sized), got {arr.shape}")
    _finite("data", arr)
    n_negative = int(xp.sum(arr < 0))
    if n_negative:
        raise ValueError(f"data has {n_negative} negative value(s) (min {float(arr.min()):g}); "
                         "intensities must be >= 0 (clip or mask them before calling)")
    return xp.ascontiguousarray(arr, dtype=real)


def mask(arr, n_patterns, patch_shape, real):
    """Detector weights, (Ny, Nx) or (J, Ny, Nx), finite and >= 0; None stays None (all ones)."""
    if arr is None:
        return None
    xp, arr = _asarray(arr)
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"mask must be boolean or real weights, got dtype {arr.dtype}")
    if arr.shape not in (tuple(patch_shape), (n_patterns, *patch_shape)):
        raise ValueError(f"mask must have shape {tuple(patch_shape)} or {(n_patterns, *patch_shape)}, got {arr.shape}")
    arr = xp.ascontiguousarray(arr, dtype=real)
    _finite("mask", arr)
    if bool(xp.any(arr < 0)):
        raise ValueError("mask weights must be >= 0 (1 = valid pixel, 0 = ignored)")
    return arr


def to_host(arr):
    """A NumPy array from a NumPy or CuPy array (or anything np.asarray takes)."""
    return arr.get() if array_module(arr) is not np else np.asarray(arr)


def real_number(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """A finite real scalar within the given bounds, as float; else ValueError naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if np.iscomplexobj(value) or not np.isfinite(v):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def integer(name, value, low=1):
    """An integer >= low (bools rejected), as int; else ValueError naming `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def loss_name(value):
    return choice("loss", value, LOSSES)


def propagation(propagator, z, wavelength, pixel_size, padding):
    """Checked propagator keywords as a dict for `reference.make_propagator`."""
    choice("propagator", propagator, geometry.PROPAGATORS)
    pad = np.asarray(padding).reshape(-1)
    if pad.size == 1:
        pad = np.repeat(pad, 2)
    if pad.size != 2 or not np.issubdtype(pad.dtype, np.integer) or np.any(pad < 0):
        raise ValueError(f"padding must be a non-negative integer or a (py, px) pair of them, got {padding!r}")
    if propagator not in geometry.Z_PROPAGATORS:
        if z is not None:
            raise ValueError(f"z is only used by the {geometry.Z_PROPAGATORS} propagators, not by {propagator!r}")
        if np.any(pad):
            raise ValueError(f"padding is only used by the {geometry.Z_PROPAGATORS} propagators")
        return {"padding": (0, 0)}
    for name, value in (("z", z), ("wavelength", wavelength)):
        if value is None:
            raise ValueError(f"the {propagator} propagator needs {name}")
        if not np.isscalar(value) or not np.isfinite(value) or np.iscomplexobj(value):
            raise ValueError(f"{name} must be a finite real scalar, got {value!r}")
    if wavelength <= 0:
        raise ValueError(f"wavelength must be positive, got {wavelength!r}")
    if pixel_size is None:
        raise ValueError(f"the {propagator} propagator needs pixel_size (the sample-plane pixel size)")
    return {"z": float(z), "wavelength": float(wavelength), "pixel_size": geometry.pixel_pair(pixel_size),
            "padding": (int(pad[0]), int(pad[1]))}


def backend(name):
    return choice("backend", name, BACKENDS)
