"""Refinement of the focus-to-sample distance z1 of a divergent-beam near-field geometry ([focus]).

By the Fresnel scaling theorem a point source at distance z1 before the sample and a detector z2 behind
it record what a parallel beam would over the effective distance z_eff = z1 z2 / (z1 + z2) on sample
pixels of dx = p / M, with the magnification M = (z1 + z2) / z1 and p the detector pixel. A stage that
moved the sample by a length in metres moved it by M / p of those pixels. So z1 moves three things
together, and the gradient chains through all of them:

    z_eff(z1) = z2 / M,   dx(z1) = p / M,   positions = c + (M / M0) (I + A)(nominal - c) + corrections

(c the scan's centre, M0 the magnification at the given z1, A the [scan] model). Per unit of z1:
    dz_eff/dz1 = z2^2 / (z1 + z2)^2,   d ln dx / dz1 = z2 / (z1 (z1 + z2)),   d(M/M0)/dz1 = -z2 / (z1^2 M0);
the first two enter as one directional derivative of the propagator (`geometry.phase_derivative`), the
third through the position gradients. [z] refines the effective distance alone (pixel size and scan
fixed); the two are exclusive.

lr is relative: a step of lr moves z1 by about lr x the given z1.
"""
from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np

from .settings import FocusSearch, table

# the refined z1 that far from the given one is said at the end (the data disfavour the given value)
FOCUS_WARN = 0.05
# how far the scan may grow (in sample pixels) as z1 is refined: the object is padded so that the scan
# scaled by this about its centre stays on it (a z1 30 % too long at a large magnification means 1.3x)
FOCUS_GROWTH = 1.4


def padding_for_growth(nominal, obj_shape, patch_shape, growth=FOCUS_GROWTH):
    """(pad_y, pad_x): object pixels to add on each side so that the scan `nominal` (J, 2), scaled by `growth`
    about its centre, keeps every patch on the object."""
    centre = nominal.mean(axis=0)
    reach = np.abs(nominal - centre).max(axis=0) * growth
    pads = []
    for axis in range(2):
        low = centre[axis] - reach[axis]                       # the grown scan's extreme top-left corners
        high = centre[axis] + reach[axis] + patch_shape[axis]
        need = max(0.0, -low, high - obj_shape[axis])
        pads.append(int(np.ceil(need)) + (1 if need > 0 else 0))
    return tuple(pads)


class FocusRefinement:
    """Mixin of `engine.Reconstruction`: the "focus" group (present only when enabled)."""

    def _init_focus(self):
        ds = self.ds
        self.focus_rel = np.ones(1)                       # z1 = focus_distance * focus_rel
        self.focus_frozen = False                         # True while search_focus tries a fixed focus
        if not self.cfg.focus.enabled:
            if self.cfg.focus_search is not None:
                raise ValueError("focus_search scans the focus distance for [focus], but [focus] enabled = false: "
                                 "enable it")
            return
        if self.cfg.z.enabled:
            raise ValueError("[focus] refines z1 and with it the effective distance; [z] refines the effective "
                             "distance alone: enable one of them")
        if ds.geometry_kind != "nearfield" or ds.focus_distance is None or ds.detector_distance is None:
            raise ValueError("[focus] refines the focus-to-sample distance of a divergent-beam near-field geometry: "
                             "the dataset needs geometry_kind 'nearfield', a focus_distance and a detector_distance "
                             "(e.g. io.load(..., geometry_kind='nearfield', focus_distance=...))")
        self.focus0, self.z2 = float(ds.focus_distance), float(ds.detector_distance)
        if any(self.obj_pad):                             # the result's object is larger than the dataset's: said
            self.events.append({"epoch": 0, "event": "object_padded", "pixels": list(self.obj_pad),
                                "reason": "room for the scan to grow as [focus] refines z1"})
        self.magnification0 = self._magnification(self.focus0)
        self.pixel0 = np.asarray(self.propagation["pixel_size"], dtype=np.float64) * self.magnification0

    def search_focus(self):
        """[focus_search]: the loss scan before the first epoch (see `settings.FocusSearch`). Each candidate runs
        from the same state (parameters, optimisers, minibatch order) with the focus fixed; the run then starts
        from that state again at the best candidate. Said as a "focus_search" event with every loss."""
        spec = table(FocusSearch, self.cfg.focus_search)
        if spec is None or self.epoch > 0 or any(e["event"] == "focus_search" for e in self.events):
            return
        if not spec.low < spec.high:
            raise ValueError(f"focus_search: low ({spec.low}) must be below high ({spec.high})")
        t0 = time.perf_counter()
        start, rng = self.snapshot(), copy.deepcopy(self.rng.bit_generator.state)
        kept = copy.deepcopy((self.history, self.events, self.timings))
        factors = np.geomspace(spec.low, spec.high, spec.points) * self.focus_rel[0]
        losses = []
        self.focus_frozen = True
        try:
            for factor in factors:
                self.restore(start)
                self.rng.bit_generator.state = copy.deepcopy(rng)
                self.focus_rel[:] = factor
                for epoch in range(spec.epochs):
                    self.run_epoch(epoch)
                total, weight = self.data_loss(self.loss_name(spec.epochs - 1))
                value = total / weight if weight > 0 else math.inf
                losses.append(value if math.isfinite(value) else math.inf)
        finally:
            self.focus_frozen = False
            self.restore(start)
            self.rng.bit_generator.state = rng
            self.history, self.events, self.timings = kept
        best = float(factors[int(np.argmin(losses))])
        self.focus_rel[:] = best
        self.events.append({"epoch": 0, "event": "focus_search", "focus_distances": (factors * self.focus0).tolist(),
                            "loss_per_pixel": losses, "chosen": best * self.focus0})
        self.timings["focus_search"] = self.timings.get("focus_search", 0.0) + time.perf_counter() - t0

    def focus_enabled(self) -> bool:
        return self.cfg.focus.enabled

    def focus_distance(self):
        """z1 now (None unless [focus] refines it)."""
        return float(self.focus0 * self.focus_rel[0]) if self.focus_enabled() else None

    def _magnification(self, z1):
        return (z1 + self.z2) / z1

    def focus_scan_factor(self) -> float:
        """M / M0: how much the scan (in sample pixels) has grown since the given z1."""
        return self._magnification(self.focus_distance()) / self.magnification0 if self.focus_enabled() else 1.0

    def focus_geometry(self) -> dict:
        """z and pixel_size of the model at the current z1 (the near-field keywords of ops)."""
        m = self._magnification(self.focus_distance())
        return {"z": self.z2 / m, "pixel_size": tuple(self.pixel0 / m)}

    def focus_direction(self):
        """(dz_eff/dz1, d ln dx / dz1): the propagator's part of d/dz1, for `ops.evaluate`'s z_direction."""
        z1, z2 = self.focus_distance(), self.z2
        return (z2 ** 2 / (z1 + z2) ** 2, z2 / (z1 * (z1 + z2)))

    def focus_gradient(self, grads, idx):
        """dL/d focus_rel of a batch: the propagator's directional derivative plus the scan's scale change."""
        z1, z2 = self.focus_distance(), self.z2
        dk = -z2 / (z1 ** 2 * self.magnification0)                       # d(M/M0)/dz1
        spread = (self.nominal[idx] - self.scan_centre) @ (np.eye(2) + self.affine).T
        from_scan = self.comm.sum(float(np.sum(np.asarray(grads["positions"]) * spread))) * dk   # over the ranks
        return (float(grads["z"]) + from_scan) * self.focus0

    def report_focus(self):
        """At the end: a z1 that moved far from the given one is said once (a warning and an event)."""
        if not self.focus_enabled():
            return
        z1 = self.focus_distance()
        change = z1 / self.focus0 - 1
        event = {"epoch": self.epoch - 1, "event": "focus_distance", "given": self.focus0, "refined": z1}
        if abs(change) <= FOCUS_WARN or event in self.events:
            return
        self.events.append(event)
        warnings.warn(f"the data favour a focus-to-sample distance of {z1:.6g} m, {100 * change:+.1f} % from the "
                      f"{self.focus0:.6g} m given (magnification {self._magnification(z1):.5g}, sample pixel "
                      f"{self.focus_geometry()['pixel_size'][0]:.4g} m): check the focus distance", stacklevel=4)
