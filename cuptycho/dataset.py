"""A ptychography dataset as the reconstruction engine sees it: patterns, scan, geometry.

Readers of measured files (`cuptycho.io`: CXI, HDF5, TIFF, NumPy) build this; the simulator's
`Experiment.dataset()` does too, with the truth attached so the engine can report errors while it
runs. `Dataset.from_measurement` derives the model's sampling (sample-plane pixel size, propagation
distance, positions in object pixels) from what an experiment records.

Geometry
--------
Two kinds of experiment (`Dataset.geometry_kind`):

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

Preprocessing
-------------
Pure functions that return a new `Dataset` (or a new array when given an array) and never modify
their argument: `subtract_dark`, `clip_negative`, `crop` (also centring on the beam), `bin_patterns`,
`mask_pixels` (bad and saturated pixels), `fftshift_patterns` / `ifftshift_patterns` (detector
images stored with the zero frequency at [0, 0]). Operations that change the detector sampling
(`crop`, `bin_patterns`) update the pixel size, the positions in pixels and the object size, and
drop the probe guess and the truth, which no longer match the patterns' shape.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import geometry, validation

PLANCK = 6.62607015e-34            # J s (exact, SI 2019)
SPEED_OF_LIGHT = 299792458.0       # m / s (exact)
ELECTRON_VOLT = 1.602176634e-19    # J (exact)

GEOMETRY_KINDS = ("farfield", "nearfield")

# cdtools' default detector basis when a file has none: unit steps along rows and columns are
# -y and -x in the lab frame (the PETRA III file in ../shared/data records exactly this basis).
DEFAULT_BASIS = np.array([[0.0, -1.0], [-1.0, 0.0], [0.0, 0.0]])


class NegativeCountsWarning(UserWarning):
    """Negative intensities (dark-subtracted noise, detector gap flags) were clipped to zero."""


# --------------------------------------------------------------------------- units and geometry

def energy_to_wavelength(energy: float) -> float:
    """Wavelength (m) of a photon of `energy` joules: ``h c / E``."""
    energy = validation.real_number("energy", energy, low=0, low_open=True)
    return PLANCK * SPEED_OF_LIGHT / energy


def wavelength_to_energy(wavelength: float) -> float:
    """Photon energy (J) at `wavelength` metres: ``h c / lambda``."""
    wavelength = validation.real_number("wavelength", wavelength, low=0, low_open=True)
    return PLANCK * SPEED_OF_LIGHT / wavelength


def ev_to_joule(energy_ev: float) -> float:
    """Electronvolts to joules."""
    return float(energy_ev) * ELECTRON_VOLT


def joule_to_ev(energy_j: float) -> float:
    """Joules to electronvolts."""
    return float(energy_j) / ELECTRON_VOLT


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
    z1 = validation.real_number("focus_distance", focus_distance, low=0, low_open=True)
    z2 = validation.real_number("detector_distance", detector_distance, low=0, low_open=True)
    m = (z1 + z2) / z1
    px = None
    if detector_pixel_size is not None:
        py_, px_ = geometry.pixel_pair(detector_pixel_size, "detector_pixel_size")
        px = (py_ / m, px_ / m)
    return m, z2 / m, px


def _unit_basis(basis) -> np.ndarray:
    """(3, 2) unit column vectors (rows, columns) from a (3, 2) or (2, 3) basis, or the default."""
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
    b = _unit_basis(basis)
    return (-t) @ np.linalg.pinv(b).T


def positions_to_translations(positions_m, basis=None) -> np.ndarray:
    """CXI sample translations (J, 3) in metres from probe positions (y, x) in metres; inverse of
    `translations_to_positions` for translations in the plane spanned by the basis."""
    p = np.asarray(positions_m, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"positions_m must have shape (J, 2), got {p.shape}")
    return -(p @ _unit_basis(basis).T)


def _derive_sampling(kind, wavelength, detector_distance, detector_pixel_size, focus_distance, shape):
    """(pixel_size (dy, dx), z or None) of the sample plane from detector quantities, or None if unknown."""
    if detector_pixel_size is None:
        return None
    if kind == "farfield":
        if wavelength is None or detector_distance is None:
            return None
        return geometry.farfield_pixel_size(wavelength, detector_distance, detector_pixel_size, shape), None
    if detector_distance is None:
        return None
    if focus_distance is None:
        return geometry.pixel_pair(detector_pixel_size, "detector_pixel_size"), float(detector_distance)
    _, z_eff, px = fresnel_scaling(focus_distance, detector_distance, detector_pixel_size)
    return px, z_eff


def _sampling_ratio(kind, old_shape, new_shape, factor) -> np.ndarray:
    """New over old sample-plane pixel size after cropping to `new_shape` and binning by `factor`."""
    factor = np.broadcast_to(np.asarray(factor, dtype=np.float64), (2,))
    if kind == "farfield":          # dx = lambda z / (N p): N -> N', p -> factor p
        return np.asarray(old_shape, dtype=np.float64) / (np.asarray(new_shape, dtype=np.float64) * factor)
    return factor.copy()            # near field: dx = p / M


# --------------------------------------------------------------------------- the dataset

@dataclass
class Dataset:
    """Measured intensities and what is known about how they were taken.

    Parameters
    ----------
    data : (J, Ny, Nx) real, >= 0
        Intensities (photon counts); zero frequency at (Ny//2, Nx//2) for the far field.
    positions : (J, 2) float64
        Nominal (y, x) top-left corners of each patch in object pixels. Without `obj_shape` they are
        shifted so the scan starts `margin` pixels inside the object.
    mask : (Ny, Nx) or (J, Ny, Nx), optional
        Detector weights (1 valid, 0 ignored).
    propagator, wavelength, pixel_size, z, padding
        Propagation model, as for `cuptycho.forward`; `pixel_size` is the sample-plane pixel size
        (m), `z` the nominal (effective) propagation distance (m), `wavelength` in metres.
    obj_shape : (H, W), optional
        Object size; by default the scan's extent plus the probe plus `margin` pixels each side.
    probe : (K, Ny, Nx) complex, optional
        An initial probe guess (an aperture model, a previous reconstruction).
    truth : dict, optional
        Known "object", "probe", "positions", "z" (simulations), for metrics while running.
    margin : int
        Pixels of object around the scan when `obj_shape` is derived.
    detector_distance : float, optional
        Sample-to-detector distance z2 (m), as recorded.
    detector_pixel_size : float or (py, px), optional
        Detector pixel size (m), after any binning.
    geometry_kind : {"farfield", "nearfield"}, optional
        Kind of experiment (module notes); by default "farfield" for the far-field propagator and
        "nearfield" otherwise.
    focus_distance : float, optional
        Focus-to-sample distance z1 (m) of a divergent (Fresnel-scaled) near-field geometry; None for
        a parallel beam.
    positions_m : (J, 2) float64, optional
        Probe positions (y, x) in metres along the object's axes (module notes), as measured.
    metadata : dict
        Anything else a reader found (source file, basis vectors, entry, ...); not used by the engine.

    Notes
    -----
    Derived quantities: `energy` (J) and `energy_ev` from the wavelength; `magnification` and
    `effective_distance` of the near-field geometry; `derived_sampling()` recomputes the pixel size
    and z from the detector quantities. `Dataset.from_measurement` builds a consistent dataset from
    the detector quantities.
    """

    data: np.ndarray
    positions: np.ndarray
    mask: np.ndarray | None = None
    propagator: str = "farfield"
    wavelength: float | None = None
    pixel_size: tuple | float | None = None
    z: float | None = None
    padding: int | tuple = 0
    obj_shape: tuple | None = None
    probe: np.ndarray | None = None
    truth: dict = field(default_factory=dict)
    margin: int = 4
    detector_distance: float | None = None
    detector_pixel_size: tuple | float | None = None
    geometry_kind: str | None = None
    focus_distance: float | None = None
    positions_m: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.data = np.asarray(self.data)
        if self.data.ndim != 3:
            raise ValueError(f"data must have shape (J, Ny, Nx), got {self.data.shape}")
        n, ny, nx = self.data.shape
        pos = np.asarray(self.positions, dtype=np.float64)
        if pos.shape != (n, 2):
            raise ValueError(f"positions must have shape ({n}, 2) (one (y, x) per pattern), got {pos.shape}")
        validation.propagation(self.propagator, self.z, self.wavelength, self.pixel_size, self.padding)
        if self.obj_shape is None:
            # shift the scan so it starts at the margin, and size the object to hold it
            pos = pos - pos.min(axis=0) + self.margin
            extent = np.ceil(pos.max(axis=0)).astype(int)
            self.obj_shape = (int(extent[0]) + ny + self.margin + 1, int(extent[1]) + nx + self.margin + 1)
        self.positions = pos
        validation.positions(self.positions, (ny, nx), (1, *self.obj_shape))
        validation.data(self.data, n, (ny, nx), self.data.dtype if self.data.dtype.kind == "f" else np.float64)
        validation.mask(self.mask, n, (ny, nx), np.float64)
        self._check_geometry(n)

    def _check_geometry(self, n):
        """Validate the recorded geometry (detector distance, pixel sizes, kind, positions in metres)."""
        if self.geometry_kind is None:
            self.geometry_kind = "farfield" if self.propagator == "farfield" else "nearfield"
        validation.choice("geometry_kind", self.geometry_kind, GEOMETRY_KINDS)
        if (self.geometry_kind == "farfield") != (self.propagator == "farfield"):
            raise ValueError(f"geometry_kind {self.geometry_kind!r} does not match the {self.propagator!r} "
                             "propagator (far field needs 'farfield'; near field 'angular_spectrum' or 'fresnel')")
        if self.wavelength is not None:
            self.wavelength = validation.real_number("wavelength", self.wavelength, low=0, low_open=True)
        if self.detector_distance is not None:
            self.detector_distance = validation.real_number("detector_distance", self.detector_distance,
                                                            low=0, low_open=True)
        if self.detector_pixel_size is not None:
            self.detector_pixel_size = geometry.pixel_pair(self.detector_pixel_size, "detector_pixel_size")
        if self.focus_distance is not None:
            if self.geometry_kind != "nearfield":
                raise ValueError("focus_distance (Fresnel scaling) only applies to the near-field geometry")
            self.focus_distance = validation.real_number("focus_distance", self.focus_distance, low=0, low_open=True)
        if self.positions_m is not None:
            pm = np.asarray(self.positions_m, dtype=np.float64)
            if pm.shape != (n, 2):
                raise ValueError(f"positions_m must have shape ({n}, 2) (one (y, x) in metres per pattern), "
                                 f"got {pm.shape}")
            if not np.all(np.isfinite(pm)):
                raise ValueError("positions_m contains NaN or Inf")
            self.positions_m = pm

    # ------------------------------------------------------------------ derived quantities

    @property
    def n_patterns(self) -> int:
        return self.data.shape[0]

    @property
    def patch_shape(self) -> tuple:
        return self.data.shape[1:]

    @property
    def energy(self) -> float | None:
        """Photon energy in joules (``h c / wavelength``), or None without a wavelength."""
        return None if self.wavelength is None else wavelength_to_energy(self.wavelength)

    @property
    def energy_ev(self) -> float | None:
        """Photon energy in electronvolts, or None without a wavelength."""
        return None if self.wavelength is None else joule_to_ev(self.energy)

    @property
    def magnification(self) -> float | None:
        """Near field: ``(z1 + z2) / z1`` with a focus distance, 1 for a parallel beam; None in the far field."""
        if self.geometry_kind != "nearfield":
            return None
        if self.focus_distance is None:
            return 1.0
        if self.detector_distance is None:
            return None
        return fresnel_scaling(self.focus_distance, self.detector_distance)[0]

    @property
    def effective_distance(self) -> float | None:
        """Near field: the propagation distance ``z2 / M`` of the equivalent parallel-beam experiment."""
        m = self.magnification
        if m is None or self.detector_distance is None:
            return None
        return self.detector_distance / m

    def derived_sampling(self):
        """(pixel_size (dy, dx), z) recomputed from the detector quantities, or None where they are
        incomplete (wavelength, detector distance and pixel size; far field: z is None)."""
        return _derive_sampling(self.geometry_kind, self.wavelength, self.detector_distance,
                                self.detector_pixel_size, self.focus_distance, self.patch_shape)

    def forward_kwargs(self, z=None) -> dict:
        """Keywords for `cuptycho.forward` / the model: propagator and geometry (z overridable)."""
        kw = {"propagator": self.propagator}
        if self.propagator in geometry.Z_PROPAGATORS:
            kw.update(z=self.z if z is None else z, wavelength=self.wavelength, pixel_size=self.pixel_size,
                      padding=self.padding)
        return kw

    def describe(self) -> str:
        """A few lines on the patterns, scan and geometry (what `cuptycho.io.info` prints)."""
        n, ny, nx = self.data.shape
        lines = [f"{n} patterns of {ny} x {nx} ({self.data.dtype}), total {float(self.data.sum(dtype=np.float64)):.4g} "
                 f"counts, max {float(self.data.max()):.6g}"]
        if self.mask is not None:
            m = np.asarray(self.mask)
            lines.append(f"mask {m.shape}: {int(np.sum(m == 0))} masked pixel(s)")
        lines.append(f"geometry: {self.geometry_kind}, propagator {self.propagator}")
        if self.wavelength is not None:
            lines.append(f"wavelength {self.wavelength:.6g} m, energy {self.energy_ev / 1e3:.6g} keV "
                         f"({self.energy:.6g} J)")
        if self.detector_distance is not None:
            lines.append(f"detector distance {self.detector_distance:.6g} m")
        if self.detector_pixel_size is not None:
            lines.append("detector pixel size {:.6g} x {:.6g} m".format(*self.detector_pixel_size))
        if self.geometry_kind == "nearfield" and self.focus_distance is not None:
            lines.append(f"focus-to-sample {self.focus_distance:.6g} m: magnification {self.magnification:.6g}, "
                         f"effective distance {self.effective_distance:.6g} m")
        if self.pixel_size is not None:
            dy, dx = geometry.pixel_pair(self.pixel_size)
            lines.append(f"sample pixel size {dy:.6g} x {dx:.6g} m")
        if self.z is not None:
            lines.append(f"propagation distance z {self.z:.6g} m")
        ext = self.positions.max(axis=0) - self.positions.min(axis=0)
        lines.append(f"scan extent {ext[0]:.4g} x {ext[1]:.4g} object pixels; object {self.obj_shape}")
        if self.probe is not None:
            lines.append(f"probe guess {np.shape(self.probe)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ construction from a measurement

    @classmethod
    def from_measurement(cls, data, *, detector_pixel_size, detector_distance, wavelength=None, energy=None,
                         geometry_kind="farfield", focus_distance=None, positions_m=None, positions=None,
                         propagator=None, **kwargs) -> "Dataset":
        """A dataset whose sampling is derived from the detector quantities of an experiment.

        Parameters
        ----------
        data : (J, Ny, Nx) real, >= 0
            Intensities; the far field's zero frequency at (Ny//2, Nx//2) (see `fftshift_patterns`).
        detector_pixel_size : float or (py, px)
            Detector pixel size, metres.
        detector_distance : float
            Sample-to-detector distance z2, metres.
        wavelength, energy : float
            Exactly one: wavelength in metres or photon energy in joules (``lambda = h c / E``).
        geometry_kind : {"farfield", "nearfield"}
            Far field: sample pixel size ``lambda z2 / (N p)``. Near field: ``p / M`` and propagation
            distance ``z2 / M`` with ``M = (z1 + z2) / z1`` (``M = 1`` without `focus_distance`).
        focus_distance : float, optional
            Focus-to-sample distance z1 (near field, divergent beam), metres.
        positions_m : (J, 2) float, optional
            Probe positions (y, x) in metres along the object's axes (see `translations_to_positions`
            for CXI sample translations); converted to pixels by the derived pixel size.
        positions : (J, 2) float, optional
            Positions already in object pixels (they win over `positions_m`, which is then only
            recorded). One of `positions` and `positions_m` is required.
        propagator : str, optional
            Default "farfield" in the far field, "angular_spectrum" in the near field.
        **kwargs
            Any other `Dataset` field (mask, padding, obj_shape, probe, margin, metadata, ...).

        Returns
        -------
        Dataset
            With `pixel_size`, `z` and `positions` derived and the detector quantities recorded.
        """
        if (wavelength is None) == (energy is None):
            raise ValueError("give exactly one of wavelength (m) and energy (J)")
        wl = energy_to_wavelength(energy) if wavelength is None else \
            validation.real_number("wavelength", wavelength, low=0, low_open=True)
        validation.choice("geometry_kind", geometry_kind, GEOMETRY_KINDS)
        data = np.asarray(data)
        if data.ndim != 3:
            raise ValueError(f"data must have shape (J, Ny, Nx), got {data.shape}")
        if propagator is None:
            propagator = "farfield" if geometry_kind == "farfield" else "angular_spectrum"
        if geometry_kind == "farfield" and focus_distance is not None:
            raise ValueError("focus_distance (Fresnel scaling) only applies to the near-field geometry")
        detector_pixel_size = geometry.pixel_pair(detector_pixel_size, "detector_pixel_size")
        detector_distance = validation.real_number("detector_distance", detector_distance, low=0, low_open=True)
        pixel_size, z = _derive_sampling(geometry_kind, wl, detector_distance, detector_pixel_size,
                                         focus_distance, data.shape[1:])
        if positions is None:
            if positions_m is None:
                raise ValueError("give the scan as positions_m (metres) or positions (object pixels)")
            pm = np.asarray(positions_m, dtype=np.float64)
            if pm.ndim != 2 or pm.shape[1] != 2:
                raise ValueError(f"positions_m must have shape (J, 2) (y, x in metres), got {pm.shape}")
            positions = pm / np.asarray(pixel_size)
        return cls(data=data, positions=positions, propagator=propagator, wavelength=wl, pixel_size=pixel_size,
                   z=z, detector_distance=detector_distance, detector_pixel_size=detector_pixel_size,
                   geometry_kind=geometry_kind, focus_distance=focus_distance, positions_m=positions_m, **kwargs)

    def replace(self, **changes) -> "Dataset":
        """A copy with `changes` applied (validated again); arrays not changed are shared."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- preprocessing (arrays)

def _float(a) -> np.ndarray:
    """Intensities as floating point: float32 for integer input (exact to 2^24 counts), else as given."""
    a = np.asarray(a)
    return a if a.dtype.kind == "f" else a.astype(np.float32)


def _pair(value, name) -> tuple[int, int]:
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or not np.issubdtype(arr.dtype, np.integer) or np.any(arr < 1):
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return int(arr[0]), int(arr[1])


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
    a = _float(x)
    n_negative = int(np.count_nonzero(a < 0))
    if not n_negative:
        return a
    warnings.warn(f"{what}: {n_negative} negative value(s) (min {float(a.min()):g}) clipped to 0",
                  NegativeCountsWarning, stacklevel=2)
    return np.maximum(a, 0, dtype=a.dtype)


def _dark_frame(dark, frame_shape) -> np.ndarray:
    d = _float(dark)
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
    a = _float(x.data if isinstance(x, Dataset) else x)
    out = (a - _dark_frame(dark, a.shape[-2:])).astype(a.dtype, copy=False)
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
    if method != "mass":
        raise ValueError(f"centre method must be 'mass' or 'max', got {method!r}")
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
    (fy, fx), (ny, nx) = frame_shape, _pair(shape, "crop shape")
    cy, cx = (fy // 2, fx // 2) if center is None else (int(center[0]), int(center[1]))
    y0, x0 = cy - ny // 2, cx - nx // 2
    if y0 < 0 or x0 < 0 or y0 + ny > fy or x0 + nx > fx:
        raise ValueError(f"a {ny} x {nx} crop centred on ({cy}, {cx}) does not fit in {fy} x {fx} patterns "
                         f"(window rows {y0}..{y0 + ny - 1}, columns {x0}..{x0 + nx - 1})")
    return y0, x0


def _crop_array(a, window, shape):
    (y0, x0), (ny, nx) = window, _pair(shape, "crop shape")
    return np.asarray(a)[..., y0:y0 + ny, x0:x0 + nx]


def _bin_array(a, factor, reduce="sum"):
    by, bx = _pair(factor, "bin factor")
    a = np.asarray(a)
    ny, nx = a.shape[-2] // by, a.shape[-1] // bx
    if ny == 0 or nx == 0:
        raise ValueError(f"cannot bin {a.shape[-2]} x {a.shape[-1]} patterns by {by} x {bx}")
    a = a[..., :ny * by, :nx * bx].reshape(*a.shape[:-2], ny, by, nx, bx)
    if reduce == "sum":
        return a.sum(axis=(-3, -1), dtype=_float(a[..., :0, 0, :0, 0]).dtype)
    if reduce == "min":
        return a.min(axis=(-3, -1))
    return a.max(axis=(-3, -1))


def saturated_mask(patterns, saturation) -> np.ndarray:
    """Weights (same shape as `patterns`, float32): 0 where a value is >= `saturation`, 1 elsewhere."""
    level = validation.real_number("saturation", saturation)
    return (np.asarray(patterns) < level).astype(np.float32)


# --------------------------------------------------------------------------- preprocessing (datasets)

def _resampled(ds: Dataset, data, mask, ratio, detector_factor) -> Dataset:
    """`ds` with new patterns whose sample-plane pixel is `ratio` x the old one (per axis)."""
    ratio = np.asarray(ratio, dtype=np.float64)
    dps = None if ds.detector_pixel_size is None else tuple((np.asarray(ds.detector_pixel_size) * detector_factor).tolist())
    pixel_size = ds.pixel_size
    derived = _derive_sampling(ds.geometry_kind, ds.wavelength, ds.detector_distance, dps, ds.focus_distance,
                               data.shape[1:])
    if derived is not None:
        pixel_size = derived[0]
    elif pixel_size is not None:
        pixel_size = tuple((np.asarray(geometry.pixel_pair(pixel_size)) * ratio).tolist())
    if ds.positions_m is not None and pixel_size is not None:
        positions = ds.positions_m / np.asarray(geometry.pixel_pair(pixel_size))
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
    out = _crop_array(a, window, shape)
    if not isinstance(x, Dataset):
        return out.copy()
    mask = None if x.mask is None else _crop_array(x.mask, window, shape).copy()
    ratio = _sampling_ratio(x.geometry_kind, x.patch_shape, out.shape[1:], 1)
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
    out = _bin_array(_float(a), factor, "sum")
    if not isinstance(x, Dataset):
        return out
    f = np.asarray(_pair(factor, "bin factor"), dtype=np.float64)
    mask = None if x.mask is None else _bin_array(np.asarray(x.mask), factor, "min")
    ratio = _sampling_ratio(x.geometry_kind, x.patch_shape, out.shape[1:], f)
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
