"""A deterministic virtual ptychography experiment.

Small composable pieces, each usable on its own, and `simulate` which assembles them:

- objects from the test images bundled with scikit-image (`object_from_images`, `object_modes`);
- probes (`probe_aperture`, `probe_focused`, `probe_from_images`) and orthogonal mixed-state
  modes (`probe_modes`);
- scan patterns (`raster_scan`, `fermat_spiral`, `concentric_rings`, `step_from_overlap`);
- the geometry (`Geometry`) and the assembled, noisy data set (`simulate` -> `Experiment`,
  `preset`).

Conventions (MATH.md): arrays are C order, batch first; a probe is (K, Ny, Nx), an object
(Mo, H, W); positions are (J, 2) float64, (y, x) of each patch's top-left corner in object
pixels. Scan patterns come centred on 0 and in pixels; `simulate` shifts them into the object.
Probes are centred on pixel (Ny//2, Nx//2), the zero frequency of the far-field detector.

Randomness: every random sub-step draws from its own child of `np.random.SeedSequence(seed)`,
so changing one option (say the read-out noise) never reshuffles another (say the scan jitter).
No function downloads anything: only images shipped inside the scikit-image wheel are used.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft
import scipy.ndimage as ndi
import scipy.special

from . import geometry
from .validation import COMPLEX_DTYPES, choice as _choice, integer as _count, real_number as _real

__all__ = [
    "IMAGES", "PRESETS", "Geometry", "Experiment",
    "object_from_images", "object_modes",
    "probe_aperture", "probe_focused", "probe_from_images", "probe_modes", "probe_diameter",
    "default_power_fractions", "step_from_overlap", "raster_scan", "fermat_spiral", "concentric_rings",
    "simulate", "preset",
]

# Test images bundled inside the scikit-image wheel (skimage/data/*); none needs a download.
IMAGES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "checkerboard", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom", "text",
)
PROBE_KINDS = ("focused", "aperture", "images")
SCAN_KINDS = ("raster", "fermat", "rings")
GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))

# Ratio of the default geometric power fractions of mixed-state modes: 1 : 0.2 : 0.04 ...
_MODE_RATIO = 0.2
# RMS (radians) of the smooth random phase screen that makes higher probe modes generic.
_MODE_PHASE_RMS = 0.5


# --------------------------------------------------------------------------- argument checks

def _shape(name, shape, low=2):
    """(Ny, Nx) from an int or a pair of ints >= low."""
    arr = np.asarray(shape).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.issubdtype(arr.dtype, np.integer) or np.any(arr < low):
        raise ValueError(f"{name} must be an integer or a pair of integers >= {low}, got {shape!r}")
    return int(arr[0]), int(arr[1])


def _range(name, value, *, low=None):
    """(lo, hi) finite with lo <= hi (and lo >= low)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of real numbers, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite (low, high) pair with low <= high, got {value!r}")
    if low is not None and lo < low:
        raise ValueError(f"{name} must lie in [{low}, inf), got {value!r}")
    return lo, hi


def _complex_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in COMPLEX_DTYPES:
        raise ValueError(f"dtype must be complex64 or complex128, got {dt}")
    return dt


def _seed(value):
    if isinstance(value, np.random.SeedSequence):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"seed must be a non-negative integer (or a numpy SeedSequence), got {value!r}")
    return np.random.SeedSequence(int(value))


# --------------------------------------------------------------------------- images and objects

@functools.lru_cache(maxsize=None)
def _bundled_image(name):
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


def _image(name, image, shape):
    """`image` (a name in IMAGES or a real 2-D array) resized to `shape`, normalised to [0, 1]."""
    from skimage.transform import resize
    if isinstance(image, str):
        if image not in IMAGES:
            raise ValueError(f"{name} {image!r} is not a bundled scikit-image test image; choose one of {IMAGES} "
                             "or pass a 2-D array")
        img = _bundled_image(image)
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


def _complex_from_images(shape, magnitude, phase, amplitude_range, phase_range, dtype, prefix=""):
    shape = _shape("shape", shape, low=1)
    a_lo, a_hi = _range(prefix + "amplitude_range", amplitude_range, low=0.0)
    p_lo, p_hi = _range(prefix + "phase_range", phase_range)
    dtype = _complex_dtype(dtype)
    amp = np.ones(shape) if magnitude is None else a_lo + (a_hi - a_lo) * _image(prefix + "magnitude", magnitude, shape)
    ph = np.zeros(shape) if phase is None else p_lo + (p_hi - p_lo) * _image(prefix + "phase", phase, shape)
    return (amp * np.exp(1j * ph)).astype(dtype)


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
        A name from `IMAGES` (test images bundled in the scikit-image wheel) or any real 2-D
        array (resized to `shape`). None gives a flat amplitude of exactly 1 (a pure phase object)
        or a flat phase of exactly 0 (a pure amplitude object).
    amplitude_range : (2,) float
        (low, high) of the amplitude, 0 <= low <= high.
    phase_range : (2,) float
        (low, high) of the phase in radians.
    dtype : complex64 or complex128

    Returns
    -------
    obj : (H, W) dtype
    """
    return _complex_from_images(shape, magnitude, phase, amplitude_range, phase_range, dtype)


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
        Non-negative, summing to 1 within 1e-6; default `default_power_fractions(n_modes)`.
    seed : int or numpy SeedSequence

    Returns
    -------
    modes : (n_modes, H, W) complex, the dtype of obj
    """
    obj = np.asarray(obj)
    if obj.ndim != 2 or not np.iscomplexobj(obj):
        raise ValueError(f"obj must be a complex 2-D array, got dtype {obj.dtype} with shape {obj.shape}")
    n_modes = _count("n_modes", n_modes)
    shift = _real("shift", shift, low=0.0)
    fractions = _power_fractions(power_fractions, n_modes)
    rng = np.random.default_rng(_seed(seed))
    shifts = rng.standard_normal((n_modes, 2)) * (shift / np.sqrt(2.0))
    modes = np.empty((n_modes, *obj.shape), dtype=obj.dtype)
    modes[0] = obj
    for m in range(1, n_modes):   # a handful of modes, each a vectorised whole-image shift
        s = shifts[m]
        modes[m] = (ndi.shift(obj.real.astype(np.float64), s, order=3, mode="nearest")
                    + 1j * ndi.shift(obj.imag.astype(np.float64), s, order=3, mode="nearest"))
    return modes * np.sqrt(fractions)[:, None, None].astype(modes.real.dtype)


# --------------------------------------------------------------------------- probes

def _centred_coordinates(shape, pixel_size=(1.0, 1.0)):
    """y (Ny, 1) and x (1, Nx), zero at pixel (Ny//2, Nx//2), in units of pixel_size."""
    (ny, nx), (dy, dx) = shape, pixel_size
    return (np.arange(ny) - ny // 2)[:, None] * dy, (np.arange(nx) - nx // 2)[None, :] * dx


def probe_aperture(shape, *, radius, z, wavelength, pixel_size, dtype=np.complex128):
    """A uniformly lit circular aperture propagated a distance z by the angular spectrum method.

    The aperture (transmission 1 inside, 0 outside) is centred on pixel (Ny//2, Nx//2) and
    propagated with H_z of `geometry.transfer_function("angular_spectrum", ...)` and unitary FFTs
    (norm="ortho"), so its power is conserved (no evanescent waves for pixel sizes well above
    lambda/2). The window is periodic: choose z well below the angular-spectrum critical distance
    N dx^2 / lambda, or the diffracted wave wraps around.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    radius : float
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
    shape = _shape("shape", shape, low=1)
    radius = _real("radius", radius, low=0.0, low_open=True)
    z = _real("z", z)
    wavelength = _real("wavelength", wavelength, low=0.0, low_open=True)
    pix = geometry.pixel_pair(pixel_size)
    dtype = _complex_dtype(dtype)
    y, x = _centred_coordinates(shape, pix)
    aperture = (y**2 + x**2 <= radius**2).astype(np.complex128)   # the centre pixel is always inside
    h, _ = geometry.transfer_function("angular_spectrum", shape, z, wavelength, pix)
    probe = sfft.ifft2(sfft.fft2(aperture, norm="ortho") * h, norm="ortho")
    return probe.astype(dtype)


def probe_focused(shape, *, width, defocus=0.0, wavelength=None, pixel_size=None, dtype=np.complex128):
    """A focused Gaussian spot, optionally with the quadratic phase of a defocused beam.

    Amplitude exp(-2 ln2 r^2 / width^2): the intensity has a full width at half maximum of
    `width` pixels; the peak amplitude is 1, at pixel (Ny//2, Nx//2).

    Defocus adds the paraxial wavefront of a beam `defocus` metres downstream of its focus,
    phase(r) = pi r^2 / (wavelength * defocus) with r in metres (positive = diverging; negative =
    converging, upstream of the focus; 0 = flat phase). The intensity width is not changed: it
    is a model probe, not a propagated Gaussian beam. Keep the phase step between neighbouring
    pixels below pi up to the window edge r_max, i.e. 2 r_max dx / (wavelength |defocus|) < 1,
    or the phase aliases.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    width : float
        Intensity FWHM in pixels (> 0).
    defocus : float
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
    shape = _shape("shape", shape, low=1)
    width = _real("width", width, low=0.0, low_open=True)
    defocus = _real("defocus", defocus)
    dtype = _complex_dtype(dtype)
    y, x = _centred_coordinates(shape)
    probe = np.exp(-2.0 * np.log(2.0) * (y**2 + x**2) / width**2).astype(np.complex128)
    if defocus != 0.0:
        if wavelength is None or pixel_size is None:
            raise ValueError("defocus (metres) needs wavelength and pixel_size")
        wavelength = _real("wavelength", wavelength, low=0.0, low_open=True)
        ym, xm = _centred_coordinates(shape, geometry.pixel_pair(pixel_size))
        probe = probe * np.exp(1j * np.pi * (ym**2 + xm**2) / (wavelength * defocus))
    return probe.astype(dtype)


def probe_from_images(shape, magnitude="gravel", phase="grass", *, amplitude_range=(0.0, 1.0),
                      phase_range=(-np.pi, np.pi), envelope=None, dtype=np.complex128):
    """A structured (diffuser-like) probe from two images, as `object_from_images`.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    magnitude, phase : str, (h, w) real array or None
        As in `object_from_images`.
    amplitude_range, phase_range : (2,) float
        As in `object_from_images`.
    envelope : float, optional
        If given, the result is multiplied by a Gaussian amplitude whose intensity FWHM is
        `envelope` pixels, centred on (Ny//2, Nx//2) (a localised far-field probe); None fills
        the window (a near-field probe).
    dtype : complex64 or complex128

    Returns
    -------
    probe : (Ny, Nx) dtype
    """
    probe = _complex_from_images(shape, magnitude, phase, amplitude_range, phase_range, np.complex128)
    if envelope is not None:
        probe = probe * probe_focused(probe.shape, width=_real("envelope", envelope, low=0.0, low_open=True))
    return probe.astype(_complex_dtype(dtype))


def default_power_fractions(n_modes):
    """Geometric fractions proportional to 0.2**k, summing to 1: (0.806, 0.161, 0.032) for 3 modes."""
    w = _MODE_RATIO ** np.arange(_count("n_modes", n_modes), dtype=np.float64)
    return w / w.sum()


def _power_fractions(power_fractions, n_modes):
    if power_fractions is None:
        return default_power_fractions(n_modes)
    p = np.asarray(power_fractions, dtype=np.float64).reshape(-1)
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


def probe_modes(probe, n_modes, *, power_fractions=None, seed=0):
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
    probe = np.asarray(probe)
    if probe.ndim != 2 or not np.iscomplexobj(probe):
        raise ValueError(f"probe must be a complex 2-D array, got dtype {probe.dtype} with shape {probe.shape}")
    n_modes = _count("n_modes", n_modes)
    fractions = _power_fractions(power_fractions, n_modes)
    p = probe.astype(np.complex128)
    intensity = np.abs(p) ** 2
    total = float(intensity.sum())
    if not np.isfinite(total) or total <= 0:
        raise ValueError("probe must have finite, non-zero power")
    if n_modes > p.size:
        raise ValueError(f"n_modes = {n_modes} exceeds the number of probe pixels {p.size}")
    rng = np.random.default_rng(_seed(seed))
    y, x = _centred_coordinates(p.shape)
    cy, cx = (intensity * y).sum() / total, (intensity * x).sum() / total
    sy = np.sqrt(max((intensity * (y - cy) ** 2).sum() / total, 0.25))
    sx = np.sqrt(max((intensity * (x - cx) ** 2).sum() / total, 0.25))
    orders = _hermite_orders(n_modes - 1)
    yh, xh = (y - cy) / (np.sqrt(2.0) * sy), (x - cx) / (np.sqrt(2.0) * sx)
    poly = (scipy.special.eval_hermite(orders[:, 0, None, None], yh[None])
            * scipy.special.eval_hermite(orders[:, 1, None, None], xh[None]))
    screen = ndi.gaussian_filter(rng.standard_normal((n_modes - 1, *p.shape)), sigma=(0, sy, sx), mode="wrap")
    rms = np.sqrt(np.mean(screen**2, axis=(-2, -1), keepdims=True))
    screen = screen * (_MODE_PHASE_RMS / np.where(rms > 0, rms, 1.0))
    candidates = np.concatenate([p[None], p * poly * np.exp(1j * screen)], axis=0)
    q, r = np.linalg.qr(candidates.reshape(n_modes, -1).T)
    diag = np.diagonal(r)
    if np.any(np.abs(diag) <= 1e-10 * np.abs(diag[0])):
        raise ValueError(f"could not build {n_modes} independent modes from this probe (too few non-zero pixels)")
    q = q * (diag / np.abs(diag))   # fix the phases so mode 0 is probe / |probe| exactly
    modes = q.T.reshape(n_modes, *p.shape) * np.sqrt(fractions * total)[:, None, None]
    return modes.astype(probe.dtype)


def probe_diameter(probe, *, threshold=0.5):
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
    threshold = _real("threshold", threshold, low=0.0, high=1.0, low_open=True)
    intensity = (np.abs(probe) ** 2).reshape(-1, *probe.shape[-2:]).sum(axis=0)
    peak = intensity.max()
    if not np.isfinite(peak) or peak <= 0:
        raise ValueError("probe must have finite, non-zero intensity")
    return float(2.0 * np.sqrt(np.count_nonzero(intensity >= threshold * peak) / np.pi))


# --------------------------------------------------------------------------- scan patterns

def step_from_overlap(probe_diameter, overlap):
    """Scan step (pixels) that gives a linear overlap `overlap` between neighbouring probes.

    Linear overlap (Bunk et al. 2008) is the fraction of the probe diameter d shared by two
    probe discs whose centres are one step s apart: overlap = 1 - s / d, so s = d (1 - overlap).
    (The shared *area* fraction is smaller: about 0.6 for a linear overlap of 0.7.)

    Parameters
    ----------
    probe_diameter : float
        Pixels (> 0), e.g. from `probe_diameter`.
    overlap : float in [0, 1)

    Returns
    -------
    step : float
    """
    d = _real("probe_diameter", probe_diameter, low=0.0, low_open=True)
    o = _real("overlap", overlap, low=0.0, high=1.0, high_open=True)
    return d * (1.0 - o)


def _step_pair(step):
    try:
        arr = np.asarray(step, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"step must be a positive number or a (sy, sx) pair of them, got {step!r}") from None
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"step must be a positive number or a (sy, sx) pair of them, got {step!r}")
    return arr


def _jitter(rng, n, rms):
    """(n, 2) Gaussian displacements whose 2-D RMS length is `rms` (sigma rms/sqrt(2) per axis)."""
    return rng.standard_normal((n, 2)) * (rms / np.sqrt(2.0))


def raster_scan(ny, nx, step, *, jitter=0.0, seed=0):
    """A rectangular grid of ny x nx positions, row by row (y slow, x fast), centred on 0.

    Parameters
    ----------
    ny, nx : int >= 1
        Rows and columns.
    step : float or (2,) float
        Grid pitch (sy, sx) in pixels.
    jitter : float >= 0
        Random displacement added to every point: Gaussian, independent per axis with sigma
        jitter / sqrt(2), so that the RMS displacement length sqrt(<dy^2 + dx^2>) is `jitter`
        pixels (in expectation). It breaks the periodicity that causes raster-grid artefacts.
    seed : int or numpy SeedSequence
        For the jitter.

    Returns
    -------
    positions : (ny * nx, 2) float64
        (y, x) in pixels.
    """
    ny, nx = _count("ny", ny), _count("nx", nx)
    sy, sx = _step_pair(step)
    jitter = _real("jitter", jitter, low=0.0)
    yy, xx = np.meshgrid((np.arange(ny) - (ny - 1) / 2) * sy, (np.arange(nx) - (nx - 1) / 2) * sx, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    if jitter > 0:
        pos = pos + _jitter(np.random.default_rng(_seed(seed)), pos.shape[0], jitter)
    return pos


def fermat_spiral(n, step):
    """Fermat (Vogel) spiral of n points, centred on 0: r_i = c sqrt(i), theta_i = i * golden angle.

    c = step / sqrt(pi), so the points have the areal density of a square raster of pitch `step`
    (one point per step^2); their mean nearest-neighbour distance is then about 0.95 step.
    Spiral scans avoid the periodic artefacts of raster grids (Huang et al. 2014).

    Parameters
    ----------
    n : int >= 1
    step : float > 0
        Pixels.

    Returns
    -------
    positions : (n, 2) float64
        (y, x) in pixels; point 0 is at the origin.
    """
    n = _count("n", n)
    step = _real("step", step, low=0.0, low_open=True)
    i = np.arange(n, dtype=np.float64)
    r = step / np.sqrt(np.pi) * np.sqrt(i)
    theta = i * GOLDEN_ANGLE
    return np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)


def concentric_rings(n_rings, step):
    """One centre point and n_rings concentric rings, centred on 0.

    Ring r (1..n_rings) has radius r * step and round(2 pi r) equally spaced points starting at
    angle 0, so neighbours on a ring are about `step` apart (Dierolf et al. 2010).
    Total count: 1 + sum_r round(2 pi r).

    Parameters
    ----------
    n_rings : int >= 0
        Rings around the centre point (0 gives the centre alone).
    step : float > 0
        Radial spacing in pixels.

    Returns
    -------
    positions : (J, 2) float64
        (y, x) in pixels, the centre first, then ring by ring.
    """
    n_rings = _count("n_rings", n_rings, low=0)
    step = _real("step", step, low=0.0, low_open=True)
    rings = np.arange(1, n_rings + 1)
    counts = np.rint(2 * np.pi * rings).astype(np.int64)
    ring = np.repeat(rings, counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(ring.size) - first
    theta = 2 * np.pi * k / np.repeat(counts, counts)
    pos = np.stack([ring * step * np.sin(theta), ring * step * np.cos(theta)], axis=1)
    return np.concatenate([np.zeros((1, 2)), pos], axis=0)


# --------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Geometry:
    """Wavelength, detector and propagator of an experiment (all lengths in metres).

    Far field ("farfield"): the detector of `shape` pixels of size `detector_pixel_size` sits
    `detector_distance` behind the sample; the sample-plane pixel size is lambda z / (N p).
    Near field ("angular_spectrum", "fresnel"), parallel beam without magnification: the detector
    records the wave `detector_distance` (= z) behind the sample with pixels of the sample-plane
    pixel size `detector_pixel_size`. For a cone-beam (magnifying) setup pass the Fresnel-scaled
    effective distance and pixel size.

    Attributes
    ----------
    wavelength : float
    detector_distance : float
    detector_pixel_size : (2,) float
        (py, px); a scalar is accepted and repeated.
    shape : (2,) int
        Detector (= probe) shape (Ny, Nx).
    propagator : {"farfield", "angular_spectrum", "fresnel"}
    """

    wavelength: float
    detector_distance: float
    detector_pixel_size: tuple
    shape: tuple
    propagator: str = "farfield"

    def __post_init__(self):
        _choice("propagator", self.propagator, geometry.PROPAGATORS)
        object.__setattr__(self, "wavelength", _real("wavelength", self.wavelength, low=0.0, low_open=True))
        name = "detector_distance" if self.propagator == "farfield" else "z"
        low_open = self.propagator == "farfield"
        distance = _real(name, self.detector_distance, low=0.0 if low_open else None, low_open=low_open)
        object.__setattr__(self, "detector_distance", distance)
        object.__setattr__(self, "detector_pixel_size",
                           geometry.pixel_pair(self.detector_pixel_size, "detector_pixel_size"))
        object.__setattr__(self, "shape", _shape("shape", self.shape))

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Sample-plane pixel size (dy, dx) in metres."""
        if self.propagator == "farfield":
            return geometry.farfield_pixel_size(self.wavelength, self.detector_distance,
                                                self.detector_pixel_size, self.shape)
        return self.detector_pixel_size

    @property
    def z(self):
        """Near-field propagation distance in metres; None for the far field."""
        return None if self.propagator == "farfield" else self.detector_distance


# --------------------------------------------------------------------------- the assembled experiment

@dataclass(frozen=True, eq=False)
class Experiment:
    """A simulated data set with its ground truth (from `simulate`).

    Attributes
    ----------
    obj : (Mo, H, W) complex
        True object modes.
    probe : (K, Ny, Nx) complex
        True probe modes, scaled so that `cuptycho.forward(obj, probe, positions,
        **forward_kwargs())` reproduces `intensity_clean`.
    positions : (J, 2) float64
        True (y, x) top-left corners in object pixels.
    positions_start : (J, 2) float64
        Perturbed positions to start a reconstruction from (clipped into the valid range).
    data : (J, Ny, Nx) float32
        Measured counts (Poisson and read-out noise), or the noise-free intensities when
        photons is None.
    intensity_clean : (J, Ny, Nx) real, the precision of obj
        Noise-free intensities.
    propagator, wavelength, pixel_size, z, z_start, padding, detector_distance,
    detector_pixel_size, photons, seed
        The settings; pixel_size is the sample-plane (dy, dx) in metres, z is None for the far
        field, z_start = z (1 + z_error).
    geometry : Geometry
    step : float
        Nominal scan step in pixels.
    read_noise, position_error, z_error : float
        The error settings used.
    """

    obj: np.ndarray = field(repr=False)
    probe: np.ndarray = field(repr=False)
    positions: np.ndarray = field(repr=False)
    positions_start: np.ndarray = field(repr=False)
    data: np.ndarray = field(repr=False)
    intensity_clean: np.ndarray = field(repr=False)
    propagator: str
    wavelength: float
    pixel_size: tuple
    z: float | None
    z_start: float | None
    padding: int
    detector_distance: float
    detector_pixel_size: tuple
    photons: float | None
    seed: int
    geometry: Geometry = field(repr=False)
    step: float = 0.0
    read_noise: float = 0.0
    position_error: float = 0.0
    z_error: float = 0.0

    def forward_kwargs(self, *, start=False) -> dict:
        """Keywords for `cuptycho.forward` / `loss_and_grad`: propagator, z, wavelength, pixel_size, padding.

        With start=True, z is the perturbed `z_start` (a reconstruction's initial guess).
        """
        return {"propagator": self.propagator, "z": self.z_start if start else self.z,
                "wavelength": self.wavelength, "pixel_size": self.pixel_size, "padding": self.padding}

    def dataset(self):
        """The experiment as a reconstruction sees it: data, perturbed start positions and z, the
        object's size, and the truth (object, probe, positions, z) for metrics."""
        from .dataset import Dataset

        kw = self.forward_kwargs(start=True)
        geometry_kw = {} if self.propagator == "farfield" else {k: kw[k] for k in ("z", "wavelength", "pixel_size",
                                                                                    "padding")}
        return Dataset(data=self.data, positions=self.positions_start, propagator=self.propagator,
                       obj_shape=self.obj.shape[-2:], **geometry_kw,
                       truth={"object": self.obj, "probe": self.probe, "positions": self.positions, "z": self.z})

    @property
    def n_positions(self) -> int:
        return int(self.positions.shape[0])

    def __repr__(self):
        return (f"Experiment(propagator={self.propagator!r}, obj={self.obj.shape} {self.obj.dtype}, "
                f"probe={self.probe.shape}, positions={self.positions.shape[0]}, photons={self.photons}, "
                f"z={self.z}, seed={self.seed})")


_STREAMS = ("scan", "probe_modes", "object_modes", "position_error", "poisson", "read_noise")


def _make_probe(kind, shape, options, geom, dtype):
    opts = dict(options or {})
    if not isinstance(kind, str):
        probe = np.asarray(kind)
        if probe.ndim != 2 or not np.iscomplexobj(probe) or not np.all(np.isfinite(probe)):
            raise ValueError(f"probe must be one of {PROBE_KINDS} or a finite complex (Ny, Nx) array, got "
                             f"{probe.dtype} with shape {probe.shape}")
        if opts:
            raise ValueError("probe_options are only used with a probe kind, not with a probe array")
        return probe.astype(np.complex128)
    _choice("probe", kind, PROBE_KINDS)
    try:
        if kind == "focused":
            opts.setdefault("width", min(shape) / 4)
            if opts.get("defocus", 0.0):
                opts.setdefault("wavelength", geom.wavelength)
                opts.setdefault("pixel_size", geom.pixel_size)
            return probe_focused(shape, **opts)
        if kind == "aperture":
            opts.setdefault("wavelength", geom.wavelength)
            opts.setdefault("pixel_size", geom.pixel_size)
            dy, dx = geometry.pixel_pair(opts["pixel_size"])
            opts.setdefault("radius", 0.25 * min(shape[0] * dy, shape[1] * dx))
            opts.setdefault("z", opts["radius"] ** 2 / (5.0 * opts["wavelength"]))   # Fresnel number 5
            return probe_aperture(shape, **opts)
        return probe_from_images(shape, **opts)
    except TypeError as err:   # an unknown keyword in probe_options
        raise ValueError(f"probe_options for probe={kind!r}: {err}") from None


def _make_scan(kind, size, step, jitter, seed):
    if not isinstance(kind, str):
        pos = np.asarray(kind, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0 or not np.all(np.isfinite(pos)):
            raise ValueError(f"scan must be one of {SCAN_KINDS} or a finite (J, 2) array, got shape {pos.shape}")
        return pos + (_jitter(np.random.default_rng(seed), pos.shape[0], jitter) if jitter else 0.0)
    _choice("scan", kind, SCAN_KINDS)
    if kind == "raster":
        ny, nx = _shape("scan_size", size, low=1)
        return raster_scan(ny, nx, step, jitter=jitter, seed=seed)
    pos = fermat_spiral(_count("scan_size", size), step) if kind == "fermat" else \
        concentric_rings(_count("scan_size", size, low=0), step)
    return pos + (_jitter(np.random.default_rng(seed), pos.shape[0], jitter) if jitter else 0.0)


def simulate(*, shape=None, probe="focused", probe_options=None, n_probe_modes=1, power_fractions=None,
             magnitude="camera", phase="astronaut", amplitude_range=(0.5, 1.0), phase_range=(-np.pi / 2, np.pi / 2),
             n_object_modes=1, object_mode_shift=1.0, scan="raster", scan_size=(7, 7), step=None, overlap=0.7,
             jitter=0.0, propagator="farfield", wavelength=1.24e-10, detector_distance=None,
             detector_pixel_size=None, z=None, pixel_size=None, padding=0, photons=1e6, read_noise=0.0,
             position_error=0.0, z_error=0.0, dtype=np.complex64, seed=0) -> Experiment:
    """Simulate a ptychography experiment with its ground truth, deterministically from `seed`.

    Steps: geometry -> probe (and modes) -> scan (step from `overlap` unless `step` is given)
    -> positions shifted into an object sized to hold them -> object (and modes) from images ->
    noise-free intensities with `cuptycho.forward` -> probe rescaled to the requested photon count
    -> Poisson and read-out noise -> perturbed start positions and z.

    Parameters
    ----------
    shape : int or (2,) int, optional
        Probe = detector shape (Ny, Nx); default (64, 64), or the shape of a probe array.
    probe : {"focused", "aperture", "images"} or (Ny, Nx) complex
        Probe kind (`probe_focused`, `probe_aperture`, `probe_from_images`) or the probe itself.
    probe_options : dict, optional
        Keywords for the probe function. Defaults: focused width = min(shape) / 4 pixels (its
        wavelength and pixel size come from the geometry when defocus is set); aperture radius =
        a quarter of the window, z = radius^2 / (5 wavelength) (Fresnel number 5), wavelength and
        pixel size from the geometry; images as `probe_from_images`.
    n_probe_modes : int >= 1
        Mutually incoherent probe modes (`probe_modes`).
    power_fractions : (n_probe_modes,) float, optional
        Power of each probe mode; default `default_power_fractions`.
    magnitude, phase, amplitude_range, phase_range
        The object, as in `object_from_images` (the images are resized to the object size).
    n_object_modes : int >= 1
        Incoherent object modes (`object_modes`, with the default power fractions).
    object_mode_shift : float
        RMS displacement (pixels) of the higher object modes.
    scan : {"raster", "fermat", "rings"} or (J, 2) float
        Scan pattern (`raster_scan`, `fermat_spiral`, `concentric_rings`), or positions in
        pixels (any origin; they are shifted).
    scan_size : int or (2,) int
        raster: (ny, nx) (an int means square); fermat: number of points; rings: number of rings
        around the centre point.
    step : float, optional
        Scan step in pixels. If None, step = `step_from_overlap(probe_diameter(probe), overlap)`.
    overlap : float in [0, 1)
        Linear overlap, used only when step is None.
    jitter : float >= 0
        RMS random displacement (pixels) of the true positions (as in `raster_scan`; also for the
        other patterns).
    propagator : {"farfield", "angular_spectrum", "fresnel"}
    wavelength : float
        Metres (default 1.24e-10, 10 keV X-rays).
    detector_distance, detector_pixel_size : float, optional
        Far field only (metres); default 2.0 and 75e-6. The sample pixel size is lambda z / (N p).
        Must be None for the near field.
    z, pixel_size : float, optional
        Near field only, both required: propagation distance and sample-plane pixel size (dy, dx)
        in metres (parallel beam: the detector's distance and pixel size). Must be None for the
        far field.
    padding : int or (2,) int
        Near field only: zero pixels on each side before propagation (see `cuptycho.forward`).
    photons : float or None
        Total photon count of the brightest pattern, max_j sum I_j (> 0; e.g. 1e3 ... 1e9).
        The probe is scaled by sqrt(s) so that the stored probe reproduces the noise-free data.
        None keeps the unscaled probe and gives noise-free float data (read_noise must then be 0).
    read_noise : float >= 0
        Gaussian read-out noise sigma in counts, added to the Poisson counts; the sum is then
        rounded to integers and clipped at 0.
    position_error : float >= 0
        RMS length (pixels) of the Gaussian error of positions_start (sigma position_error /
        sqrt(2) per axis). The object margin grows with it (2 + ceil(3 sigma) pixels), and start
        positions still outside the valid range are clipped into it (their error is then smaller).
    z_error : float
        Relative error of the start distance, z_start = z (1 + z_error); near field only.
    dtype : complex64 or complex128
        Precision of obj, probe and intensity_clean; data is always float32, positions float64.
    seed : int >= 0
        Everything random derives from it, one independent stream per sub-step.

    Returns
    -------
    experiment : Experiment
    """
    from .api import forward   # imported here: cuptycho/__init__ imports api, and api may import us

    dtype = _complex_dtype(dtype)
    seed_seq = _seed(seed)
    streams = dict(zip(_STREAMS, seed_seq.spawn(len(_STREAMS))))

    # geometry
    if not isinstance(probe, str) and np.ndim(probe) != 2:
        raise ValueError(f"probe must be one of {PROBE_KINDS} or a complex (Ny, Nx) array, got shape {np.shape(probe)}")
    if not isinstance(probe, str) and shape is None:
        shape = np.shape(probe)
    shape = _shape("shape", (64, 64) if shape is None else shape)
    if not isinstance(probe, str) and np.shape(probe) != shape:
        raise ValueError(f"probe has shape {np.shape(probe)} but shape is {shape}")
    _choice("propagator", propagator, geometry.PROPAGATORS)
    if propagator == "farfield":
        for name, value in (("z", z), ("pixel_size", pixel_size)):
            if value is not None:
                raise ValueError(f"{name} is for the near-field propagators; the far-field sample pixel size "
                                 "follows from wavelength, detector_distance and detector_pixel_size")
        if np.any(np.asarray(padding) != 0):
            raise ValueError("padding is only used by the near-field propagators")
        if z_error:
            raise ValueError("z_error is only used by the near-field propagators (farfield has no z)")
        geom = Geometry(wavelength, 2.0 if detector_distance is None else detector_distance,
                        75e-6 if detector_pixel_size is None else detector_pixel_size, shape, propagator)
    else:
        for name, value in (("detector_distance", detector_distance), ("detector_pixel_size", detector_pixel_size)):
            if value is not None:
                raise ValueError(f"{name} is for the far field; give z and pixel_size for {propagator!r}")
        for name, value in (("z", z), ("pixel_size", pixel_size)):
            if value is None:
                raise ValueError(f"the {propagator} propagator needs {name} (metres)")
        geom = Geometry(wavelength, z, pixel_size, shape, propagator)
    z_error = _real("z_error", z_error, low=-1.0, low_open=True)
    pad = np.asarray(padding).reshape(-1)
    if pad.size not in (1, 2) or not np.issubdtype(pad.dtype, np.integer) or np.any(pad < 0):
        raise ValueError(f"padding must be a non-negative integer or a (py, px) pair, got {padding!r}")
    padding = int(pad[0]) if pad.size == 1 else (int(pad[0]), int(pad[1]))
    if photons is not None:
        photons = _real("photons", photons, low=0.0, low_open=True)
    read_noise = _real("read_noise", read_noise, low=0.0)
    if photons is None and read_noise > 0:
        raise ValueError("read_noise needs photons (photons=None means noise-free data)")
    position_error = _real("position_error", position_error, low=0.0)
    jitter = _real("jitter", jitter, low=0.0)
    n_probe_modes = _count("n_probe_modes", n_probe_modes)
    n_object_modes = _count("n_object_modes", n_object_modes)

    # probe and its modes (complex128 until the end)
    probe0 = _make_probe(probe, shape, probe_options, geom, np.complex128)
    probes = probe_modes(probe0, n_probe_modes, power_fractions=power_fractions, seed=streams["probe_modes"])

    # scan
    if step is None:
        step = step_from_overlap(probe_diameter(probe0), overlap)
    else:
        _step_pair(step)
    scan_pos = _make_scan(scan, scan_size, step, jitter, streams["scan"])

    # positions inside an object with a margin; perturbed start positions
    sigma = position_error / np.sqrt(2.0)
    margin = 2 + int(np.ceil(3.0 * sigma))
    positions = scan_pos - scan_pos.min(axis=0) + margin
    obj_shape = tuple(int(n) for n in np.array(shape) + np.ceil(positions.max(axis=0)).astype(int) + margin)
    limit = np.array(obj_shape, dtype=np.float64) - np.array(shape)
    err = np.random.default_rng(streams["position_error"]).standard_normal(positions.shape) * sigma
    positions_start = np.clip(positions + err, 0.0, limit)

    # object and its modes
    obj0 = object_from_images(obj_shape, magnitude=magnitude, phase=phase, amplitude_range=amplitude_range,
                              phase_range=phase_range, dtype=np.complex128)
    objs = object_modes(obj0, n_object_modes, shift=object_mode_shift, seed=streams["object_modes"])

    # intensities, scaled to the photon count
    kwargs = {"propagator": propagator, "z": geom.z, "wavelength": geom.wavelength,
              "pixel_size": geom.pixel_size, "padding": padding}
    obj_out = objs.astype(dtype)
    if photons is not None:
        unscaled = forward(obj_out, probes.astype(dtype), positions, **kwargs)
        brightest = float(np.max(np.sum(unscaled, axis=(-2, -1), dtype=np.float64)))
        if not np.isfinite(brightest) or brightest <= 0:
            raise ValueError("the simulated patterns carry no intensity; check the probe and the object")
        probes = probes * np.sqrt(photons / brightest)
    probe_out = probes.astype(dtype)
    clean = forward(obj_out, probe_out, positions, **kwargs)

    # noise
    if photons is None:
        data = clean.astype(np.float32)
    else:
        counts = np.random.default_rng(streams["poisson"]).poisson(clean.astype(np.float64)).astype(np.float64)
        if read_noise > 0:
            counts += np.random.default_rng(streams["read_noise"]).normal(0.0, read_noise, counts.shape)
            counts = np.clip(np.rint(counts), 0.0, None)
        data = counts.astype(np.float32)

    return Experiment(
        obj=obj_out, probe=probe_out, positions=positions, positions_start=positions_start, data=data,
        intensity_clean=clean, propagator=propagator, wavelength=geom.wavelength, pixel_size=geom.pixel_size,
        z=geom.z, z_start=None if geom.z is None else geom.z * (1.0 + z_error), padding=padding,
        detector_distance=geom.detector_distance, detector_pixel_size=geom.detector_pixel_size, photons=photons,
        seed=seed, geometry=geom,
        step=float(np.mean(_step_pair(step))), read_noise=read_noise, position_error=position_error, z_error=z_error)


# --------------------------------------------------------------------------- presets

PRESETS = {
    # 10 keV, Eiger-like detector 2 m away: 64 x 64 patterns, ~52 nm sample pixels; a defocused
    # Gaussian spot (FWHM 16 px) on a 7 x 7 raster with 70 % linear overlap and 1 px jitter.
    "small_farfield": dict(
        shape=(64, 64), probe="focused", probe_options={"width": 16.0, "defocus": 5e-3},
        scan="raster", scan_size=(7, 7), overlap=0.7, jitter=1.0,
        propagator="farfield", wavelength=1.24e-10, detector_distance=2.0, detector_pixel_size=75e-6,
        photons=1e6, dtype=np.complex64, seed=0),
    # Near field, parallel beam: 50 nm pixels, z = 1 mm (below N dx^2 / lambda = 1.3 mm, no padding
    # needed), a window-filling diffuser-like probe, 25-point Fermat spiral with 6 px spacing.
    "small_nearfield": dict(
        shape=(64, 64), probe="images", probe_options={"magnitude": "gravel", "phase": "grass",
                                                       "amplitude_range": (0.2, 1.0)},
        scan="fermat", scan_size=25, step=6.0,
        propagator="angular_spectrum", wavelength=1.24e-10, z=1e-3, pixel_size=50e-9,
        photons=1e7, dtype=np.complex64, seed=0),
}


def preset(name, **overrides) -> Experiment:
    """`simulate` with the settings of PRESETS[name], updated by `overrides`.

    "small_farfield": 64 x 64 far-field patterns, 7 x 7 raster (well under a second).
    "small_nearfield": 64 x 64 angular-spectrum near-field images, 25-point Fermat spiral.
    An override of `step` makes the preset's `overlap` irrelevant (step wins).
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {tuple(PRESETS)}")
    kwargs = dict(PRESETS[name])
    if "probe_options" in kwargs:
        kwargs["probe_options"] = dict(kwargs["probe_options"])
    kwargs.update(overrides)
    return simulate(**kwargs)


# `cuptycho.simulate` may be this module or (re-exported) this function: both spell `.preset`.
simulate.preset = preset
simulate.PRESETS = PRESETS
