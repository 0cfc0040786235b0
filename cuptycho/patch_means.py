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
        self.weight = weight / self.total
        self.real_weights = self.fft.rfft2(self.weight, s=self.grid)      # real fields: half the spectrum
        self.weights = None                                                # complex fields: made when asked
        corner = np.rint(np.asarray(positions, dtype=np.float64)).astype(np.int64).T
        self.corner = tuple(xp.asarray(c) for c in corner)

    def __call__(self, field):
        """(J,) the weighted patch means of `field` (H, W), real or complex (the result is complex then)."""
        xp, fft = self.xp, self.fft
        if xp.iscomplexobj(field):
            if self.weights is None:
                self.weights = fft.fft2(self.weight, s=self.grid)
            return fft.ifft2(fft.fft2(field, s=self.grid) * xp.conj(self.weights))[self.corner]
        return fft.irfft2(fft.rfft2(field, s=self.grid) * xp.conj(self.real_weights), s=self.grid)[self.corner]

    def adjoint(self, values):
        """(H, W) real: each value placed back as w around its position (values real, (J,))."""
        xp = self.xp
        impulses = xp.zeros(self.grid)
        xp.add.at(impulses, self.corner, values)
        spread = self.fft.irfft2(self.fft.rfft2(impulses) * self.real_weights, s=self.grid)
        return spread[:self.shape[0], :self.shape[1]]
