"""A deterministic virtual ptychography experiment.

`simulate` assembles a noisy data set with its ground truth (`Experiment`) from small pieces,
each usable on its own and re-exported here:

- objects from the test images bundled with scikit-image (`object_from_images`, `object_modes`;
  module `objects`, images in `images`);
- probes (`probe_aperture`, `probe_focused`, `probe_from_images`) and orthogonal mixed-state
  modes (`probe_modes`, `default_power_fractions`, `probe_diameter`; module `probes`, whose
  functions name the unit of each length);
- scan patterns (`raster_scan`, `fermat_spiral`, `concentric_rings`, `step_from_overlap`;
  module `scans`);
- the geometry (`Geometry`), the experiment (`Experiment`) and `preset` (settings in `PRESETS`).

`cuptycho.simulate` is this module; the function of the same name is `cuptycho.simulate.simulate`.

Conventions (MATH.md): arrays are C order, batch first; a probe is (K, Ny, Nx), an object
(Mo, H, W); positions are (J, 2) float64, (y, x) of each patch's top-left corner in object
pixels. Scan patterns come centred on 0 and in pixels; `simulate` shifts them into the object.
Probes are centred on pixel (Ny//2, Nx//2), the zero frequency of the far-field detector.

Randomness: every random sub-step draws from its own child of `np.random.SeedSequence(seed)`,
so changing one option (say the read-out noise) never reshuffles another (say the scan jitter).
No function downloads anything: only images shipped inside the scikit-image wheel are used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import geometry, probes
from .api import forward
from .dataset import Dataset
from .images import IMAGES
from .objects import object_from_images, object_modes
from .probes import default_power_fractions
from .probes import diameter_px as probe_diameter
from .probes import modes as probe_modes
from .scans import concentric_rings, fermat_spiral, raster_scan, scan_positions, step_from_overlap, step_pair
from .validation import choice, complex_dtype, integer, integer_pair, real_number, seed_sequence

__all__ = [
    "IMAGES", "PRESETS", "Geometry", "Experiment",
    "object_from_images", "object_modes",
    "probe_aperture", "probe_focused", "probe_from_images", "probe_modes", "probe_diameter",
    "default_power_fractions", "step_from_overlap", "raster_scan", "fermat_spiral", "concentric_rings",
    "simulate", "preset",
]

PROBE_KINDS = ("focused", "aperture", "images")


# --------------------------------------------------------------------------- probes, with simulate's keywords
# The keywords of these three are the keys of `probe_options` (also in a TOML [simulate] table).

def probe_aperture(shape, *, radius, z, wavelength, pixel_size, dtype=np.complex128):
    """A circular aperture of `radius` metres propagated a distance z: `probes.aperture_m`.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    radius : float
        Aperture radius in metres (> 0).
    z, wavelength, pixel_size, dtype
        As in `probes.aperture_m` (metres).

    Returns
    -------
    probe : (Ny, Nx) dtype
    """
    return probes.aperture_m(shape, radius_m=radius, z=z, wavelength=wavelength, pixel_size=pixel_size,
                             dtype=dtype)


def probe_focused(shape, *, width, defocus=0.0, wavelength=None, pixel_size=None, dtype=np.complex128):
    """A focused Gaussian spot of intensity FWHM `width` pixels, `defocus` metres from its focus: `probes.focused`.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    width : float
        Intensity FWHM in pixels (> 0).
    defocus : float
        Metres; non-zero needs `wavelength` and `pixel_size`.
    wavelength, pixel_size, dtype
        As in `probes.focused` (metres).

    Returns
    -------
    probe : (Ny, Nx) dtype
    """
    return probes.focused(shape, width_px=width, defocus_m=defocus, wavelength=wavelength, pixel_size=pixel_size,
                          dtype=dtype)


def probe_from_images(shape, magnitude="gravel", phase="grass", *, amplitude_range=(0.0, 1.0),
                      phase_range=(-np.pi, np.pi), envelope=None, dtype=np.complex128):
    """A structured (diffuser-like) probe from two images: `probes.from_images`.

    Parameters
    ----------
    shape : int or (2,) int
        (Ny, Nx) of the probe.
    magnitude, phase, amplitude_range, phase_range, dtype
        As in `object_from_images`.
    envelope : float, optional
        Intensity FWHM in pixels of a Gaussian envelope centred on (Ny//2, Nx//2); None fills
        the window.

    Returns
    -------
    probe : (Ny, Nx) dtype
    """
    return probes.from_images(shape, magnitude, phase, amplitude_range=amplitude_range, phase_range=phase_range,
                              envelope_px=envelope, dtype=dtype)


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
        choice("propagator", self.propagator, geometry.PROPAGATORS)
        object.__setattr__(self, "wavelength", real_number("wavelength", self.wavelength, low=0.0, low_open=True))
        name = "detector_distance" if self.propagator == "farfield" else "z"
        low_open = self.propagator == "farfield"
        distance = real_number(name, self.detector_distance, low=0.0 if low_open else None, low_open=low_open)
        object.__setattr__(self, "detector_distance", distance)
        object.__setattr__(self, "detector_pixel_size",
                           geometry.pixel_pair(self.detector_pixel_size, "detector_pixel_size"))
        object.__setattr__(self, "shape", integer_pair("shape", self.shape, low=2))

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
        Noise-free intensities (with the background and scales, when simulated).
    propagator, wavelength, pixel_size, z, z_start, padding, detector_distance,
    detector_pixel_size, photons, seed
        The settings; pixel_size is the sample-plane (dy, dx) in metres, z is None for the far
        field, z_start = z (1 + z_error).
    geometry : Geometry
    step : float
        Nominal scan step in pixels.
    read_noise, position_error, z_error : float
        The error settings used.
    background : (Ny, Nx) float64 or None
        The detector background in detector order (`simulate`'s background option), else None.
    scale : (J,) float64 or None
        The intensity factor of each pattern (scale_jitter), else None.
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
    background: np.ndarray | None = field(default=None, repr=False)
    scale: np.ndarray | None = field(default=None, repr=False)

    def forward_kwargs(self, *, start=False) -> dict:
        """Keywords for `cuptycho.forward` / `loss_and_grad`: propagator, z, wavelength, pixel_size, padding.

        With start=True, z is the perturbed `z_start` (a reconstruction's initial guess).
        """
        return {"propagator": self.propagator, "z": self.z_start if start else self.z,
                "wavelength": self.wavelength, "pixel_size": self.pixel_size, "padding": self.padding}

    def dataset(self):
        """The experiment as a reconstruction sees it: data, perturbed start positions and z, the
        object's size, and the truth (object, probe, positions, z) for metrics."""
        kw = self.forward_kwargs(start=True)
        geometry_kw = {} if self.propagator == "farfield" else {k: kw[k] for k in ("z", "wavelength", "pixel_size",
                                                                                    "padding")}
        return Dataset(data=self.data, positions=self.positions_start, propagator=self.propagator,
                       obj_shape=self.obj.shape[-2:], **geometry_kw,
                       truth={"object": self.obj, "probe": self.probe, "positions": self.positions, "z": self.z,
                              "background": self.background, "scale": self.scale})

    def measurement(self):
        """The experiment as a measurement file records it (`cuptycho simulate` writes this): the
        patterns, the nominal (perturbed) positions in pixels and metres, the geometry with its
        detector quantities (near field: the parallel-beam detector at the nominal z), no probe
        guess and no truth."""
        pixel = np.asarray(self.pixel_size, dtype=np.float64)
        common = dict(data=self.data, positions=self.positions_start, propagator=self.propagator,
                      obj_shape=tuple(self.obj.shape[-2:]), wavelength=self.wavelength, pixel_size=tuple(pixel),
                      positions_m=self.positions_start * pixel, metadata={"source": "cuptycho simulate"})
        if self.propagator == "farfield":
            return Dataset(**common, detector_distance=self.detector_distance,
                           detector_pixel_size=self.detector_pixel_size)
        return Dataset(**common, z=self.z_start, padding=self.padding, detector_distance=self.z_start,
                       detector_pixel_size=tuple(pixel), geometry_kind="nearfield")

    @property
    def n_positions(self) -> int:
        return int(self.positions.shape[0])

    def __repr__(self):
        return (f"Experiment(propagator={self.propagator!r}, obj={self.obj.shape} {self.obj.dtype}, "
                f"probe={self.probe.shape}, positions={self.positions.shape[0]}, photons={self.photons}, "
                f"z={self.z}, seed={self.seed})")


# --------------------------------------------------------------------------- simulate

_STREAMS = ("scan", "probe_modes", "object_modes", "position_error", "poisson", "read_noise", "shot_scale")


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
    choice("probe", kind, PROBE_KINDS)
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


def _probe_shape(probe, shape):
    """(Ny, Nx) from `shape`, else from a probe array, else (64, 64)."""
    if not isinstance(probe, str) and np.ndim(probe) != 2:
        raise ValueError(f"probe must be one of {PROBE_KINDS} or a complex (Ny, Nx) array, got shape {np.shape(probe)}")
    if not isinstance(probe, str) and shape is None:
        shape = np.shape(probe)
    shape = integer_pair("shape", (64, 64) if shape is None else shape, low=2)
    if not isinstance(probe, str) and np.shape(probe) != shape:
        raise ValueError(f"probe has shape {np.shape(probe)} but shape is {shape}")
    return shape


def _make_geometry(shape, propagator, wavelength, detector_distance, detector_pixel_size, z, pixel_size, padding,
                   z_error):
    """The Geometry; each keyword of the other regime (far / near field) must be left at its default."""
    choice("propagator", propagator, geometry.PROPAGATORS)
    if propagator == "farfield":
        for name, value in (("z", z), ("pixel_size", pixel_size)):
            if value is not None:
                raise ValueError(f"{name} is for the near-field propagators; the far-field sample pixel size "
                                 "follows from wavelength, detector_distance and detector_pixel_size")
        if np.any(np.asarray(padding) != 0):
            raise ValueError("padding is only used by the near-field propagators")
        if z_error:
            raise ValueError("z_error is only used by the near-field propagators (farfield has no z)")
        return Geometry(wavelength, 2.0 if detector_distance is None else detector_distance,
                        75e-6 if detector_pixel_size is None else detector_pixel_size, shape, propagator)
    for name, value in (("detector_distance", detector_distance), ("detector_pixel_size", detector_pixel_size)):
        if value is not None:
            raise ValueError(f"{name} is for the far field; give z and pixel_size for {propagator!r}")
    for name, value in (("z", z), ("pixel_size", pixel_size)):
        if value is None:
            raise ValueError(f"the {propagator} propagator needs {name} (metres)")
    return Geometry(wavelength, z, pixel_size, shape, propagator)


def _padding(padding):
    """A non-negative int, or a (py, px) pair of them."""
    pad = np.asarray(padding).reshape(-1)
    if pad.size not in (1, 2) or not np.issubdtype(pad.dtype, np.integer) or np.any(pad < 0):
        raise ValueError(f"padding must be a non-negative integer or a (py, px) pair, got {padding!r}")
    return int(pad[0]) if pad.size == 1 else (int(pad[0]), int(pad[1]))


def _place_scan(scan_pos, shape, position_error, seed):
    """Positions shifted into an object with a margin, the object shape, and perturbed start positions.

    The margin is 2 + ceil(3 sigma) pixels (sigma = position_error / sqrt(2) per axis); start
    positions still outside the valid range are clipped into it.
    """
    sigma = position_error / np.sqrt(2.0)
    margin = 2 + int(np.ceil(3.0 * sigma))
    positions = scan_pos - scan_pos.min(axis=0) + margin
    obj_shape = tuple(int(n) for n in np.array(shape) + np.ceil(positions.max(axis=0)).astype(int) + margin)
    limit = np.array(obj_shape, dtype=np.float64) - np.array(shape)
    err = np.random.default_rng(seed).standard_normal(positions.shape) * sigma
    return positions, obj_shape, np.clip(positions + err, 0.0, limit)


def _scaled_intensities(obj, probe_modes128, positions, photons, dtype, forward_kwargs):
    """The probe (dtype) scaled so the brightest pattern holds `photons` (None: unscaled), and its clean data."""
    if photons is not None:
        unscaled = forward(obj, probe_modes128.astype(dtype), positions, **forward_kwargs)
        brightest = float(np.max(np.sum(unscaled, axis=(-2, -1), dtype=np.float64)))
        if not np.isfinite(brightest) or brightest <= 0:
            raise ValueError("the simulated patterns carry no intensity; check the probe and the object")
        probe_modes128 = probe_modes128 * np.sqrt(photons / brightest)
    probe = probe_modes128.astype(dtype)
    return probe, forward(obj, probe, positions, **forward_kwargs)


def _detector(n_patterns, shape, coherent, background, scale_jitter, streams):
    """The detector model's truth: a background map (air scatter falling off from the centre, mean
    `background` x the mean coherent count per pixel) and scales per pattern (mean 1, RMS
    `scale_jitter`, kept >= 0.1), or None for each when its setting is 0."""
    b = s = None
    if background > 0:
        y, x = np.indices(shape, dtype=np.float64)
        r2 = ((y - shape[0] // 2) ** 2 + (x - shape[1] // 2) ** 2) / (min(shape) / 4) ** 2
        profile = 1.0 / (1.0 + r2)
        b = background * float(np.mean(coherent, dtype=np.float64)) * profile / profile.mean()
    if scale_jitter > 0:
        s = np.clip(1.0 + scale_jitter * np.random.default_rng(streams["shot_scale"]).standard_normal(n_patterns),
                    0.1, None)
        s /= s.mean()
    return b, s


def _measured(clean, photons, read_noise, streams):
    """float32 data: Poisson counts plus rounded, clipped read-out noise (photons None: the clean data)."""
    if photons is None:
        return clean.astype(np.float32)
    counts = np.random.default_rng(streams["poisson"]).poisson(clean.astype(np.float64)).astype(np.float64)
    if read_noise > 0:
        counts += np.random.default_rng(streams["read_noise"]).normal(0.0, read_noise, counts.shape)
        counts = np.clip(np.rint(counts), 0.0, None)
    return counts.astype(np.float32)


# Long for its docstring: the parameters are the keys of the TOML [simulate] table, documented here.
def simulate(*, shape=None, probe="focused", probe_options=None, n_probe_modes=1, power_fractions=None,
             magnitude="camera", phase="astronaut", amplitude_range=(0.5, 1.0), phase_range=(-np.pi / 2, np.pi / 2),
             n_object_modes=1, object_mode_shift=1.0, scan="raster", scan_size=(7, 7), step=None, overlap=0.7,
             jitter=0.0, propagator="farfield", wavelength=1.24e-10, detector_distance=None,
             detector_pixel_size=None, z=None, pixel_size=None, padding=0, photons=1e6, read_noise=0.0,
             position_error=0.0, z_error=0.0, background=0.0, scale_jitter=0.0, dtype=np.complex64,
             seed=0) -> Experiment:
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
    background : float >= 0
        A detector background added to every pattern before the noise, as a fraction of the mean
        coherent count per pixel: a map falling off from the detector's centre like air scatter,
        1 / (1 + (r / (N/4))^2) scaled to that mean (`Experiment.background`).
    scale_jitter : float >= 0
        RMS of an intensity factor per pattern (beam-flux changes), mean 1, each >= 0.1
        (`Experiment.scale`): I_j = scale_j I_coh,j + background.
    dtype : complex64 or complex128
        Precision of obj, probe and intensity_clean; data is always float32, positions float64.
    seed : int >= 0
        Everything random derives from it, one independent stream per sub-step.

    Returns
    -------
    experiment : Experiment
    """
    dtype = complex_dtype(dtype)
    streams = dict(zip(_STREAMS, seed_sequence(seed).spawn(len(_STREAMS))))

    # geometry and the scalar settings
    shape = _probe_shape(probe, shape)
    geom = _make_geometry(shape, propagator, wavelength, detector_distance, detector_pixel_size, z, pixel_size,
                          padding, z_error)
    z_error = real_number("z_error", z_error, low=-1.0, low_open=True)
    padding = _padding(padding)
    if photons is not None:
        photons = real_number("photons", photons, low=0.0, low_open=True)
    read_noise = real_number("read_noise", read_noise, low=0.0)
    if photons is None and read_noise > 0:
        raise ValueError("read_noise needs photons (photons=None means noise-free data)")
    position_error = real_number("position_error", position_error, low=0.0)
    jitter = real_number("jitter", jitter, low=0.0)
    background = real_number("background", background, low=0.0)
    scale_jitter = real_number("scale_jitter", scale_jitter, low=0.0)
    n_probe_modes = integer("n_probe_modes", n_probe_modes)
    n_object_modes = integer("n_object_modes", n_object_modes)

    # probe and its modes (complex128 until the end)
    probe0 = _make_probe(probe, shape, probe_options, geom, np.complex128)
    modes128 = probe_modes(probe0, n_probe_modes, power_fractions=power_fractions, seed=streams["probe_modes"])

    # scan, placed inside an object with a margin; perturbed start positions
    if step is None:
        step = step_from_overlap(probe_diameter(probe0), overlap)
    else:
        step_pair(step)
    scan_pos = scan_positions(scan, scan_size, step, jitter, streams["scan"])
    positions, obj_shape, positions_start = _place_scan(scan_pos, shape, position_error, streams["position_error"])

    # object and its modes
    obj0 = object_from_images(obj_shape, magnitude=magnitude, phase=phase, amplitude_range=amplitude_range,
                              phase_range=phase_range, dtype=np.complex128)
    objs = object_modes(obj0, n_object_modes, shift=object_mode_shift, seed=streams["object_modes"])

    # intensities scaled to the photon count, then noise
    kwargs = {"propagator": propagator, "z": geom.z, "wavelength": geom.wavelength,
              "pixel_size": geom.pixel_size, "padding": padding}
    obj_out = objs.astype(dtype)
    probe_out, clean = _scaled_intensities(obj_out, modes128, positions, photons, dtype, kwargs)
    true_background, true_scale = _detector(len(positions), shape, clean, background, scale_jitter, streams)
    if true_scale is not None:
        clean = (clean * true_scale[:, None, None]).astype(clean.dtype)
    if true_background is not None:
        clean = (clean + true_background).astype(clean.dtype)
    data = _measured(clean, photons, read_noise, streams)

    return Experiment(
        obj=obj_out, probe=probe_out, positions=positions, positions_start=positions_start, data=data,
        intensity_clean=clean, propagator=propagator, wavelength=geom.wavelength, pixel_size=geom.pixel_size,
        z=geom.z, z_start=None if geom.z is None else geom.z * (1.0 + z_error), padding=padding,
        detector_distance=geom.detector_distance, detector_pixel_size=geom.detector_pixel_size, photons=photons,
        seed=seed, geometry=geom,
        step=float(np.mean(step_pair(step))), read_noise=read_noise, position_error=position_error, z_error=z_error,
        background=true_background, scale=true_scale)


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
