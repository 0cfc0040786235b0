"""A ptychography dataset as the reconstruction engine sees it: patterns, scan, geometry.

Readers of measured files (`cuptycho.io`: CXI, HDF5, TIFF, NumPy) build this; the simulator's
`Experiment.dataset()` does too, with the truth attached so the engine can report errors while it
runs. `Dataset.from_measurement` derives the model's sampling (sample-plane pixel size, propagation
distance, positions in object pixels) from what an experiment records.

This module is the container only. The far- and near-field geometry, Fresnel scaling, units and the
sign conventions of positions and CXI translations are in `cuptycho.units`; detector preprocessing
(dark subtraction, cropping, binning, masking, fftshift) that returns new datasets is in
`cuptycho.preprocess`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from . import geometry, patterns, validation
from .backend import array_module, to_host
from .units import (GEOMETRY_KINDS, default_propagator, derive_sampling, energy_to_wavelength, fresnel_scaling,
                    geometry_kind_of, joule_to_ev, wavelength_to_energy)


# --------------------------------------------------------------------------- the dataset

@dataclass
class Dataset:
    """Measured intensities and what is known about how they were taken.

    Parameters
    ----------
    data : (J, Ny, Nx) real, >= 0
        Intensities (photon counts); zero frequency at (Ny//2, Nx//2) for the far field. Or
        `cuptycho.patterns.StreamedPatterns`, rows read from the file as the engine needs them (a
        reader's ``stream`` option); `np.asarray(data)` then loads them all.
    positions : (J, 2) float64
        Nominal (y, x) top-left corners of each patch in object pixels. Without `obj_shape` they are
        shifted so the scan starts `margin` pixels inside the object, by `position_offset`.
    mask : (Ny, Nx) or (J, Ny, Nx), optional
        Detector weights (1 valid, 0 ignored).
    propagator, wavelength, pixel_size, z, padding
        Propagation model, as for `cuptycho.forward`; `pixel_size` is the sample-plane pixel size
        (m), `z` the nominal (effective) propagation distance (m), `wavelength` in metres.
    obj_shape : (H, W), optional
        Object size; by default the scan's extent plus the probe plus `margin` pixels each side.
        Bounded before anything is allocated (`validation.scan_extent`, `validation.object_extent`):
        a scan, or an object, more than `validation.SCAN_COVERAGE` times the pixels the patterns
        measure is a ValueError naming the positions far from the others, or obj_shape.
    probe : (K, Ny, Nx) complex, optional
        An initial probe guess (an aperture model, a previous reconstruction).
    truth : dict, optional
        Known "object", "probe", "positions", "z" (simulations), for metrics while running.
    margin : int
        Pixels of object around the scan when `obj_shape` is derived (at most `SCAN_COVERAGE` times
        the probe's size).
    detector_distance : float, optional
        Sample-to-detector distance z2 (m), as recorded.
    detector_pixel_size : float or (py, px), optional
        Detector pixel size (m), after any binning.
    geometry_kind : {"farfield", "nearfield"}, optional
        Kind of experiment (`cuptycho.units`); by default "farfield" for the far-field propagator and
        "nearfield" otherwise.
    focus_distance : float, optional
        Focus-to-sample distance z1 (m) of a divergent (Fresnel-scaled) near-field geometry; None for
        a parallel beam.
    positions_m : (J, 2) float64, optional
        Probe positions (y, x) in metres along the object's axes (`cuptycho.units`), as measured.
    metadata : dict
        Anything else a reader found (source file, basis vectors, entry, ...); not used by the engine.
    position_offset : (dy, dx), set by the constructor
        Pixels added to the given positions when `obj_shape` was derived (given + offset = `positions`);
        None when the positions were taken as given.

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
    position_offset: tuple | None = None

    def __post_init__(self):
        # arrays on a GPU (CuPy) come to the host here, once, explicitly: np.asarray refuses them, and the
        # engine moves what it needs to its own device
        for name in ("data", "positions", "mask", "probe", "positions_m"):
            value = getattr(self, name)
            if value is not None and not patterns.is_streamed(value) and array_module(value) is not np:
                setattr(self, name, to_host(value))
        if not patterns.is_streamed(self.data):      # streamed patterns are read as needed (cuptycho.patterns)
            self.data = np.asarray(self.data)
        if self.data.ndim != 3:
            raise ValueError(f"data must have shape (J, Ny, Nx), got {self.data.shape}")
        n, ny, nx = self.data.shape
        if 0 in self.data.shape:
            raise ValueError(f"data must hold at least one pattern of at least one pixel, got shape {self.data.shape}")
        pos = np.asarray(self.positions, dtype=np.float64)
        if pos.shape != (n, 2):
            raise ValueError(f"positions must have shape ({n}, 2) (one (y, x) per pattern), got {pos.shape}")
        validation.propagation(self.propagator, self.z, self.wavelength, self.pixel_size, self.padding)
        # bound the object before anyone allocates it: a stray position or an absurd obj_shape is an error
        self.margin = validation.margin(self.margin, (ny, nx))
        validation.scan_extent(pos, (ny, nx), pixel_size=self.pixel_size)
        if self.obj_shape is not None:
            self.obj_shape = validation.object_extent(self.obj_shape, n, (ny, nx), self.margin)
        else:
            # shift the scan so it starts at the margin, and size the object to hold it
            shift = self.margin - pos.min(axis=0)
            pos = pos + shift
            self.position_offset = (float(shift[0]), float(shift[1]))
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
            self.geometry_kind = geometry_kind_of(self.propagator)
        validation.choice("geometry_kind", self.geometry_kind, GEOMETRY_KINDS)
        if (self.geometry_kind == "farfield") != (self.propagator == "farfield"):
            raise ValueError(f"geometry_kind {self.geometry_kind!r} does not match the {self.propagator!r} "
                             "propagator (far field needs 'farfield'; near field 'angular_spectrum' or 'fresnel')")
        if self.wavelength is not None:
            self.wavelength = validation.positive_number("wavelength", self.wavelength)
        if self.detector_distance is not None:
            self.detector_distance = validation.positive_number("detector_distance", self.detector_distance)
        if self.detector_pixel_size is not None:
            self.detector_pixel_size = validation.length_pair("detector_pixel_size", self.detector_pixel_size)
        if self.focus_distance is not None:
            if self.geometry_kind != "nearfield":
                raise ValueError("focus_distance (Fresnel scaling) only applies to the near-field geometry")
            self.focus_distance = validation.positive_number("focus_distance", self.focus_distance)
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
        return derive_sampling(self.geometry_kind, self.wavelength, self.detector_distance,
                                self.detector_pixel_size, self.focus_distance, self.patch_shape)

    def forward_kwargs(self, z=None) -> dict:
        """Keywords for `cuptycho.forward` / the model: propagator and geometry (z overridable)."""
        kw = {"propagator": self.propagator}
        if self.propagator in geometry.Z_PROPAGATORS:
            kw.update(z=self.z if z is None else z, wavelength=self.wavelength, pixel_size=self.pixel_size,
                      padding=self.padding)
        return kw

    @property
    def streamed(self) -> bool:
        """Whether the patterns are read from their file as needed (`cuptycho.patterns`) rather than held."""
        return patterns.is_streamed(self.data)

    def describe(self) -> str:
        """A few lines on the patterns, scan and geometry (what `cuptycho.io.info` prints)."""
        n, ny, nx = self.data.shape
        lines = [f"{n} patterns of {ny} x {nx} ({self.data.dtype}{', streamed' if self.streamed else ''}), total "
                 f"{float(patterns.frame_sums(self.data).sum()):.4g} counts, max {patterns.maximum(self.data):.6g}"]
        if self.mask is not None and patterns.is_streamed(self.mask):
            lines.append(f"mask {self.mask.shape}: per pattern, streamed")
        elif self.mask is not None:
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
            dy, dx = validation.length_pair("pixel_size", self.pixel_size)
            lines.append(f"sample pixel size {dy:.6g} x {dx:.6g} m")
        if self.z is not None:
            lines.append(f"propagation distance z {self.z:.6g} m")
        ext = self.positions.max(axis=0) - self.positions.min(axis=0)
        lines.append(f"scan extent {ext[0]:.4g} x {ext[1]:.4g} object pixels; object {self.obj_shape}")
        if self.position_offset is not None:
            lines.append(f"positions shifted by ({self.position_offset[0]:.6g}, {self.position_offset[1]:.6g}) px "
                         f"so the scan starts {self.margin} px inside the object (position_offset)")
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
            Intensities; the far field's zero frequency at (Ny//2, Nx//2) (see
            `cuptycho.preprocess.fftshift_patterns`).
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
            Probe positions (y, x) in metres along the object's axes (see
            `cuptycho.units.translations_to_positions` for CXI sample translations); converted to
            pixels by the derived pixel size.
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
            validation.positive_number("wavelength", wavelength)
        validation.choice("geometry_kind", geometry_kind, GEOMETRY_KINDS)
        data = data if patterns.is_streamed(data) else to_host(data)
        positions_m = None if positions_m is None else to_host(positions_m)
        if data.ndim != 3:
            raise ValueError(f"data must have shape (J, Ny, Nx), got {data.shape}")
        if propagator is None:
            propagator = default_propagator(geometry_kind)
        if geometry_kind == "farfield" and focus_distance is not None:
            raise ValueError("focus_distance (Fresnel scaling) only applies to the near-field geometry")
        detector_pixel_size = validation.length_pair("detector_pixel_size", detector_pixel_size)
        detector_distance = validation.positive_number("detector_distance", detector_distance)
        pixel_size, z = derive_sampling(geometry_kind, wl, detector_distance, detector_pixel_size,
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

