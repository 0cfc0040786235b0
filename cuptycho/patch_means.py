"""Probe-weighted means of an object-grid field over every patch of a scan, by one FFT correlation.

S f = sum_r w(r) f(p_j + r) / sum_r w(r) at the rounded positions p_j, for a weight w on the patch
(the probe's power): the cost is two FFTs of the object grid, whatever the number of positions and
however much their patches overlap, where sampling every patch costs positions x patch pixels. Used
for the far-field starting object (`initial.object_from_data`, with the adjoint S^T) and for the
positions' Gauss-Newton curvature (`position_step`). Array-generic: NumPy or CuPy, the namespace of
the weight.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from .backend import array_module


class PatchMeans:
    """S and S^T for positions (J, 2) (host, rounded to whole pixels), weights w (Ny, Nx) >= 0 and an object of
    `shape` (H, W); the correlation runs on a grid padded by the patch, so nothing wraps."""

    def __init__(self, positions, weight, shape):
        self.xp = xp = array_module(weight)
        self.shape = tuple(shape)
        self.total = float(xp.sum(weight))
        # padded by the patch, up to sizes the FFT handles fast (an object of 700 + 128 = 828 = 4 x 9 x 23 px
        # took 3x as long as 864)
        self.grid = tuple(scipy.fft.next_fast_len(int(n + p)) for n, p in zip(self.shape, weight.shape))
        self.fft = scipy.fft if xp is np else xp.fft                        # SciPy's: float32 stays float32
        self.weights = self.fft.fft2(weight / self.total, s=self.grid)
        corner = np.rint(np.asarray(positions, dtype=np.float64)).astype(np.int64).T
        self.corner = tuple(xp.asarray(c) for c in corner)

    def __call__(self, field):
        """(J,) the weighted patch means of `field` (H, W), real or complex (the result is complex then)."""
        xp = self.xp
        corr = self.fft.ifft2(self.fft.fft2(field, s=self.grid) * xp.conj(self.weights))
        corr = corr if xp.iscomplexobj(field) else corr.real
        return corr[self.corner]

    def adjoint(self, values):
        """(H, W) real: each value placed back as w around its position (values real, (J,))."""
        xp = self.xp
        impulses = xp.zeros(self.grid)
        xp.add.at(impulses, self.corner, values)
        return self.fft.ifft2(self.fft.fft2(impulses) * self.weights).real[:self.shape[0], :self.shape[1]]
