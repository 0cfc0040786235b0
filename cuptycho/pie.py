"""The classical engines on the model's kernels: ePIE / M-ePIE, rPIE / M-rPIE and mPIE, sequential
or batched, with cross-correlation position refinement.

    result = cuptycho.reconstruct(dataset, Config(engine="rpie", probe=Group(enabled=True)))

The Fourier-magnitude update is a gaussian-loss gradient step. With l = (sqrt(I) - sqrt(d))^2 the
model's exit-wave gradient is G_psi = (2/J)(psi - psi'), where psi' is the exit wave whose
propagated modes are rescaled to the measured amplitude, Psi'_k = sqrt(d/I) Psi_k (masked pixels
keep the model's value; I and d carry the loss's EPS). Its adjoints are the PIE numerators:

    grads["object"] = -(2/J) sum_j S_j^H sum_k conj(P_k) dpsi_jk,   dpsi = psi' - psi
    grads["probe"]  = -(2/J) sum_j sum_m conj(O_jm) dpsi_jmk

so one engine step is one `ops.evaluate` (the kernels, propagators and masks of the gradient
engine) followed by two `pie_update` kernels:

    O += object_step sum_j S_j^H[sum_k conj(P_k) dpsi_jk] / ((1 - alpha) W_O + alpha max W_O),
         W_O = sum_j S_j^H sum_k |P_k|^2   (the batch's illumination, object frame)
    P += probe_step sum_j sum_m conj(O_jm) dpsi_jm / ((1 - beta) W_P + beta max W_P),
         W_P = sum_j sum_m |O_jm|^2          (probe frame)

both from the state before the step. With one position per step (sequential, batch = 1) these
are M-rPIE's updates as in SciComPty (object denominator gamma max sum_p |P_p|^2 + (1 - gamma)
sum_p |P_p|^2: its gamma is alpha here, rPIE's alpha; probe beta max |o_j|^2 + (1 - beta) |o_j|^2),
and with alpha = beta = 1 they are M-ePIE's (Thibault & Menzel 2013; Maiden & Rodenburg 2009 for
one mode). With a batch of positions the updates of all of them are summed and divided by the
batch's summed powers: the overlap-normalised parallel update, equal to the sequential one at
batch = 1.

mPIE (Maiden, Johnson & Li 2017) adds momentum every `momentum_every` position updates:
v <- friction v + (X - X_before); X <- X + feedback v; X_before <- X, for X the object and the probe.

Defaults (`settings.PIE`) differ from PtyLab's mPIE (steps 0.25, both alphas 0.1, momentum on a random
5 % of updates): on the built-in blind example ours reached 0.987 (mPIE) / 0.967 (rPIE) object
correlation in 50 epochs, PtyLab's values 0.932 / 0.880 (README, "classical engines").

The loss an epoch reports is the running one: each pattern's gaussian loss just before its own
update (what ePIE's error metric reports), averaged over the epoch.

Each step works on the object's bounding box of the batch's patches (a copy written back after
the update), so a sequential step costs a patch, not the whole object.

Under MPI (`cuptycho.parallel`) the batched engines share each batch: every rank evaluates the
patterns of it that it owns, the numerators, the denominators and the loss are summed across the
ranks, and all take the same update; the sequential engines (batch = 1) refuse several ranks.

Position refinement (SciComPty): the shift between each position's object patch before and after
its update, measured by upsampled-DFT registration (`cuptycho.registration`, batched over up to
`REGISTER_EVERY` positions on the device), is the "gradient" of a per-position Adam (the
`positions` Group: lr, betas, start_epoch, schedule), so each position's gain adapts to how
consistently it is pushed. Every step is clipped to `position_max_step` pixels per axis after the
steps' mean over the registered positions (a global drift the data cannot see) is removed.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import backend as backends
from . import ops, registration
from .backend import to_host
from .engine import Reconstruction
from .settings import PIE_ENGINES, loss_plan, pie_settings

REGISTER_EVERY = 64          # positions whose before/after patches are registered in one batched call
REL_FLOOR = 1e-8             # denominators never fall below this fraction of their maximum


def _power(a, axes):
    """sum over `axes` of |a|^2, real, C-contiguous."""
    return (a.real ** 2 + a.imag ** 2).sum(axis=axes)


def crop_box(positions, patch_shape, obj_shape):
    """(y0, y1, x0, x1): the object rows and columns every patch at `positions` reads, at least one
    pixel larger than the patch. Bilinear taps taken in the crop (positions - (y0, x0)) are the
    taps taken in the whole object, bit for bit (integer offsets, the same far-edge rule)."""
    (ny, nx), (h, w) = patch_shape, obj_shape
    lo = np.floor(positions.min(axis=0)).astype(np.int64)
    hi = np.floor(positions.max(axis=0)).astype(np.int64) + np.array([ny, nx]) + 2
    y0, x0 = min(max(int(lo[0]), 0), h - ny - 1), min(max(int(lo[1]), 0), w - nx - 1)
    return y0, min(int(hi[0]), h), x0, min(int(hi[1]), w)


class PIEReconstruction(Reconstruction):
    """A run of one of the PIE engines (`Config.engine`): the gradient engine's state, loop, metrics,
    constraints, divergence recovery and checkpoints, with PIE steps instead of Adam steps."""

    ENGINES = PIE_ENGINES
    SNAPSHOT = Reconstruction.SNAPSHOT + ("momentum", "since_momentum")

    @classmethod
    def check_config(cls, config):
        """ValueError for settings a PIE engine cannot honour."""
        super().check_config(config)
        losses = {name for _, name in loss_plan(config.loss)}
        if losses != {"gaussian"}:
            raise ValueError(f"the {config.engine} engine's Fourier-magnitude update is the gaussian loss's: loss must "
                             f"be 'gaussian', got {config.loss!r} (other likelihoods need engine = 'gradient')")
        if config.scan.enabled:
            raise ValueError(f"scan (the affine scan model) needs engine = 'gradient'; the {config.engine} engine "
                             "refines each position on its own: set scan.enabled = false")
        if config.position_step != "adam":
            raise ValueError(f"position_step = {config.position_step!r} is the gradient engine's; the {config.engine} "
                             "engine registers each patch (pie.position_* settings): set position_step = 'adam'")
        if config.z.enabled:
            raise ValueError(f"z refinement needs engine = 'gradient' (the {config.engine} engine refines the object, "
                             "the probe and the positions): set z.enabled = false")
        if config.focus.enabled:
            raise ValueError(f"focus refinement needs engine = 'gradient' (the {config.engine} engine refines the "
                             "object, the probe and the positions): set focus.enabled = false")
        for name in ("background", "scale"):
            if getattr(config, name).enabled:
                raise ValueError(f"{name} (the detector model) needs engine = 'gradient'; the {config.engine} "
                                 f"engine fits the plain model's amplitudes: set {name}.enabled = false")
        for name in ("tv", "amplitude_range", "probe_power"):
            if getattr(config, name):
                raise ValueError(f"the {name} regulariser needs engine = 'gradient'; the {config.engine} engine has "
                                 "no penalty terms (constraints apply to every engine)")

    def __init__(self, dataset, config, comm=None):
        super().__init__(dataset, config, comm)
        if config.positions.enabled and config.probe.enabled and self.probe.shape[0] > 1:
            # measured on a simulated scan: 3.8 -> 10-13 px RMS with 3 refined probe modes; with a known
            # probe the same refinement improves the positions
            warnings.warn(f"the {config.engine} engine's position refinement (cross-correlation of each patch's "
                          f"update) is reliable with a known probe only: with {self.probe.shape[0]} probe modes "
                          "refined as well it tends to make the positions worse; use engine = 'gradient' (joint "
                          "refinement, [scan], [position_search]) or fix the probe ([probe] enabled = false)",
                          stacklevel=3)
        self.settings = pie_settings(config.engine, config.pie)
        self.step_scale = 1.0                   # halved after each divergence
        self.since_momentum = 0
        self.momentum = None
        if config.engine == "mpie":
            xp = self.xp
            self.momentum = {"object": [self.obj.copy(), xp.zeros_like(self.obj)],
                             "probe": [self.probe.copy(), xp.zeros_like(self.probe)]}
        self.pending = []                       # (rows, patches before, patches after) awaiting registration
        self.pending_count = 0                  # the positions of every rank's pending rows
        self._scan_on_device = (None, None)     # (epoch, every position on the GPU): see local_positions

    def _groups(self):
        return {"positions": self.correction}   # object and probe move by PIE steps, not by Adam

    def batch_spec(self):
        return 1 if self.cfg.batch is None else self.cfg.batch

    def halve_steps(self):
        self.step_scale = super().halve_steps()        # 0.5 ** divergences, as every learning rate
        return self.step_scale

    # ---- one epoch (sequential: a random order of positions per epoch, the shared loop's order)
    def after_step(self, epoch, profile):
        if self.pending_count >= REGISTER_EVERY:
            self.refine_positions(profile)

    def end_epoch(self, epoch, profile):
        self.refine_positions(profile)

    def step(self, idx, epoch, profile=None):
        """One PIE update from the patterns `idx`; returns their mean gaussian loss before it (a 0-d array on the
        device: the epoch sums them there, so a position costs no host round trip). With position refinement
        active, the patches before and after it wait for registration.

        With several ranks (parallel PIE) each evaluates the batch's patterns it owns; the numerators, the two
        denominators and the loss are summed across the ranks, which then take the same update."""
        xp, device = self.xp, self.device
        refine = self._active("positions", epoch)
        pos = self.batch_positions(idx)
        y0, y1, x0, x1 = crop_box(pos, self.probe.shape[-2:], self.obj.shape[1:])
        obj = xp.ascontiguousarray(self.obj[:, y0:y1, x0:x1])
        mine = self.own(idx)
        if len(mine) < len(idx):                            # several ranks: this one's part of the batch
            pos = pos[self.owner[idx] == self.comm.rank]
        local = self.local_positions(mine, epoch, pos, (y0, x0))
        if len(mine):
            data, mask = self.batch_data(mine)
            value, grads = ops.evaluate(device, obj, self.probe, local, data, mask, loss="gaussian", profile=profile,
                                        wanted=frozenset({"object", "probe"}), value_on_device=True,
                                        n_total=len(idx), **self.model_kwargs())
        else:                                               # a rank that owns none of this batch adds zeros
            value, grads = 0.0, {"object": xp.zeros_like(obj), "probe": xp.zeros_like(self.probe)}
        s = self.settings
        gain = -0.5 * len(idx) * self.step_scale            # dpsi = -(J/2) G_psi
        shape = self.probe.shape[-2:]
        with ops.stage(profile, "pie_update", device):
            update_probe = self._active("probe", epoch)
            before = ops.patch_fwd(device, obj, local, shape) if (update_probe or refine) else None
            if update_probe:
                w_probe = self.comm.sum(_power(before, (0, 1)))
                w_probe_max = w_probe.max().reshape(1)
            modes = [m for m, name in ((slice(0, 1), "object"), (slice(1, None), "object_modes"))
                     if self._active(name, epoch)]
            if self.comm.size > 1:
                value = self.comm.sum(float(value))
                grads = {name: self.comm.sum(grads[name]) for name in (("object",) if modes else ()) +
                         (("probe",) if update_probe else ())}
            if modes:
                lit = xp.broadcast_to(_power(self.probe, 0).astype(self.dtype), (len(mine), 1, *shape))
                w_obj = ops.patch_adj(device, xp.ascontiguousarray(lit), local, (1, *obj.shape[1:])).real[0]
                w_obj = self.comm.sum(xp.ascontiguousarray(w_obj))
                w_obj_max = w_obj.max().reshape(1)
                for m in modes:
                    ops.pie_update(device, obj[m], grads["object"][m], w_obj, w_obj_max, step=gain * s.object_step,
                                   alpha=s.alpha, rel_floor=REL_FLOOR)
                self.obj[:, y0:y1, x0:x1] = obj
            if update_probe:
                ops.pie_update(device, self.probe, grads["probe"], w_probe, w_probe_max, step=gain * s.probe_step,
                               alpha=s.beta, rel_floor=REL_FLOOR)
            if refine:
                after = ops.patch_fwd(device, obj[:1], local, shape)
                self.pending.append((mine, before[:, 0], after[:, 0]))
                self.pending_count += len(idx)          # the whole batch's: every rank registers at the same step
            self._momentum(len(idx), epoch)
        return value

    def local_positions(self, idx, epoch, pos, corner):
        """The positions `pos` of patterns `idx` relative to `corner`, on the device. On a GPU without an upload
        per step (a synchronous copy from host memory waits for the GPU): every position goes up once per
        epoch and after each registration, the only changes of a PIE scan within an epoch, and a step slices
        its own (same values: the same float64 arithmetic on the same numbers)."""
        if self.device != "cuda" or not len(idx):
            return backends.to_device(self.device, np.ascontiguousarray(pos - np.array(corner, np.float64)))
        held_epoch, scan = self._scan_on_device
        if scan is None or held_epoch != epoch:
            scan = backends.to_device(self.device, self.batch_positions(np.arange(self.ds.n_patterns)))
            self._scan_on_device = (epoch, scan)
        if idx[-1] - idx[0] + 1 == len(idx):                 # sorted and contiguous (one position): a slice
            local = scan[int(idx[0]):int(idx[-1]) + 1].copy()
        else:
            local = scan[self.xp.asarray(idx)]
        local[:, 0] -= corner[0]
        local[:, 1] -= corner[1]
        return local

    def _momentum(self, count, epoch):
        """mPIE: every `momentum_every` position updates, v <- friction v + (X - X_then); X += feedback v."""
        if self.momentum is None:
            return
        self.since_momentum += count
        if self.since_momentum < self.settings.momentum_every:
            return
        self.since_momentum = 0
        friction, feedback = self.settings.friction, self.settings.feedback
        for name, param in (("object", self.obj), ("probe", self.probe)):
            then, velocity = self.momentum[name]
            if self._active(name, epoch):
                velocity *= friction
                velocity += param
                velocity -= then
                param += param.real.dtype.type(feedback) * velocity
            then[...] = param

    # ---- positions
    def refine_positions(self, profile=None):
        """Register the pending before/after patches and take one Adam step per registered position. With several
        ranks each registers its own patterns; the drift's mean is taken over all of them, and every rank then
        takes every rank's new rows (so all hold the same positions, and the same crops, for the next steps)."""
        if not self.pending_count:
            return
        xp = self.xp
        rows = np.concatenate([p[0] for p in self.pending])
        with ops.stage(profile, "registration", self.device):
            before = xp.concatenate([p[1] for p in self.pending])
            after = xp.concatenate([p[2] for p in self.pending])
            self.pending, self.pending_count = [], 0
            # The update is tiny next to the patch: its shift would fall below the 1/upsample grid.
            # Scaled to `position_amplify` of the patch's norm, it moves the measured shift alike
            # (to first order) and keeps every position's signal on the grid; Adam needs only its
            # direction.
            delta = after - before
            moved = _power(delta, (1, 2))
            # a patch with no update (a pattern left out of the loss) has no shift: gain 0, not inf * 0
            norms = xp.where(moved > 0, xp.sqrt(_power(before, (1, 2)) / xp.where(moved > 0, moved, 1.0)), 0.0)
            gain = (self.settings.position_amplify * norms).astype(before.real.dtype)[:, None, None]
            shift = to_host(registration.register_shift(before, before + gain * delta,
                                                        upsample=self.settings.position_upsample))
        # `after` is `before` moved by `shift`: the data see the object's features displaced by
        # shift, i.e. the patch really sits at position - shift. Adam descends, so grad = +shift.
        old = self.correction[rows].copy()
        self._update_positions(rows, shift)
        step = self.correction[rows] - old
        if self.comm.size == 1:
            step -= step.mean(axis=0)            # a common drift of all positions is invisible to the data
        else:
            step -= self.comm.sum(step.sum(axis=0)) / self.comm.sum(float(len(rows)))
        limit = self.settings.position_max_step
        self.correction[rows] = old + np.clip(step, -limit, limit)
        self.share_rows(rows)
        self._clip_positions()
        self._scan_on_device = (None, None)

    # ---- checkpoints
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["pie"] = {"step_scale": self.step_scale, "since_momentum": self.since_momentum}
        if self.momentum is not None:
            for name, (then, velocity) in self.momentum.items():
                state["arrays"][f"momentum.{name}.then"] = to_host(then)
                state["arrays"][f"momentum.{name}.velocity"] = to_host(velocity)
        return state

    def _array_specs(self) -> dict:
        specs = super()._array_specs()
        if self.momentum is not None:
            for name, param in (("object", self.obj), ("probe", self.probe)):
                specs[f"momentum.{name}.then"] = specs[f"momentum.{name}.velocity"] = (param.shape, "c")
        return specs

    def check_state(self, state: dict):
        super().check_state(state)
        if state.get("pie") is None:                 # its values: checkpoint.validate
            raise ValueError("checkpoint has no field 'pie' (the PIE engines' step scale and momentum count)")

    def apply_state(self, state: dict):
        super().apply_state(state)
        self.step_scale = float(state["pie"]["step_scale"])
        self.since_momentum = int(state["pie"]["since_momentum"])
        if self.momentum is not None:
            dev = (lambda a: backends.to_device(self.device, a.astype(self.dtype)))
            self.momentum = {name: [dev(state["arrays"][f"momentum.{name}.then"]),
                                    dev(state["arrays"][f"momentum.{name}.velocity"])]
                             for name in ("object", "probe")}
