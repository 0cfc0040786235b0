"""The Adam state of one parameter group: moments, step count, schedule and the divergence scale.

The step itself is `ops.adam_step` (a fused kernel, or its NumPy twin); this class keeps what the
step needs between calls and the effective learning rate (group lr x schedule x divergence scale x
the group's unit).
"""
from __future__ import annotations

from . import ops, schedules


class Adam:
    """Adam state of one parameter group (moments per real component, MATH.md)."""

    def __init__(self, param, group, device, unit=1.0):          # group: a settings.Group
        self.group, self.device, self.unit = group, device, unit
        self.m, self.v = ops.adam_state(param)
        self.step_count = 0
        self.schedule = schedules.from_spec(group.schedule)
        self.lr_scale = 1.0                    # halved after each divergence

    @property
    def lr(self):
        return self.group.lr * self.schedule.factor * self.lr_scale * self.unit

    def update_rows(self, param, grad, idx):
        """Adam on rows `idx` of `param` (the positions of one minibatch; idx in param's namespace), their
        moments only.

        The step count is global (SparseAdam semantics): bias correction fades after a few batches.
        """
        self.step_count += 1
        rows, m, v = param[idx], self.m[idx], self.v[idx]
        ops.adam_step(self.device, rows, grad, m, v, step=self.step_count, lr=self.lr, betas=self.group.betas,
                      eps=self.group.eps)
        param[idx], self.m[idx], self.v[idx] = rows, m, v

    def update(self, param, grad):
        """One Adam step of `param` in place (rows of a larger array: pass contiguous copies)."""
        self.step_count += 1
        ops.adam_step(self.device, param, grad, self.m, self.v, step=self.step_count, lr=self.lr,
                      betas=self.group.betas, eps=self.group.eps)
