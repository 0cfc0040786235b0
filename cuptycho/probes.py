"""Probe models, used by `simulate` (the true illumination) and `initial` (starting guesses).

Every probe is centred on pixel (Ny//2, Nx//2), the zero frequency of the far-field detector.
Lengths carry their unit in the name: `_px` for pixels, `_m` for metres (`z`, `wavelength` and
`pixel_size` are always metres, as for `cuptycho.forward`).

- `aperture_px`: a disk of ones of a radius in pixels (the aperture starting guess);
- `aperture_m`: a disk of a radius in metres, propagated a distance z (a simulated aperture);
- `focused`: a Gaussian spot, optionally with the phase of a defocused beam;
- `from_images`: a structured (diffuser-like) probe from two images;
- `modes`: orthogonal mixed-state modes with given power fractions (Hermite polynomials times
  a random phase screen), `default_power_fractions`, `checked_power_fractions`;
- `diameter_px`: the equivalent diameter of the bright area.

Every function takes and returns NumPy arrays.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft
import scipy.ndimage as ndi
import scipy.special

from . import geometry
from .images import complex_from_images
from .validation import complex_dtype, complex_image, integer, integer_pair, real_number, seed_sequence

__all__ = ["centred_coordinates", "aperture_px", "aperture_m", "focused", "from_images",
           "default_power_fractions", "checked_power_fractions", "modes", "diameter_px"]

# Ratio of the default geometric power fractions of mixed-state modes: 1 : 0.2 : 0.04 ...
MODE_RATIO = 0.2
# RMS (radians) of the smooth random phase screen that makes higher probe modes generic.
MODE_PHASE_RMS = 0.5


def centred_coordinates(shape, pixel_size=(1.0, 1.0)):
    """y (Ny, 1) and x (1, Nx), zero at pixel (Ny//2, Nx//2), in units of pixel_size."""
    (ny, nx), (dy, dx) = shape, pixel_size
    return (np.arange(ny) - ny // 2)[:, None] * dy, (np.arange(nx) - nx // 2)[None, :] * dx


def _disk(shape, radius, pixel_size=(1.0, 1.0)):
    """1 where y^2 + x^2 <= radius^2 (units of pixel_size), else 0, as complex128; the centre pixel is always in."""
    y, x = centred_coordinates(shape, pixel_size)
    return (y**2 + x**2 <= radius**2).astype(np.complex128)


def aperture_px(shape, radius_px, *, defocus_phase=0.0, dtype=np.complex128):
    """A uniformly lit circular aperture: a disk of ones, `radius_px` pixels, not propagated.

    Pixels with y^2 + x^2 <= radius_px^2 about the centre pixel (always inside), optionally
    times the quadratic phase exp(i defocus_phase (r / radius_px)^2) of a defocused beam
    (`defocus_phase` radians at the rim; positive = diverging). Its power is the number of
    pixels in the disk.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx).
    radius_px : float > 0
        Radius in pixels.
    defocus_phase : float
        Radians at r = radius_px.
    dtype : complex64 or complex128

    Returns
    -------
    probe : (Ny, Nx) dtype
    """
    shape = integer_pair("shape", shape, low=1)
    radius = real_number("radius_px", radius_px, low=0.0, low_open=True)
    defocus_phase = real_number("defocus_phase", defocus_phase)
    dtype = complex_dtype(dtype)
    probe = _disk(shape, radius)
    if defocus_phase:
        y, x = centred_coordinates(shape)
        probe = probe * np.exp(1j * defocus_phase * (y**2 + x**2) / radius**2)
    return probe.astype(dtype)


def aperture_m(shape, *, radius_m, z, wavelength, pixel_size, dtype=np.complex128):
    """A uniformly lit circular aperture of radius `radius_m` metres propagated a distance z (angular spectrum).

    The aperture (transmission 1 inside, 0 outside) is centred on pixel (Ny//2, Nx//2) and
    propagated with H_z of `geometry.transfer_function("angular_spectrum", ...)` and unitary FFTs
    (norm="ortho"), so its power is conserved (no evanescent waves for pixel sizes well above
    lambda/2). The window is periodic: choose z well below the angular-spectrum critical distance
    N dx^2 / lambda, or the diffracted wave wraps around.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    radius_m : float
        Aperture radius in metres (> 0); below one pixel the aperture is the single centre pixel.
    z : float
        Propagation distance in metres from the aperture to the sample (0 = the bare aperture;
        negative propagates backwards).
    wavelength : float
        Metres.
    pixel_size : float or (2,) float
        Sample-plane pixel size (dy, dx) in metres.
    dtype : complex64 or complex128

    Returns
    -------
    probe : (Ny, Nx) dtype
    """
    shape = integer_pair("shape", shape, low=1)
    radius = real_number("radius_m", radius_m, low=0.0, low_open=True)
    z = real_number("z", z)
    wavelength = real_number("wavelength", wavelength, low=0.0, low_open=True)
    pix = geometry.pixel_pair(pixel_size)
    dtype = complex_dtype(dtype)
    aperture = _disk(shape, radius, pix)
    h, _ = geometry.transfer_function("angular_spectrum", shape, z, wavelength, pix)
    probe = sfft.ifft2(sfft.fft2(aperture, norm="ortho") * h, norm="ortho")
    return probe.astype(dtype)


def focused(shape, *, width_px, defocus_m=0.0, wavelength=None, pixel_size=None, dtype=np.complex128):
    """A focused Gaussian spot, optionally with the quadratic phase of a defocused beam.

    Amplitude exp(-2 ln2 r^2 / width_px^2): the intensity has a full width at half maximum of
    `width_px` pixels; the peak amplitude is 1, at pixel (Ny//2, Nx//2).

    Defocus adds the paraxial wavefront of a beam `defocus_m` metres downstream of its focus,
    phase(r) = pi r^2 / (wavelength * defocus_m) with r in metres (positive = diverging; negative =
    converging, upstream of the focus; 0 = flat phase). The intensity width is not changed: it
    is a model probe, not a propagated Gaussian beam. Keep the phase step between neighbouring
    pixels below pi up to the window edge r_max, i.e. 2 r_max dx / (wavelength |defocus_m|) < 1,
    or the phase aliases.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    width_px : float
        Intensity FWHM in pixels (> 0).
    defocus_m : float
        Metres; non-zero needs `wavelength` and `pixel_size`.
    wavelength : float, optional
        Metres.
    pixel_size : float or (2,) float, optional
        Sample-plane pixel size (dy, dx) in metres.
    dtype : complex64 or complex128

    Returns
    -------
    probe : (Ny, Nx) dtype
    """
    shape = integer_pair("shape", shape, low=1)
    width = real_number("width_px", width_px, low=0.0, low_open=True)
    defocus = real_number("defocus_m", defocus_m)
    dtype = complex_dtype(dtype)
    y, x = centred_coordinates(shape)
    probe = np.exp(-2.0 * np.log(2.0) * (y**2 + x**2) / width**2).astype(np.complex128)
    if defocus != 0.0:
        if wavelength is None or pixel_size is None:
            raise ValueError("defocus_m (metres) needs wavelength and pixel_size")
        wavelength = real_number("wavelength", wavelength, low=0.0, low_open=True)
        ym, xm = centred_coordinates(shape, geometry.pixel_pair(pixel_size))
        probe = probe * np.exp(1j * np.pi * (ym**2 + xm**2) / (wavelength * defocus))
    return probe.astype(dtype)


def from_images(shape, magnitude="gravel", phase="grass", *, amplitude_range=(0.0, 1.0),
                phase_range=(-np.pi, np.pi), envelope_px=None, dtype=np.complex128):
    """A structured (diffuser-like) probe from two images, as `objects.object_from_images`.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    magnitude, phase : str, (h, w) real array or None
        As in `objects.object_from_images`.
    amplitude_range, phase_range : (2,) float
        As in `objects.object_from_images`.
    envelope_px : float, optional
        If given, the result is multiplied by a Gaussian amplitude whose intensity FWHM is
        `envelope_px` pixels, centred on (Ny//2, Nx//2) (a localised far-field probe); None fills
        the window (a near-field probe).
    dtype : complex64 or complex128

    Returns
    -------
    probe : (Ny, Nx) dtype
    """
    probe = complex_from_images(shape, magnitude, phase, amplitude_range, phase_range, np.complex128)
    if envelope_px is not None:
        width = real_number("envelope_px", envelope_px, low=0.0, low_open=True)
        probe = probe * focused(probe.shape, width_px=width)
    return probe.astype(complex_dtype(dtype))


# --------------------------------------------------------------------------- mixed-state modes

def default_power_fractions(n_modes):
    """Geometric fractions proportional to 0.2**k, summing to 1: (0.806, 0.161, 0.032) for 3 modes."""
    w = MODE_RATIO ** np.arange(integer("n_modes", n_modes), dtype=np.float64)
    return w / w.sum()


def checked_power_fractions(value, n_modes):
    """Checked (n_modes,) float64 power fractions; None gives `default_power_fractions(n_modes)`.

    Non-negative, first entry positive, summing to 1 within 1e-6 (else ValueError). Used for
    probe modes and for object modes (`objects.object_modes`).
    """
    if value is None:
        return default_power_fractions(n_modes)
    p = np.asarray(value, dtype=np.float64).reshape(-1)
    if p.size != n_modes:
        raise ValueError(f"power_fractions must have one entry per mode ({n_modes}), got {p.size}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p[0] <= 0:
        raise ValueError(f"power_fractions must be finite and >= 0 with a positive first entry, got {p.tolist()}")
    if abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"power_fractions must sum to 1 (within 1e-6), got sum {p.sum():.9g}")
    return p


def _hermite_orders(n):
    """The first n (a, b) degree pairs after (0, 0), ordered by total degree: (0,1), (1,0), (0,2), (1,1), ..."""
    orders, degree = [], 1
    while len(orders) < n:
        orders += [(a, degree - a) for a in range(degree + 1)]
        degree += 1
    return np.array(orders[:n], dtype=np.int64).reshape(n, 2)


def modes(probe, n_modes, *, power_fractions=None, seed=0):
    """Mutually orthogonal probe modes for a partially coherent (mixed-state) illumination.

    Mode 0 has the shape of `probe`. Candidates for the higher modes are `probe` times
    Hermite polynomials H_a(yh) H_b(xh) (degrees (0,1), (1,0), (0,2), (1,1), (2,0), ... with
    yh, xh the coordinates about the probe's intensity centroid over sqrt(2) times its RMS width,
    so for a Gaussian probe they are the Hermite-Gauss modes), each times a smooth random phase
    screen (RMS 0.5 rad, correlation length the RMS width; from `seed`) so the modes are not
    special to one symmetry. The candidates are orthonormalised together (QR, i.e. Gram-Schmidt on
    the flattened modes, in float64), and mode k is scaled to carry power_fractions[k] of the total
    power sum |probe|^2; the modes sum to that total power.

    Parameters
    ----------
    probe : (Ny, Nx) complex
    n_modes : int >= 1
    power_fractions : (n_modes,) float, optional
        Non-negative, first entry positive, summing to 1 within 1e-6 (else ValueError).
        Default `default_power_fractions(n_modes)` (proportional to 0.2**k).
    seed : int or numpy SeedSequence

    Returns
    -------
    modes : (n_modes, Ny, Nx) complex, the dtype of probe
    """
    probe = complex_image("probe", probe)
    n_modes = integer("n_modes", n_modes)
    fractions = checked_power_fractions(power_fractions, n_modes)
    p = probe.astype(np.complex128)
    intensity = np.abs(p) ** 2
    total = float(intensity.sum())
    if not np.isfinite(total) or total <= 0:
        raise ValueError("probe must have finite, non-zero power")
    if n_modes > p.size:
        raise ValueError(f"n_modes = {n_modes} exceeds the number of probe pixels {p.size}")
    rng = np.random.default_rng(seed_sequence(seed))
    y, x = centred_coordinates(p.shape)
    cy, cx = (intensity * y).sum() / total, (intensity * x).sum() / total
    sy = np.sqrt(max((intensity * (y - cy) ** 2).sum() / total, 0.25))
    sx = np.sqrt(max((intensity * (x - cx) ** 2).sum() / total, 0.25))
    orders = _hermite_orders(n_modes - 1)
    yh, xh = (y - cy) / (np.sqrt(2.0) * sy), (x - cx) / (np.sqrt(2.0) * sx)
    poly = (scipy.special.eval_hermite(orders[:, 0, None, None], yh[None])
            * scipy.special.eval_hermite(orders[:, 1, None, None], xh[None]))
    screen = ndi.gaussian_filter(rng.standard_normal((n_modes - 1, *p.shape)), sigma=(0, sy, sx), mode="wrap")
    rms = np.sqrt(np.mean(screen**2, axis=(-2, -1), keepdims=True))
    screen = screen * (MODE_PHASE_RMS / np.where(rms > 0, rms, 1.0))
    candidates = np.concatenate([p[None], p * poly * np.exp(1j * screen)], axis=0)
    q, r = np.linalg.qr(candidates.reshape(n_modes, -1).T)
    diag = np.diagonal(r)
    if np.any(np.abs(diag) <= 1e-10 * np.abs(diag[0])):
        raise ValueError(f"could not build {n_modes} independent modes from this probe (too few non-zero pixels)")
    q = q * (diag / np.abs(diag))   # fix the phases so mode 0 is probe / |probe| exactly
    out = q.T.reshape(n_modes, *p.shape) * np.sqrt(fractions * total)[:, None, None]
    return out.astype(probe.dtype)


def diameter_px(probe, *, threshold=0.5):
    """Equivalent diameter in pixels of the probe's bright area.

    2 sqrt(A / pi), where A is the number of pixels whose intensity |probe|^2 (summed over
    modes) is >= threshold * its maximum. With the default 0.5 this is the intensity FWHM of a
    round Gaussian spot and about the diameter of an aperture.

    Parameters
    ----------
    probe : (Ny, Nx) or (K, Ny, Nx) complex
    threshold : float in (0, 1]

    Returns
    -------
    diameter : float
    """
    probe = np.asarray(probe)
    if probe.ndim not in (2, 3) or probe.size == 0:
        raise ValueError(f"probe must have shape (Ny, Nx) or (K, Ny, Nx), got {probe.shape}")
    threshold = real_number("threshold", threshold, low=0.0, high=1.0, low_open=True)
    intensity = (np.abs(probe) ** 2).reshape(-1, *probe.shape[-2:]).sum(axis=0)
    peak = intensity.max()
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError("probe must have finite, non-zero intensity")
    return float(2.0 * np.sqrt(np.count_nonzero(intensity >= threshold * peak) / np.pi))
