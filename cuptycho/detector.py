"""The detector's own parameters in the gradient engine: a background and an intensity scale per pattern.

The model's intensities become I_j = s_j I_coh,j + b (`reference.detector_likelihood`): b, counts
added to every pattern (stray scattering, dark current, an unblocked air path), is one map in
detector order, or one per pattern with `background_per_pattern`; s_j (beam-flux and exposure
changes from shot to shot) multiplies the coherent intensity of pattern j. Both are refined by
Adam like every other group, b kept >= 0 and s_j > 0.

Units of the learning rates: b's is relative to the data's mean count per valid pixel (a step of
lr moves a pixel by about lr x that mean); s_j's is absolute (s ~ 1).

Gauge: with the probe refined too, a common factor of every s_j and the probe's power are one
thing; after each epoch the mean s_j over the patterns in the loss moves into the probe
(s_j / c, probe x sqrt(c): the model is unchanged), so the scales read as relative fluctuations.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend as backends
from .backend import to_host

COUNT_CHUNK_BYTES = 16 << 20  # float64 bytes of patterns per chunk of masked_counts
SCALE_FLOOR = 1e-3          # s_j is kept above this: a pattern's model cannot vanish (or turn negative)


class DetectorModel:
    """Mixin of `engine.Reconstruction`: the "background" and "scale" groups (present only when enabled,
    so the state and checkpoints of runs without them are unchanged)."""

    def _init_detector(self):
        cfg, n, (ny, nx) = self.cfg, self.ds.n_patterns, self.ds.patch_shape
        self.background = None
        if cfg.background.enabled:
            shape = (n, ny, nx) if cfg.background_per_pattern else (ny, nx)
            self.background = self.xp.zeros(shape, self.real)
        self.shot_scale = np.ones(n) if cfg.scale.enabled else None

    def detector_groups(self) -> dict:
        """The enabled detector groups' parameters, for the optimisers."""
        groups = {}
        if self.background is not None:
            groups["background"] = self.background
        if self.shot_scale is not None:
            groups["scale"] = self.shot_scale
        return groups

    def masked_counts(self) -> tuple[float, float]:
        """(sum of data x mask, sum of the mask's weights) over every pattern, in float64, a bounded chunk of
        patterns at a time (no product of the data's size; streamed data are read once)."""
        xp = self.xp
        step = max(1, COUNT_CHUNK_BYTES // (8 * math.prod(self.ds.patch_shape)))

        def sums(idx):
            data, mask = self.pattern_rows(idx)
            if mask.ndim == 2:
                return (xp.sum(data, axis=0, dtype=xp.float64) * mask).sum(), mask.sum(dtype=xp.float64) * len(data)
            return (data.astype(xp.float64) * mask).sum(), mask.sum(dtype=xp.float64)
        return self.chunk_sums(step, sums, 2)          # MPI: the ranks share the chunks

    def detector_units(self) -> dict:
        """Learning-rate units: the background's is the data's mean count per valid pixel."""
        if self.background is None:
            return {}
        counts, weight = self.masked_counts()
        return {"background": counts / weight if weight > 0 and counts > 0 else 1.0}

    def detector_kwargs(self, idx) -> dict:
        """scale and background of the patterns `idx` on the device, as keywords of `ops`."""
        out = {}
        if self.shot_scale is not None:
            out["scale"] = backends.to_device(self.device, self.shot_scale[idx].astype(self.real))
        if self.background is not None:
            if self.background.ndim == 2:
                out["background"] = self.background
            else:
                out["background"] = self.xp.ascontiguousarray(self.background[self._device_index(idx)])
        return out

    def _device_index(self, idx):
        return idx if self.xp is np else self.xp.asarray(idx)

    def detector_wanted(self, epoch) -> set:
        return {g for g in ("background", "scale") if self._active(g, epoch)}

    def update_detector(self, idx, epoch, grads, scale):
        """One Adam step of the active detector groups from a batch's gradients (`scale`: the loss scale)."""
        if self._active("background", epoch):
            g = grads["background"] * grads["background"].dtype.type(scale)
            if self.background.ndim == 2:
                self.opt["background"].update(self.background, g)
            else:
                self.opt["background"].update_rows(self.background, g, self._device_index(idx))
            self.xp.maximum(self.background, 0, out=self.background)
        if self._active("scale", epoch):
            self.opt["scale"].update_rows(self.shot_scale, scale * to_host(grads["scale"]).astype(np.float64), idx)
            np.maximum(self.shot_scale, SCALE_FLOOR, out=self.shot_scale)

    def detector_gauge(self):
        """Move the scales' common factor into the probe (see the module's docstring); the model is unchanged."""
        if self.shot_scale is None or not self.cfg.probe.enabled:
            return
        c = float(np.mean(self.shot_scale[self.in_loss()]))
        if c > 0 and np.isfinite(c) and c != 1.0:
            self.shot_scale /= c
            self.probe *= self.probe.real.dtype.type(np.sqrt(c))

    def detector_record(self) -> dict:
        """Per-epoch summary: the mean background (counts per pixel) and the spread of the scales."""
        rec = {}
        if self.background is not None:
            rec["background_mean"] = float(self.background.mean(dtype=np.float64))
        if self.shot_scale is not None:
            rec["scale_std"] = float(np.std(self.shot_scale))
        return rec

    def detector_metrics(self, truth) -> dict:
        """Errors against a known truth (`simulate`'s background and scale): the background's relative
        error ||b - b_true|| / ||b_true|| (a per-pattern estimate against the map repeated) and the RMS
        error of the scales after both are brought to mean 1 (the gauge)."""
        out = {}
        if self.background is not None and truth.get("background") is not None:
            true_b = np.asarray(to_host(truth["background"]), dtype=np.float64)
            estimate = to_host(self.background).astype(np.float64)
            norm = np.linalg.norm(np.broadcast_to(true_b, estimate.shape))
            if norm > 0:
                out["background_error"] = float(np.linalg.norm(estimate - true_b) / norm)
        if self.shot_scale is not None and truth.get("scale") is not None:
            true_s = np.asarray(to_host(truth["scale"]), dtype=np.float64)
            out["scale_error_rms"] = float(np.sqrt(np.mean((self.shot_scale / self.shot_scale.mean()
                                                            - true_s / true_s.mean()) ** 2)))
        return out

    def detector_arrays(self) -> dict:
        """The detector groups' state on the host (checkpoints, Result)."""
        out = {}
        if self.background is not None:
            out["background"] = to_host(self.background)
        if self.shot_scale is not None:
            out["shot_scale"] = self.shot_scale.copy()
        return out

    def apply_detector_arrays(self, arrays):
        if self.background is not None:
            self.background = backends.to_device(self.device, arrays["background"].astype(self.real))
        if self.shot_scale is not None:
            self.shot_scale = arrays["shot_scale"].astype(np.float64)

    def detector_finite(self) -> bool:
        return (self.background is None or bool(self.xp.all(self.xp.isfinite(self.background)))) and \
            (self.shot_scale is None or bool(np.all(np.isfinite(self.shot_scale))))
