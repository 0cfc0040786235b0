"""The patterns an engine computes with: held on its device, or streamed from their file.

A mixin of `engine.Reconstruction`. Held data (a dataset's array) live on the engine's device for the
whole run, and a batch is a view or a gather. Streamed data (`Dataset.streamed`: a reader's ``stream``
option) stay in their file: an epoch plans its reads (`patterns.ReadPlan`: blocks of `budget.READ_AHEAD_BYTES`,
the next one read while the current one is computed), a step of more than `budget.STREAM_PART_BYTES` of rows is
evaluated in parts whose losses and gradients are summed (so a full batch never holds the data), and
only the rows of a part reach the device. Results are the same either way: the same rows, the same
float32 values, the same sums (in parts, summed in another order: equal to rounding).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from . import backend as backends
from . import budget, patterns

ROW_GRADIENTS = ("positions", "scale")        # one row per pattern: a step's parts are joined, not summed


class PatternRows:
    """Mixin: needs the engine's device, xp, real, excluded, own() and evaluate()."""

    reads = last_reads = None                 # the epoch's ReadPlan (streamed data), else None; the last epoch's

    def _init_data(self, dataset):
        dev = (lambda a: backends.to_device(self.device, a))
        ny, nx = dataset.patch_shape
        self.streamed = dataset.streamed
        self.data = dataset.data if self.streamed else dev(np.ascontiguousarray(dataset.data, dtype=self.real))
        mask = np.ones((ny, nx)) if dataset.mask is None else dataset.mask
        self.mask = mask if patterns.is_streamed(mask) else dev(np.ascontiguousarray(mask, dtype=self.real))

    def _rows_of(self, array, idx):
        """Rows `idx` (host ints, repeats allowed) of the data or a per-pattern mask, on the device."""
        if patterns.is_streamed(array):
            planned = self.reads.take(idx) if self.reads is not None and array is self.data else None
            rows = array.read(idx) if planned is None else planned
            return backends.to_device(self.device, rows.astype(self.real, copy=False))
        n = len(idx)
        if n and idx[-1] - idx[0] + 1 == n and (n <= 2 or np.all(np.diff(idx) == 1)):
            return array[int(idx[0]):int(idx[-1]) + 1]            # sorted and contiguous: a view, no copy
        return array[idx if self.xp is np else self.xp.asarray(idx)]

    def pattern_rows(self, idx):
        """(data, mask) of the patterns `idx` (host ints, repeats allowed) on the device, as measured."""
        idx = np.asarray(idx)
        mask = self.mask if self.mask.ndim == 2 else self._rows_of(self.mask, idx)
        return self._rows_of(self.data, idx), mask

    def batch_data(self, idx):
        """(data, mask) of the patterns `idx` on the device; a pattern left out of the loss has a zero mask."""
        data, mask = self.pattern_rows(idx)
        out = self.excluded[idx]
        if out.any():
            keep = backends.to_device(self.device, (~out).astype(self.real))
            mask = self.xp.ascontiguousarray(mask * keep.reshape(-1, 1, 1))
        return data, mask

    # ---- streamed data: parts of a step, and the epoch's reads
    def parts(self, idx):
        """`idx` in consecutive parts of at most budget.STREAM_PART_BYTES of rows (streamed data), else whole."""
        if not self.streamed:
            return [idx]
        size = max(1, budget.STREAM_PART_BYTES // (math.prod(self.data.shape[1:]) * 4))
        return [idx[s:s + size] for s in range(0, len(idx), size)] or [idx]

    @contextlib.contextmanager
    def planned_reads(self, batches):
        """While an epoch runs over `batches` (sorted index arrays), its reads of streamed data are planned."""
        if not self.streamed:
            yield
            return
        self.reads = patterns.ReadPlan(self.data, [p for b in batches for p in self.parts(self.own(b)) if len(p)],
                                       budget.READ_AHEAD_BYTES)
        try:
            yield
        finally:
            self.reads.release()
            self.last_reads, self.reads = self.reads, None

    def evaluate_parts(self, idx, loss, profile, wanted, n_total):
        """`evaluate` of the patterns `idx`, part by part (`parts`), the losses and gradients summed (the
        per-pattern rows joined): one part at a time in memory."""
        value, grads = None, None
        for part in self.parts(idx):
            v, g = self.evaluate(part, loss, profile, wanted, n_total)
            if grads is None:
                value, grads = v, g
                continue
            value = value + v
            for name, add in g.items():
                rows = name in ROW_GRADIENTS or (name == "background" and add.ndim == 3)
                if rows:
                    grads[name] = backends.array_module(add).concatenate([grads[name], add])
                else:
                    grads[name] = grads[name] + add
        return value, grads
