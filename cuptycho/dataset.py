"""A ptychography dataset as the reconstruction engine sees it: patterns, scan, geometry.

Readers of measured files (CXI, HDF5, TIFF) build this; the simulator's `Experiment.dataset()`
does too, with the truth attached so the engine can report errors while it runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import geometry, validation


@dataclass
class Dataset:
    """Measured intensities and what is known about how they were taken.

    data : (J, Ny, Nx) real, >= 0
        Intensities (photon counts); zero frequency at (Ny//2, Nx//2) for the far field.
    positions : (J, 2) float64
        Nominal (y, x) top-left corners of each patch in object pixels.
    mask : (Ny, Nx) or (J, Ny, Nx), optional
        Detector weights (1 valid, 0 ignored).
    propagator, wavelength, pixel_size, z, padding
        Propagation model, as for `cuptycho.forward`; z is the nominal distance (metres).
    obj_shape : (H, W), optional
        Object size; by default the scan's extent plus the probe plus `margin` pixels each side.
    probe : (K, Ny, Nx) complex, optional
        An initial probe guess (an aperture model, a previous reconstruction).
    truth : dict, optional
        Known "object", "probe", "positions", "z" (simulations), for metrics while running.
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

    @property
    def n_patterns(self) -> int:
        return self.data.shape[0]

    @property
    def patch_shape(self) -> tuple:
        return self.data.shape[1:]

    def forward_kwargs(self, z=None) -> dict:
        """Keywords for `cuptycho.forward` / the model: propagator and geometry (z overridable)."""
        kw = {"propagator": self.propagator}
        if self.propagator in geometry.Z_PROPAGATORS:
            kw.update(z=self.z if z is None else z, wavelength=self.wavelength, pixel_size=self.pixel_size,
                      padding=self.padding)
        return kw
