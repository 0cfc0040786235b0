"""Units and the geometry of a measurement: what turns detector quantities into the model's sampling.

Photon energy and wavelength (`energy_to_wavelength`, `ev_to_joule`, ...), the one table of length
units (`LENGTH_UNITS`, `length_scale`), the two kinds of experiment and their default propagators,
Fresnel scaling, CXI sample translations <-> probe positions, and the sample-plane sampling derived
from the detector (`derive_sampling`, `sampling_ratio`). `cuptycho.Dataset`, the detector
preprocessing (`cuptycho.preprocess`) and the readers (`cuptycho.io`) all use these; this module
imports only `geometry` and `validation`.

Geometry
--------
Two kinds of experiment (`GEOMETRY_KINDS`, `Dataset.geometry_kind`):

``"farfield"``
    The detector records the Fraunhofer pattern of the exit wave (propagator ``"farfield"``). With
    wavelength lambda, sample-to-detector distance z and N detector pixels of size p along an axis, the
    sample-plane pixel size is ``lambda z / (N p)`` (per axis).
``"nearfield"``
    The detector records a (magnified) in-line hologram (propagator ``"angular_spectrum"`` or
    ``"fresnel"``). With a parallel beam (``focus_distance=None``) the sample-plane pixel size is the
    detector pixel size and the propagation distance is the sample-to-detector distance. With a
    divergent beam from a focus at distance z1 upstream of the sample (``focus_distance``) and the
    detector at z2 downstream of it (``detector_distance``), the Fresnel scaling theorem maps the
    experiment onto an equivalent parallel-beam one: magnification ``M = (z1 + z2) / z1``, effective
    propagation distance ``z_eff = z2 / M = z1 z2 / (z1 + z2)`` and sample-plane pixel size
    ``p / M``. The intensity is the same up to a constant factor 1/M^2 (absorbed by the probe).

Positions and their signs
-------------------------
`Dataset.positions` are the (y, x) coordinates of each patch's top-left corner in object pixels:
row y, column x of the object array, increasing y moving the illuminated patch to larger row
indices (MATH.md). `Dataset.positions_m` are the same probe positions in metres in the sample plane,
measured along the object array's axes (y along rows, x along columns); positions in pixels are
``positions_m / pixel_size`` (then shifted by a constant; only differences matter).

CXI files record *sample* translations t (metres, lab frame: x horizontal, y vertical, z along the
beam). The probe moves relative to the sample by -t, and the object array's axes point along the
detector's basis vectors (the sample plane is imaged onto the detector without inversion in the
near field; in the far field the Fourier axes follow the real-space axes). So
``positions_m = pinv(B) (-t)`` where the columns of B are the unit vectors of one step along the
detector's rows and columns (`translations_to_positions`). Without basis vectors cuptycho assumes
cdtools' default, rows along -y and columns along -x, which gives ``positions_m = (t_y, t_x)``: a
sample moving by +t_y moves the patch by +t_y / pixel_size rows. This is the convention of cdtools,
whose reconstructions of the PETRA III file in ``../shared/data`` use it.
"""
from __future__ import annotations

import numpy as np

from . import geometry, validation

PLANCK = 6.62607015e-34            # J s (exact, SI 2019)
SPEED_OF_LIGHT = 299792458.0       # m / s (exact)
ELECTRON_VOLT = 1.602176634e-19    # J (exact)

# metres per unit, for positions files, CXI "units" attributes and the like; PIXEL_UNITS are object pixels
LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6, "nm": 1e-9}
PIXEL_UNITS = ("px", "pixel", "pixels")

GEOMETRY_KINDS = ("farfield", "nearfield")

# cdtools' default detector basis when a file has none: unit steps along rows and columns are
# -y and -x in the lab frame (the PETRA III file in ../shared/data records exactly this basis).
DEFAULT_BASIS = np.array([[0.0, -1.0], [-1.0, 0.0], [0.0, 0.0]])


# --------------------------------------------------------------------------- units

def length_scale(unit, *, pixels: bool = False) -> float | None:
    """Metres per `unit` (case and surrounding blanks ignored); None for object pixels (``pixels=True``
    only). ValueError for anything else, listing the units understood."""
    u = str(unit).strip().lower()
    if u in LENGTH_UNITS:
        return LENGTH_UNITS[u]
    if pixels and u in PIXEL_UNITS:
        return None
    known = ", ".join(["m", "mm", "um", "nm"] + (["px"] if pixels else []))
    raise ValueError(f"unknown length unit {unit!r}; use one of {known}")


def energy_to_wavelength(energy: float) -> float:
    """Wavelength (m) of a photon of `energy` joules: ``h c / E``."""
    return PLANCK * SPEED_OF_LIGHT / validation.positive_number("energy", energy)


def wavelength_to_energy(wavelength: float) -> float:
    """Photon energy (J) at `wavelength` metres: ``h c / lambda``."""
    return PLANCK * SPEED_OF_LIGHT / validation.positive_number("wavelength", wavelength)


def ev_to_joule(energy_ev: float) -> float:
    """Electronvolts to joules."""
    return float(energy_ev) * ELECTRON_VOLT


def joule_to_ev(energy_j: float) -> float:
    """Joules to electronvolts."""
    return float(energy_j) / ELECTRON_VOLT


# --------------------------------------------------------------------------- kinds of experiment

def geometry_kind_of(propagator) -> str:
    """The kind of experiment a propagator models when none is stated: "farfield" for "farfield" (or
    None, the default propagator), else "nearfield"."""
    return "farfield" if propagator in (None, "farfield") else "nearfield"


def default_propagator(geometry_kind) -> str:
    """The propagator used for a kind of experiment when none is stated: "farfield" or "angular_spectrum"."""
    return "farfield" if geometry_kind == "farfield" else "angular_spectrum"


def fresnel_scaling(focus_distance: float, detector_distance: float, detector_pixel_size=None):
    """Magnification, effective distance and sample pixel size of a divergent-beam geometry.

    Parameters
    ----------
    focus_distance : float
        z1, focus (point source) to sample, metres.
    detector_distance : float
        z2, sample to detector, metres.
    detector_pixel_size : float or (py, px), optional
        Detector pixel size, metres.

    Returns
    -------
    magnification : float
        ``M = (z1 + z2) / z1``.
    effective_distance : float
        ``z2 / M``: the propagation distance of the equivalent parallel-beam experiment.
    pixel_size : (dy, dx) or None
        ``detector_pixel_size / M``, the sample-plane pixel size.
    """
    z1 = validation.positive_number("focus_distance", focus_distance)
    z2 = validation.positive_number("detector_distance", detector_distance)
    m = (z1 + z2) / z1
    px = None
    if detector_pixel_size is not None:
        py_, px_ = validation.length_pair("detector_pixel_size", detector_pixel_size)
        px = (py_ / m, px_ / m)
    return m, z2 / m, px


# --------------------------------------------------------------------------- translations and positions

def unit_basis(basis) -> np.ndarray:
    """(3, 2) unit column vectors (rows, columns) from a (3, 2) or (2, 3) basis, or the default
    (None); ValueError for a basis that is not two finite, non-zero, (nearly) orthogonal vectors."""
    if basis is None:
        return DEFAULT_BASIS.copy()
    b = np.asarray(basis, dtype=np.float64)
    if b.shape == (2, 3):
        b = b.T
    if b.shape != (3, 2) or not np.all(np.isfinite(b)):
        raise ValueError(f"basis vectors must be a finite (3, 2) (columns: one step along rows, columns) or "
                         f"(2, 3) array, got shape {b.shape}")
    norms = np.linalg.norm(b, axis=0)
    if np.any(norms == 0) or abs(np.dot(b[:, 0], b[:, 1])) > 1e-3 * norms[0] * norms[1]:
        raise ValueError(f"basis vectors must be two non-zero, (nearly) orthogonal vectors, got {b.tolist()}")
    return b / norms


def translations_to_positions(translations, basis=None) -> np.ndarray:
    """Probe positions (y, x) in metres along the object's axes from CXI sample translations.

    Parameters
    ----------
    translations : (J, 3) or (J, 2) float
        Sample translations in the lab frame (x, y[, z]), metres (CXI convention).
    basis : (3, 2) or (2, 3) float, optional
        Detector basis vectors (one step along rows and along columns, in lab coordinates); only
        their directions matter. Default `DEFAULT_BASIS` (rows along -y, columns along -x).

    Returns
    -------
    (J, 2) float64
        ``pinv(B) (-t)`` with B the unit basis: the probe's displacement relative to the sample,
        along the object array's rows (y) and columns (x). See the module notes on signs.
    """
    t = np.asarray(translations, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] not in (2, 3):
        raise ValueError(f"translations must have shape (J, 3) or (J, 2) (x, y[, z] per row), got {t.shape}")
    if t.shape[1] == 2:
        t = np.concatenate([t, np.zeros((t.shape[0], 1))], axis=1)
    b = unit_basis(basis)
    return (-t) @ np.linalg.pinv(b).T


def positions_to_translations(positions_m, basis=None) -> np.ndarray:
    """CXI sample translations (J, 3) in metres from probe positions (y, x) in metres; inverse of
    `translations_to_positions` for translations in the plane spanned by the basis."""
    p = np.asarray(positions_m, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"positions_m must have shape (J, 2), got {p.shape}")
    return -(p @ unit_basis(basis).T)


# --------------------------------------------------------------------------- sampling

def derive_sampling(kind, wavelength, detector_distance, detector_pixel_size, focus_distance, shape):
    """(pixel_size (dy, dx), z or None) of the sample plane from detector quantities of `shape`
    patterns, or None where they are incomplete (far field: z is None)."""
    if detector_pixel_size is None:
        return None
    if kind == "farfield":
        if wavelength is None or detector_distance is None:
            return None
        return geometry.farfield_pixel_size(wavelength, detector_distance, detector_pixel_size, shape), None
    if detector_distance is None:
        return None
    if focus_distance is None:
        return validation.length_pair("detector_pixel_size", detector_pixel_size), float(detector_distance)
    _, z_eff, px = fresnel_scaling(focus_distance, detector_distance, detector_pixel_size)
    return px, z_eff


def sampling_ratio(kind, old_shape, new_shape, factor) -> np.ndarray:
    """New over old sample-plane pixel size (per axis) after cropping `old_shape` patterns to
    `new_shape` (after binning) and binning by `factor`."""
    factor = np.broadcast_to(np.asarray(factor, dtype=np.float64), (2,))
    if kind == "farfield":          # dx = lambda z / (N p): N -> N', p -> factor p
        return np.asarray(old_shape, dtype=np.float64) / (np.asarray(new_shape, dtype=np.float64) * factor)
    return factor.copy()            # near field: dx = p / M
