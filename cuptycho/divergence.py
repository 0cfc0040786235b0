"""The divergence watch of every engine: after each epoch, a non-finite loss or parameter, a loss above
`divergence_factor` times the lowest since the loss was last defined (the run's start, a loss
switch, the TV's start), or a probe power x object transmission out of range restores the best state
so far and halves every step size (`Result.events` says why).

An epoch's loss measures the state it started from (exactly so for the full batch), so a state
becomes a candidate for "best" only once the next epoch's loss has vouched for it. More than
`max_divergences` rollbacks end the run with the best state (`diverged`).

A mixin of `engine.Reconstruction` (it reads the engine's state and calls its `snapshot`,
`restore`, `halve_steps`, `switch_loss` and `_finish`), kept apart so the loop reads as a loop.
"""
from __future__ import annotations

import math

import numpy as np

from . import reference
from .memory_plan import LOSS_CHUNK_BYTES   # a module global here too: the tests shrink it


class DivergenceWatch:
    """Rollback to the best state when an epoch diverged (see the module's text)."""

    DIVERGED = "diverged too often"           # the reason of the "stopped" event of a diverged run

    def _plausible_intensity(self):
        """(low, high) for `_intensity`: divergence_factor**2 below the lower and above the higher of the
        data's mean counts per pattern and the initial model's value (they differ when the probe's scale
        is not fitted); None when neither has any intensity."""
        n = self.ds.n_patterns
        ny, nx = self.probe.shape[-2:]
        lo = np.maximum(np.floor(self.nominal.min(axis=0)).astype(int), 0)
        hi = np.ceil(self.nominal.max(axis=0)).astype(int) + (ny, nx)
        self._box = (slice(None), slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])))   # the scanned area
        counts = self.masked_counts()[0] / n
        model = self._intensity()
        k2 = self.cfg.divergence_factor * self.cfg.divergence_factor
        high = max(counts, model) * k2
        if not (high > 0 and math.isfinite(counts) and math.isfinite(model)):
            return None
        return min(counts, model) / k2, high

    def _intensity(self):
        """Probe power x mean object transmission over the scanned area: about the modelled counts
        per pattern, whatever the split of the intensity between probe and object."""
        xp, box = self.xp, self.obj[self._box]
        power = float(xp.sum(self.probe.real ** 2 + self.probe.imag ** 2, dtype=xp.float64))
        return power * float(xp.mean(xp.sum(box.real ** 2 + box.imag ** 2, axis=0), dtype=xp.float64))

    def data_loss(self, name):
        """(sum of the masked loss terms `name`, sum of the mask's weights) over every pattern in the loss,
        from the forward model in chunks of LOSS_CHUNK_BYTES of float64 terms (no gradients)."""
        n, f64 = self.ds.n_patterns, self.xp.float64
        # LOSS_CHUNK_BYTES of float64 terms at a time (a full batch held 4 x the data), whatever the batch: a
        # sequential PIE engine's batch of one made it one forward and two host round trips per pattern
        size = min(n, max(1, LOSS_CHUNK_BYTES // (8 * math.prod(self.ds.patch_shape))))
        def sums(idx):                           # summed where the arrays live: one transfer at the end
            data, mask = self.batch_data(idx)
            intensity = self.model_intensity(idx, self.batch_positions(idx))
            return ((mask * reference.loss_terms(name, intensity.astype(f64), data.astype(f64))).sum(),
                    mask.sum(dtype=f64) * (len(idx) if mask.ndim == 2 else 1))
        return self.chunk_sums(size, sums, 2)          # MPI: the ranks share the chunks

    def measure(self, key):
        """The current state's loss over every pattern as an epoch with loss definition `key` (`loss_key`)
        reports it (scaled, penalties included)."""
        name, tv_on = key
        value = self.loss_scale * self.data_loss(name)[0] / self.ds.n_patterns
        for reg_name, (reg, target) in self.regs.items():
            if reg_name != "tv" or tv_on:
                value += reg.value(self.obj if target == "object" else self.probe)
        return value

    @property
    def diverged(self) -> bool:
        """True when the run ended for diverging more than max_divergences times (it holds the best state)."""
        return self.finished and any(e.get("event") == "stopped" and e.get("reason") == self.DIVERGED
                                     for e in self.events)

    def _watch(self, epoch) -> bool:
        """Before an epoch: where the loss's definition changes (a run's start, a loss switch, the TV's
        start) restart the watch from the current state's loss; False when that state, measured by the
        loss it was reached with, has diverged (the best state is then restored)."""
        key = self.loss_key(epoch)
        if self._rollback is None and self.watch is not None:     # resumed: the state it starts from
            self._rollback = (self.snapshot(), epoch - 1, math.inf)
        if self.watch is not None and tuple(self.watch["key"]) == key:
            return True
        if self.watch is not None:                  # the last epoch's state has no loss of its own yet
            reason = self._loss_jump(self.measure(tuple(self.watch["key"])))
            if reason is not None:
                self._roll_back(epoch, reason)
                return False
        if key[0] != self.scaled_for:
            self.switch_loss(epoch)
        start = self.measure(key)
        start = start if math.isfinite(start) else math.inf      # unknown: only non-finite values count
        self.watch = {"key": list(key), "start": start, "best": start}
        self._rollback, self._pending = (self.snapshot(), epoch - 1, start), None
        return True

    def _divergence(self, loss):
        """Why the epoch that ended with `loss` diverged, or None."""
        if not (math.isfinite(loss) and self._finite()):
            return "non-finite loss or parameters"
        if self._intensity_range is not None:
            low, high = self._intensity_range
            value = self._intensity()
            if not low <= value <= high:
                return (f"probe power x object transmission out of range: {value:.3g}, plausible [{low:.3g}, "
                        f"{high:.3g}] (divergence_factor**2 around the data's counts per pattern)")
        return self._loss_jump(loss)

    def _loss_jump(self, loss):
        """A reason when `loss` is above divergence_factor x the lowest since the watch's start (never
        below 1 / divergence_factor of its start: a near-perfect fit's noise is no divergence)."""
        if not math.isfinite(loss):
            return "non-finite loss"
        k = self.cfg.divergence_factor
        ref = max(self.watch["best"], self.watch["start"] / (k * k))
        if math.isfinite(ref) and ref > 0 and loss > k * ref:
            return f"the loss jumped {loss / ref:.3g}-fold (to {loss:.6g}; lowest so far {self.watch['best']:.6g})"
        return None

    def _vouch(self, loss):
        """An accepted epoch: its loss lowers the watch's best and is the loss of the state it started
        from (the last epoch's), which becomes the rollback target if none has a lower one."""
        self.watch["best"] = min(self.watch["best"], loss)
        if self._pending is not None:
            snap, epoch = self._pending
            if loss <= self._rollback[2]:
                self._rollback = (snap, epoch, loss)
            self._pending = None

    def _roll_back(self, epoch, reason):
        """Restore the best state, halve every step size, record why; end the run past max_divergences."""
        self.divergences += 1
        snap, restored, _ = self._rollback
        self.restore(snap)
        self._pending = None
        scale = self.halve_steps()
        where = "the initial state" if restored < 0 else f"the state after epoch {restored}"
        self.events.append({"epoch": epoch, "event": "divergence", "reason": reason,
                            "action": f"restored {where} (the best so far) and halved every step size",
                            "restored_epoch": None if restored < 0 else restored, "lr_scale": scale})
        if self.divergences > self.cfg.max_divergences:
            self._finish(epoch, self.DIVERGED)
