"""Experimental geometry: pixel sizes, frequency grids and the z-dependent transfer functions.

Everything here is computed in float64 on the host; the propagators cast the result to the
field's precision once. See MATH.md, step 3, for the conventions.
"""
from __future__ import annotations

import numpy as np

PROPAGATORS = ("farfield", "angular_spectrum", "fresnel")
Z_PROPAGATORS = ("angular_spectrum", "fresnel")


def pixel_pair(pixel_size, name: str = "pixel_size") -> tuple[float, float]:
    """(dy, dx) from a scalar or a pair; positive and finite, else ValueError naming `name`."""
    arr = np.asarray(pixel_size, dtype=float).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2:
        raise ValueError(f"{name} must be a scalar or a (dy, dx) pair, got {np.shape(pixel_size)}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be positive and finite, got {pixel_size!r}")
    return float(arr[0]), float(arr[1])


def farfield_pixel_size(wavelength: float, distance: float, detector_pixel_size, shape) -> tuple[float, float]:
    """Sample-plane pixel size lambda z / (N p) per axis for a far-field detector of `shape` pixels."""
    py, px = pixel_pair(detector_pixel_size, "detector_pixel_size")
    ny, nx = shape
    return wavelength * distance / (ny * py), wavelength * distance / (nx * px)


def frequency_squared(shape, pixel_size) -> np.ndarray:
    """fx^2 + fy^2 on the unshifted FFT grid of `shape` (float64, cycles per metre squared)."""
    dy, dx = pixel_pair(pixel_size)
    fy = np.fft.fftfreq(shape[0], dy)
    fx = np.fft.fftfreq(shape[1], dx)
    return fy[:, None] ** 2 + fx[None, :] ** 2


def wavenumber_z(kind: str, shape, wavelength: float, pixel_size) -> tuple[np.ndarray, np.ndarray]:
    """Carrier-free axial wavenumber kz(f) and the propagating-wave mask, both (Ny, Nx) float64/bool.

    The transfer function is H_z = exp(i z kz) where `propagating`, 0 elsewhere, and dH/dz = i kz H.
    angular_spectrum: kz = 2 pi (sqrt(1/lambda^2 - f^2) - 1/lambda), written as
        -2 pi f^2 / (sqrt(1/lambda^2 - f^2) + 1/lambda) so no digits are lost to the carrier
        exp(i 2 pi z / lambda), a global phase that changes no intensity;
    fresnel: kz = -pi lambda f^2 (paraxial), every frequency propagates.
    """
    f2 = frequency_squared(shape, pixel_size)
    inv_l2 = 1.0 / wavelength**2
    if kind == "angular_spectrum":
        propagating = f2 < inv_l2
        root = np.sqrt(np.where(propagating, inv_l2 - f2, 0.0))
        kz = np.where(propagating, -2.0 * np.pi * f2 / (root + 1.0 / wavelength), 0.0)
    elif kind == "fresnel":
        propagating = np.ones(f2.shape, dtype=bool)
        kz = -np.pi * wavelength * f2
    else:
        raise ValueError(f"propagator {kind!r} has no transfer function; choose one of {Z_PROPAGATORS}")
    return kz, propagating


def transfer_function(kind: str, shape, z: float, wavelength: float, pixel_size) -> tuple[np.ndarray, np.ndarray]:
    """(H_z, kz) on the unshifted grid, complex128 / float64, evanescent waves set to zero."""
    kz, propagating = wavenumber_z(kind, shape, wavelength, pixel_size)
    h = np.where(propagating, np.exp(1j * z * kz), 0.0)
    return h, kz


def phase_derivative(kind: str, shape, z: float, wavelength: float, pixel_size, direction=(1.0, 0.0)) -> np.ndarray:
    """d phi / dt of the transfer function's phase phi = z kz(f) along `direction` = (dz, ds): z moving by
    dz t and both pixel sizes by the factor (1 + ds t), float64 (Ny, Nx), 0 where evanescent.

    With (1, 0) this is kz itself (dL/dz). A pixel scale s moves the frequencies to f / s, so
    d phi / ds = z dkz/d(f^2) (-2 f^2): angular_spectrum 2 pi z f^2 / sqrt(1/lambda^2 - f^2), fresnel
    2 pi lambda z f^2. The gradient kernels weight by this array where they would weight by kz, so one
    pass gives the derivative along any direction (the focus distance moves z and the pixel size together).
    """
    kz, propagating = wavenumber_z(kind, shape, wavelength, pixel_size)
    dz, ds = (float(v) for v in direction)
    if ds == 0.0:
        return kz if dz == 1.0 else dz * kz
    f2 = frequency_squared(shape, pixel_size)
    if kind == "angular_spectrum":
        root = np.sqrt(np.where(propagating, 1.0 / wavelength**2 - f2, 1.0))
        dphi_ds = np.where(propagating, 2.0 * np.pi * z * f2 / root, 0.0)
    else:
        dphi_ds = 2.0 * np.pi * wavelength * z * f2
    return dz * kz + ds * dphi_ds


def asm_critical_distance(shape, wavelength: float, pixel_size) -> float:
    """Largest z at which the angular-spectrum transfer function is still sampled without aliasing.

    Its phase steps between neighbouring frequencies stay below pi while z <= N dx^2 / lambda (per axis;
    the smaller axis decides). Beyond it, zero padding of the exit wave enlarges N.
    """
    dy, dx = pixel_pair(pixel_size)
    return min(shape[0] * dy**2, shape[1] * dx**2) / wavelength
