"""Gauss-Newton steps for the scan positions (`position_step = "newton"` in the gradient engine).

Adam's step is about lr pixels whatever the gradient's size: a position whose gradient is mostly noise
(a weakly textured region, or an object still moving) takes lr-sized steps in random directions and
random-walks; on the Siemens star at lr 1 the positions walked 3.8 px RMS from where the data put them
with the loss unchanged. A Gauss-Newton step divides the gradient by the curvature the data give that
position, so it is in pixels by construction, large where the data pin the position and small where
they do not.

Curvature. With psi_j = P O(p_j + r) and a perturbation dp, d psi = P (grad O . dp); for the gaussian
amplitude loss sum_pixels (|Psi| - sqrt d)^2 (unitary transform) the Gauss-Newton curvature along
axis a is 2 sum_pixels (d|Psi| / dp_a)^2, and d|Psi| is the part of F(d psi) in phase with Psi: on
average half its power, so h_a = sum_r sum_k |P_k(r)|^2 sum_m |D_a O_m(p_j + r)|^2 per unit of
loss, divided by the batch size like the loss. The poisson and weighted losses have twice the
gaussian's curvature at a fit (l'' = 1 / I in intensity: 4 (d|Psi|)^2); the intensity loss's
curvature scales with the counts and has no such form, so it is refused.

The maps sum_m |D_a O_m|^2 (forward differences) and every position's curvature are formed once per
epoch (the object and the positions move little within one): the maps' probe-power-weighted sums over
every patch at once, by one FFT correlation of the object grid (`patch_means`; y in the real part,
x in the imaginary part of one complex map), at the positions rounded to whole pixels. A floor
of `DAMPING` times the curvature a position would have over an object of average texture keeps the
step finite where the object is flat; every step is clipped to the group's lr (pixels).
"""
from __future__ import annotations

import numpy as np

from . import backend as backends
from .patch_means import PatchMeans

# Levenberg-Marquardt floor: this fraction of a position's curvature over the object's mean texture.
DAMPING = 0.1
# Gauss-Newton curvature relative to the gaussian loss's, at a fit (see the module text).
LOSS_CURVATURE = {"gaussian": 1.0, "poisson": 2.0, "weighted": 2.0}


def check_losses(losses) -> None:
    """ValueError unless every loss of a run has a Gauss-Newton curvature here."""
    bad = sorted(set(losses) - set(LOSS_CURVATURE))
    if bad:
        raise ValueError(f"position_step = 'newton' needs the curvature of the loss, known for "
                         f"{', '.join(LOSS_CURVATURE)}; the {bad[0]!r} loss's scales with the counts: use "
                         "position_step = 'adam' with it")


def texture_maps(xp, obj):
    """(H, W) complex: sum over object modes of |D_y O|^2 + 1j |D_x O|^2 (forward differences, 0 on the last
    row / column), and the mean of each over the object (the damping's reference)."""
    dy = xp.sum(xp.abs(obj[:, 1:, :] - obj[:, :-1, :]) ** 2, axis=0)
    dx = xp.sum(xp.abs(obj[:, :, 1:] - obj[:, :, :-1]) ** 2, axis=0)
    maps = xp.zeros(obj.shape[1:], dtype=obj.dtype)
    maps[:-1, :] += dy
    maps[:, :-1] += 1j * dx
    return maps, np.array([float(xp.mean(dy)), float(xp.mean(dx))])


class GaussNewtonPositions:
    """Mixin of `engine.Reconstruction`: the Gauss-Newton position step (needs obj, probe, device, xp, epoch,
    divergences, loss_scale, shot_scale, correction, the batch helpers)."""

    _curvature = None          # ((epoch, divergences), (n, 2) curvature of every position, floor included)

    def curvature(self):
        """(n, 2) Gauss-Newton curvature of every position and axis per unit of the summed loss, floor included:
        formed once per epoch (and after a rollback)."""
        key = (self.epoch, self.divergences)
        if self._curvature is not None and self._curvature[0] == key:
            return self._curvature[1]
        xp = self.xp
        maps, mean = texture_maps(xp, self.obj)
        power = xp.sum(xp.abs(self.probe) ** 2, axis=0)
        means = PatchMeans(self.positions(), power, maps.shape)
        sums = backends.to_host(means(maps)) * means.total
        h = np.stack([sums.real, sums.imag], axis=1) + DAMPING * means.total * mean
        self._curvature = (key, h)
        return h

    def newton_positions(self, idx, grad, epoch, n_total):
        """One Gauss-Newton step of the rows `idx` of the corrections, from the (scaled) gradient of the loss
        averaged over `n_total` patterns (the whole minibatch, of which idx may be one rank's part), each
        component clipped to the positions group's lr in pixels."""
        h = self.curvature()[idx] * (self.loss_scale * LOSS_CURVATURE[self.loss_name(epoch)] / n_total)
        if self.shot_scale is not None:                        # I = s I_coh: the curvature scales with s
            h = h * self.shot_scale[idx, None]
        limit = self.opt["positions"].lr
        self.correction[idx] += np.clip(-grad / h, -limit, limit)
