"""The gradient reconstruction engine: object, probe modes, object modes, positions and z refined
jointly by minibatch Adam on the hand-derived gradients of the model (`ops.evaluate`).

    result = cuptycho.reconstruct(dataset, Config(epochs=100, probe=Group(lr=1e-2)))

`Reconstruction` is also the loop every engine shares: an epoch draws minibatches and calls
`step` on each, then `after_step`, and `end_epoch` once; divergence recovery, constraints,
metrics, the history and checkpoints are the same for every engine. An engine subclasses it and
overrides those hooks (`cuptycho.pie`); `cuptycho.engines` maps engine names to classes.

Divergence: `cuptycho.divergence` (a mixin) rolls back to the best state when an epoch diverged.

Backend-agnostic: the same loop runs on NumPy (reference), CPU-kernel and CuPy arrays; the state
lives on the device for the whole run and only scalars come back per batch.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings

import numpy as np

from . import backend as backends
from . import (budget, checkpoint, constraints, data_rows, detector, distributed, divergence, focus, guesses, memory_plan,
               metrics, ops, patterns, position_search, position_step, reference, regularisers, validation)
from .backend import to_host
from .optimiser import Adam
from .result import Result
from .settings import (TV, AmplitudeRange, Config, Constraints, EarlyStop, PositionSearch, ProbePower, batch_size,
                       loss_plan, table)


# --------------------------------------------------------------------------- the engine

class Reconstruction(checkpoint.Resumable, divergence.DivergenceWatch, guesses.StartingGuesses, detector.DetectorModel,
                     focus.FocusRefinement, distributed.Distributed, position_step.GaussNewtonPositions,
                     data_rows.PatternRows):
    """The state of one run of the gradient engine: parameters and optimisers on the device, the
    dataset, the history; its checkpoint state comes from `checkpoint.Resumable`.
    (`cuptycho.engines.create(dataset, config)` builds the engine `config.engine` names.)
    """

    ENGINES = ("gradient",)                   # the Config.engine names this class runs
    # what a divergence restores: the parameters and everything that steps them
    SNAPSHOT = ("obj", "probe", "correction", "affine", "excluded", "z_rel", "focus_rel", "background", "shot_scale",
                "opt", "loss_scale", "scaled_for")
    HOST_GROUPS = ("positions", "scan", "z", "focus", "scale")      # small parameters stepped on the host

    @classmethod
    def check_config(cls, config: Config):
        """ValueError for options this engine cannot honour (after `Config.check`)."""
        if config.engine not in cls.ENGINES:
            raise ValueError(f"{cls.__name__} runs the engine(s) {cls.ENGINES}, not {config.engine!r}: build it with "
                             "cuptycho.engines.create(dataset, config)")
        if config.position_search is not None and not config.positions.enabled:
            raise ValueError("position_search moves the positions, but [positions] enabled = false: enable it")
        if config.position_step == "newton":
            position_step.check_losses(name for _, name in loss_plan(config.loss))
        if (config.constraints or {}).get("probe_support") and not config.probe.enabled:
            raise ValueError("constraints.probe_support cuts the probe each epoch, but [probe] enabled = false: the "
                             "probe given would be changed, not refined; enable [probe] or leave out probe_support")

    def __init__(self, dataset, config: Config, comm=None):
        config.check()
        self.check_config(config)
        if config.z.enabled and dataset.propagator == "farfield":
            raise ValueError("z.enabled = true refines the propagation distance z, but the data's propagator is "
                             "'farfield', whose model has no z: set z.enabled = false (z refinement needs a "
                             "near-field propagator)")
        self.ds, self.cfg = dataset, config
        self.tv = table(TV, config.tv)
        self.early_stop = table(EarlyStop, config.early_stop)
        self.constraints = table(Constraints, config.constraints)
        self.device = backends.resolve(config.backend)
        budget.check(dataset, config, batch=self.batch_spec(), device=self.device)    # before allocating
        if self.device == "cuda":
            memory_plan.check_device(dataset, config, backends.cupy_module().cuda.Device().mem_info[1],
                                     batch=self.batch_spec())
        self.xp = np if self.device in ("numpy", "cpu") else backends.cupy_module()
        self.dtype = np.dtype(config.dtype)
        self.real = reference.real_dtype(self.dtype)
        self.rng = np.random.default_rng(config.seed)
        dev = (lambda a: backends.to_device(self.device, a))
        n = dataset.n_patterns
        self._init_data(dataset)                     # on the device, or streamed from the file (data_rows)
        self.nominal = np.array(dataset.positions, dtype=np.float64, order="C")         # host: tiny; our own copy
        # [focus] grows or shrinks the scan in sample pixels: a padded object keeps room for it (cuptycho.focus)
        self.obj_pad = focus.padding_for_growth(self.nominal, dataset.obj_shape, dataset.patch_shape) \
            if config.focus.enabled else (0, 0)
        self.obj_shape = tuple(int(n + 2 * p) for n, p in zip(dataset.obj_shape, self.obj_pad))
        self.nominal += np.array(self.obj_pad, dtype=np.float64)
        self.correction = np.zeros_like(self.nominal)
        # the scan model: positions = nominal + affine (nominal - centre) + correction; the affine (a 2 x 2
        # change of the scan's scale, rotation and shear about its centre) is refined with [scan]
        self.affine, self.scan_centre = np.zeros((2, 2)), self.nominal.mean(axis=0)
        self.excluded = np.zeros(n, dtype=bool)     # patterns left out of the loss ([position_search] exclude)
        self.attach(comm)                           # MPI ranks: before the set-up, whose passes they share
        self.probe = dev(self._initial_probe())
        self.obj = dev(self._initial_object())        # after the probe: init_object "data" weighs by its power
        self.z0 = dataset.z
        self.z_rel = np.ones(1)                                                        # z = z0 * z_rel
        self._init_detector()
        # the propagator in the model's form (pixel size and padding as pairs), checked once
        self.propagation = {"propagator": dataset.propagator, **validation.propagation(
            dataset.propagator, dataset.z if dataset.propagator != "farfield" else None, dataset.wavelength,
            dataset.pixel_size, dataset.padding)}
        self.history, self.events, self.timings = [], [], {}
        self._init_focus()
        self.loss_plan = loss_plan(config.loss)
        self.loss_scale = 1.0
        self.scaled_for = self.loss_name(0)          # the loss loss_scale was set for (switch_loss)
        self.epoch, self.finished, self.stop_requested, self.interrupted = 0, False, False, False
        self.best, self.stale, self.divergences = math.inf, 0, 0
        # divergence watch: the loss's definition, its loss there and the lowest since (run); the
        # rollback target (snapshot, epoch, loss) and the last epoch's state awaiting its loss
        self.watch, self._rollback, self._pending = None, None, None
        if config.init_probe != "dataset" and not config.probe.enabled:
            warnings.warn(f"init_probe = {config.init_probe!r} is a rough guess of the probe, and [probe] enabled = "
                          "false keeps it fixed for the whole run (a library Config leaves the probe off): enable "
                          "[probe] (probe=Group(enabled=True)) to refine it", UserWarning, stacklevel=3)
        if config.fit_probe_scale:
            self._fit_probe_scale()
        self._intensity_range = self._plausible_intensity()
        self.regs = self._regularisers()
        if dataset.truth.get("object") is not None:
            self.scanned = self.illuminated()          # the region lit by the initial scan and probe
        units = {"probe": float(self.xp.sqrt(self.xp.mean(self.xp.abs(self.probe) ** 2))), **self.detector_units()}
        self.opt = {name: Adam(p, getattr(config, name), "numpy" if name in self.HOST_GROUPS else self.device,
                               unit=units.get(name, 1.0))
                    for name, p in self._groups().items()}
        ops.release_buffers()                 # the set-up's full-batch buffers are not the run's: not kept

    def _regularisers(self):
        regs, tv = {}, self.tv
        if tv is not None:
            regs["tv"] = (regularisers.AdaptiveTV(p=tv.p, q=tv.q, eps=tv.eps, mask=tv.mask, reduction=tv.reduction),
                          "object")
        amplitude = table(AmplitudeRange, self.cfg.amplitude_range)
        if amplitude is not None:
            regs["amplitude_range"] = (regularisers.AmplitudeRange(amplitude.low, amplitude.high, amplitude.weight),
                                       "object")
        power = table(ProbePower, self.cfg.probe_power)
        if power is not None:
            target = power.target
            if target is None:                   # a unit object transmits all of the probe: the mean counts
                target = float(np.mean(patterns.frame_sums(self.ds.data)))
            regs["probe_power"] = (regularisers.ProbePower(target, power.weight), "probe")
        return regs

    # ---- parameters
    def _groups(self):
        groups = {"object": self.obj[:1], "probe": self.probe, "positions": self.correction, "z": self.z_rel}
        if self.obj.shape[0] > 1:
            groups["object_modes"] = self.obj[1:]
        if self.cfg.scan.enabled:                 # absent otherwise: checkpoints of runs without it are unchanged
            groups["scan"] = self.affine
        if self.cfg.focus.enabled:
            groups["focus"] = self.focus_rel
        return {**groups, **self.detector_groups()}

    def positions(self):
        return np.ascontiguousarray(self.batch_positions(slice(None)))

    def batch_positions(self, idx):
        """Current positions of the patterns `idx` (host, C-contiguous), without forming all of them:
        a sequential engine asks once per position."""
        spread = self.nominal[idx] - self.scan_centre
        if self.focus_enabled():                 # the scan in sample pixels grows with the magnification
            spread = spread * self.focus_scan_factor()
        return self.scan_centre + spread + spread @ self.affine.T + self.correction[idx]

    def z(self):
        if self.focus_enabled():
            return self.focus_geometry()["z"]
        return None if self.z0 is None else float(self.z0 * self.z_rel[0])

    def model_kwargs(self):
        """Propagator and geometry in the model's form, at the current z (and focus distance)."""
        if self.propagation["propagator"] == "farfield":
            return self.propagation
        if self.focus_enabled():
            return {**self.propagation, **self.focus_geometry()}
        return {**self.propagation, "z": self.z()}

    def _active(self, name, epoch):
        g = getattr(self.cfg, name)
        if name == "z" and self.z0 is None:
            return False
        if name == "object_modes" and self.obj.shape[0] == 1:
            return False
        if name == "focus" and self.focus_frozen:
            return False
        return g.enabled and epoch >= g.start_epoch

    def loss_name(self, epoch):
        return [n for e, n in self.loss_plan if e <= epoch][-1]

    def loss_key(self, epoch):
        """What an epoch's loss means: (loss name, TV counted); the divergence watch restarts when it changes."""
        return self.loss_name(epoch), "tv" in self.regs and epoch >= self.tv.start_epoch

    # ---- one minibatch
    def model_intensity(self, idx, positions):
        """Modelled intensities of the patterns `idx` (repeats allowed) at host `positions`, detector model included."""
        return ops.forward(self.device, self.obj, self.probe, backends.to_device(self.device, positions),
                           **self.model_kwargs(), **self.detector_kwargs(idx))

    def evaluate(self, idx, loss, profile=None, wanted=ops.GRADIENTS, n_total=None):
        pos = backends.to_device(self.device, self.batch_positions(idx))
        data, mask = self.batch_data(idx)
        direction = {"z_direction": self.focus_direction()} if self.focus_enabled() else {}
        return ops.evaluate(self.device, self.obj, self.probe, pos, data, mask, loss=loss, profile=profile,
                            wanted=wanted, **self.model_kwargs(), **self.detector_kwargs(idx), **direction,
                            n_total=n_total)

    def step(self, idx, epoch, profile):
        # only the gradients an active group uses: no position reduction or dL/dz when they are fixed
        wanted = {"object", "probe"} | {g for g in ("positions", "z") if self._active(g, epoch)}
        wanted |= self.detector_wanted(epoch)
        if self._active("focus", epoch):
            wanted |= {"z", "positions"}
        if self._active("scan", epoch):
            wanted.add("positions")
        mine = self.own(idx)                 # with several ranks: this rank's share, the loss over the whole batch
        self.batch_total = len(idx)
        value, grads = self.evaluate_parts(mine, self.loss_name(epoch), profile, frozenset(wanted), len(idx)) \
            if len(mine) else (0.0, None)
        value, grads = self.reduce(value, grads, mine, wanted)
        with ops.stage(profile, "optimiser", self.device):
            return self._update(mine, epoch, value, grads)

    def _update(self, idx, epoch, value, grads):
        scale = self.loss_scale
        for name, (reg, target) in self.regs.items():
            if name == "tv" and epoch < self.tv.start_epoch:
                continue
            r_value, r_grad = reg.value_and_grad(self.obj if target == "object" else self.probe)
            value += r_value / scale                   # reported in the (scaled) data loss's units
            grads[target] = grads[target] + r_grad / grads[target].real.dtype.type(scale)
        if self._active("object", epoch):
            self.opt["object"].update(self.obj[:1], _scaled(grads["object"][:1], scale))
        if self._active("object_modes", epoch):
            self.opt["object_modes"].update(self.obj[1:], _scaled(grads["object"][1:], scale))
        if self._active("probe", epoch):
            self.opt["probe"].update(self.probe, _scaled(grads["probe"], scale))
        if self._active("scan", epoch):           # dL/dA = sum_j dL/dp_j (nominal_j - centre)^T
            g = scale * to_host(grads["positions"])
            spread = (self.nominal[idx] - self.scan_centre) * self.focus_scan_factor()
            self.opt["scan"].update(self.affine, np.ascontiguousarray(self.comm.sum(g.T @ spread)))
            self._limit_scan()
        if self._active("positions", epoch):
            self._update_positions(idx, scale * to_host(grads["positions"]))
        elif self._active("scan", epoch):
            self._clip_positions()
        if self._active("z", epoch):
            self.opt["z"].update(self.z_rel, np.array([scale * grads["z"] * self.z0]))
        if self._active("focus", epoch):
            self.opt["focus"].update(self.focus_rel, np.array([scale * self.focus_gradient(grads, idx)]))
        self.update_detector(idx, epoch, grads, scale)
        return scale * value

    def _update_positions(self, idx, grad):
        """Adam (or a Gauss-Newton step, `position_step`) on the batch's rows of the corrections, an optional
        L1 pull to zero, then clipping."""
        grad = grad + self.cfg.position_l1 * np.sign(self.correction[idx])
        if self.cfg.position_step == "newton":
            self.newton_positions(idx, grad, self.epoch, self.batch_total)
        else:
            self.opt["positions"].update_rows(self.correction, grad, idx)
        self._clip_positions()

    def _clip_positions(self):
        limit = self.cfg.max_position_correction
        if limit is not None:
            np.clip(self.correction, -limit, limit, out=self.correction)
        ny, nx = self.probe.shape[-2:]
        high = np.array([self.obj.shape[1] - ny, self.obj.shape[2] - nx], dtype=np.float64)
        total = self.positions()
        self.correction += np.clip(total, 0, high) - total

    def in_loss(self):
        """Which positions are in the loss (bool (n,)): all but those [position_search] left out, or all
        when fewer than three would be (a median or an affine fit needs some)."""
        kept = ~self.excluded
        return kept if kept.sum() >= 3 else np.ones(len(kept), dtype=bool)

    def absorb_affine(self):
        """Move the corrections' affine part (about the centre) into `affine`, fitted again without the positions
        it explains worst (outliers pulled a plain fit) and without those left out of the loss; the positions stay,
        the corrections keep what is local."""
        used = self.in_loss()
        d = (self.nominal - self.scan_centre) * self.focus_scan_factor()
        c = self.correction - np.median(self.correction[used], axis=0)
        fit = np.linalg.lstsq(d[used], c[used], rcond=None)[0]
        miss = np.linalg.norm(c - d @ fit, axis=1)
        keep = used & (miss <= 3 * np.median(miss[used]) + 0.5)
        fit = np.linalg.lstsq(d[keep], c[keep], rcond=None)[0] if keep.sum() >= 3 else fit
        self.affine += fit.T
        self.correction -= d @ fit
        self._limit_scan()

    def _limit_scan(self):
        """Keep the singular values of I + A within 1 +- max_scan_scale; the positions move with the clamp
        (the excess is not left in the corrections, so the scan cannot keep shrinking through them)."""
        limit = self.cfg.max_scan_scale
        if limit is None:
            return
        u, sv, vt = np.linalg.svd(np.eye(2) + self.affine)
        bounded = np.clip(sv, 1 - limit, 1 + limit)
        if not np.array_equal(bounded, sv):
            self.affine = u @ np.diag(bounded) @ vt - np.eye(2)

    # ---- the loop
    def snapshot(self):
        return copy.deepcopy({k: getattr(self, k) for k in self.SNAPSHOT})

    def restore(self, snap):
        for k, v in copy.deepcopy(snap).items():
            setattr(self, k, v)

    def switch_loss(self, epoch):
        """At a loss switch, scale the new loss so the object gradient's norm is continuous."""
        old, new = self.loss_name(epoch - 1), self.loss_name(epoch)
        # each rank evaluates the patterns it owns (in parts when streamed) and the object gradients are summed,
        # as in a step: every rank holds the same sums, so the same scale
        idx, wanted = np.arange(self.ds.n_patterns), frozenset({"object", "probe"})
        mine = self.own(idx)
        norms = []
        for name in (old, new):
            grads = self.evaluate_parts(mine, name, None, wanted, len(idx))[1] if len(mine) else None
            norms.append(float(self.xp.linalg.norm(self.reduce(0.0, grads, mine, wanted)[1]["object"])))
        n_old, n_new = norms[0] * self.loss_scale, norms[1]
        if n_new > 0 and math.isfinite(n_old / n_new):
            self.loss_scale = n_old / n_new
        self.scaled_for = new
        self.events.append({"epoch": epoch, "event": "loss_switch", "from": old, "to": new,
                            "scale": self.loss_scale})

    def run_epoch(self, epoch):
        """One pass over the patterns in a random order, in minibatches: `step` on each batch, then
        `after_step`; `end_epoch` once. Returns (mean loss, batch size, stage timings or None)."""
        profile = {} if self.cfg.profile else None
        n = self.ds.n_patterns
        size = batch_size(self.batch_spec(), epoch, n)
        order = self.rng.permutation(n)
        batches = [np.sort(order[start:start + size]) for start in range(0, n, size)]
        total = 0.0
        with self.planned_reads(batches):         # streamed data: read in blocks, one ahead (data_rows)
            for idx in batches:
                total += self.step(idx, epoch, profile) * len(idx)
                self.after_step(epoch, profile)
        self.end_epoch(epoch, profile)
        return float(total) / n, size, profile       # a step's loss may be a device scalar: one transfer per epoch

    def after_step(self, epoch, profile):
        """Hook: called after every minibatch step (the gradient engine does nothing here)."""

    def end_epoch(self, epoch, profile):
        """Hook: called once after an epoch's last step, before the epoch is recorded."""

    def batch_spec(self):
        """The batch option in force: Config.batch, or this engine's default (the full batch)."""
        return "full" if self.cfg.batch is None else self.cfg.batch

    def halve_steps(self):
        """After a divergence (the best state restored, with its optimisers): every learning rate at
        0.5 ** divergences, so that rollbacks compound; returns that scale."""
        scale = 0.5 ** self.divergences
        for opt in self.opt.values():
            opt.lr_scale = scale
        return scale

    def record(self, epoch, loss, size, seconds, profile):
        rec = {"epoch": epoch, "loss": loss, "loss_name": self.loss_name(epoch), "batch": size, "seconds": seconds,
               "z": self.z(), "position_correction_rms": float(np.sqrt(np.mean(self.correction ** 2))),
               "scan_matrix": (np.eye(2) + self.affine).tolist(),             # I + A: the scan's linear map
               "lr": {k: o.lr for k, o in self.opt.items()}, **self.detector_record()}
        if self.focus_enabled():
            rec["focus_distance"] = self.focus_distance()
        if epoch % max(1, self.cfg.metrics_every) == 0 or epoch == self.cfg.epochs - 1:
            # comparable across runs, batch sizes and packages: the whole dataset's data loss (the loss's own
            # definition, unscaled, no penalties) per valid detector pixel, after the epoch
            total, weight = self.data_loss(self.loss_name(epoch))
            rec["loss_per_pixel"] = total / weight if weight > 0 else math.nan
            if self.ds.truth:
                rec.update(self.metrics())
        if profile:
            for k, v in profile.items():
                self.timings[k] = self.timings.get(k, 0.0) + v
        self.history.append(rec)
        return rec

    def metrics(self):
        truth, out = self.ds.truth, {}
        (py, px), (h, w) = self.obj_pad, self.ds.obj_shape            # the dataset's object within a padded one
        if truth.get("object") is not None:
            scanned = self.scanned[py:py + h, px:px + w]
            # registered, less the phase ramp that far-field data cannot see once the probe is refined
            out["object_correlation"] = metrics.object_correlation(to_host(self.obj[0])[py:py + h, px:px + w],
                                                                   to_host(truth["object"])[0], mask=scanned)
        if truth.get("positions") is not None:
            err = metrics.position_errors(self.positions() - np.array(self.obj_pad), to_host(truth["positions"]))
            out["position_error_median"], out["position_error_rms"] = err["median"], err["rms"]
        if truth.get("z") is not None and self.z0 is not None:
            out["z_error"] = metrics.z_error(self.z(), truth["z"])["relative"]
        if truth.get("focus_distance") is not None and self.focus_enabled():
            out["focus_error"] = self.focus_distance() / truth["focus_distance"] - 1
        return {**out, **self.detector_metrics(truth)}

    def illuminated(self):
        """Object pixels the probe lights to at least 10% of the maximum (host bool (H, W))."""
        return metrics.illuminated(to_host(self.probe), self.positions(), self.obj.shape[1:], 0.1)

    def stop(self):
        """Ask a running `run` to stop after the current epoch (safe from a signal handler)."""
        self.stop_requested = True

    def run(self, until: int | None = None) -> Result:
        """Run (or continue) up to epoch `until` (default: Config.epochs) and return the Result."""
        cfg = self.cfg
        until = cfg.epochs if until is None else min(until, cfg.epochs)
        t_start = time.perf_counter()
        self.interrupted = False                  # set when a stop request ends this call (every rank alike)
        if self.focus_enabled() and until > 0:
            self.search_focus()
        while self.epoch < until and not self.finished:
            epoch = self.epoch
            if not self._watch(epoch):
                continue
            t0 = time.perf_counter()
            loss, size, profile = self.run_epoch(epoch)
            self.exchange_rows()
            reason = self._divergence(loss)
            if reason is not None:
                self._roll_back(epoch, reason)
                continue
            self._vouch(loss)
            for opt in self.opt.values():
                opt.schedule.step(loss)
            self.apply_constraints()
            self.detector_gauge()
            position_search.maybe_search(self, epoch)
            if self._active("scan", epoch) and self._active("positions", epoch):
                self.absorb_affine()
            self.adapt_tv(loss)
            rec = self.record(epoch, loss, size, time.perf_counter() - t0, profile)
            self._pending = (self.snapshot(), epoch)
            self.epoch += 1
            if cfg.progress is not None and cfg.progress(rec):
                self._finish(epoch, "progress callback")
            elif self.early_stop is not None:
                if loss < self.best * (1 - self.early_stop.min_delta):
                    self.best, self.stale = loss, 0
                else:
                    self.stale += 1
                    if self.stale >= self.early_stop.patience:
                        self._finish(epoch, "loss plateau")
            if self.stop_agreed(self.stop_requested):
                self.stop_requested, self.interrupted = False, True
                self.events.append({"epoch": epoch, "event": "interrupted"})
                break
        if (self.finished or self.epoch >= cfg.epochs) and self.history and self.ds.truth and \
                "object_correlation" not in self.history[-1] and self.ds.truth.get("object") is not None:
            self.history[-1].update(self.metrics())    # a run that stopped early ends with metrics too
        if (self.finished or self.epoch >= cfg.epochs) and self.excluded.any():
            self._report_excluded()
        if self.finished or self.epoch >= cfg.epochs:
            self.report_focus()
            ops.release_buffers()
        self.timings["total"] = self.timings.get("total", 0.0) + time.perf_counter() - t_start
        return self.result()

    def _report_excluded(self):
        """A run that ends with positions left out of the loss says so (event and warning): their positions
        are not to be trusted and their patterns did not shape the object."""
        idx = np.flatnonzero(self.excluded)
        event = {"epoch": self.epoch - 1, "event": "positions_excluded", "count": int(len(idx)),
                 "positions": idx.tolist()}
        if event in self.events:                   # run() again on a finished run: said once
            return
        self.events.append(event)
        shown = ", ".join(map(str, idx[:20])) + (", ..." if len(idx) > 20 else "")
        radius = table(PositionSearch, self.cfg.position_search).radius
        warnings.warn(f"{len(idx)} of {len(self.excluded)} positions ended left out of the loss: their patterns "
                      f"fit worse than [position_search] misfit x the median everywhere within radius = {radius:g} px "
                      f"of the scan model (positions {shown}; Result.excluded_positions); they did not shape the "
                      "object at the end and their positions are the least certain",
                      stacklevel=3)

    def _finish(self, epoch, reason):
        self.finished = True
        self.events.append({"epoch": epoch, "event": "stopped", "reason": reason})


    def result(self) -> Result:
        detector = self.detector_arrays()
        return Result(object=to_host(self.obj), probe=to_host(self.probe), positions=self.positions(), z=self.z(),
                      history=self.history, events=self.events, timings=self.timings,
                      config=_config_dict(self.cfg), device=self.device,
                      scan_matrix=np.eye(2) + self.affine if "scan" in self.opt else None,
                      excluded_positions=np.flatnonzero(self.excluded), background=detector.get("background"),
                      scale=detector.get("shot_scale"), focus_distance=self.focus_distance(),
                      pixel_size=self.focus_geometry()["pixel_size"] if self.focus_enabled() else None,
                      mpi_ranks=self.comm.size)

    def adapt_tv(self, data_loss):
        """Reset the TV weight to keep `ratio` x (data loss) / (unweighted TV) (DAP's adaptive TV)."""
        if "tv" not in self.regs:
            return
        tv = self.regs["tv"][0]
        raw = tv.value(self.obj, weighted=False)
        if raw > 0 and math.isfinite(data_loss):
            tv.weight = self.tv.ratio * self.loss_scale * data_loss / raw

    def apply_constraints(self):
        """The per-epoch projections chosen in Config.constraints, in a fixed order."""
        c = self.constraints
        if c.orthogonalize_probe:
            self.probe[...] = constraints.orthogonalize_modes(self.probe)
        if c.recentre_probe:
            self.probe[...], self.obj[...] = constraints.recentre_probe(self.probe, self.obj)[:2]
        if c.zero_probe_phase:
            self.probe[...], self.obj[...] = constraints.zero_probe_phase(self.probe, self.obj)
        if c.renormalise:
            lit = self.illuminated().astype(self.real)          # weights: renormalise takes no bool mask
            obj, probe, _ = constraints.renormalise(self.obj, self.probe, backends.to_device(self.device, lit))
            self.obj[...], self.probe[...] = obj, probe
        if c.phase_range:
            self.obj[...] = constraints.clamp_phase(self.obj, *c.phase_range)
        if c.amplitude_range:
            self.obj[...] = constraints.clamp_amplitude(self.obj, *c.amplitude_range)
        if c.probe_support and self._active("probe", self.epoch):      # not before the probe is refined
            self.probe[...] = constraints.apply_probe_support(self.probe, c.probe_support)

    def _finite(self):
        return all(bool(self.xp.all(self.xp.isfinite(a))) for a in (self.obj, self.probe)) and \
            all(bool(np.all(np.isfinite(a))) for a in (self.correction, self.affine, self.z_rel, self.focus_rel)) and \
            self.detector_finite()


def _scaled(grad, scale):
    return grad if scale == 1.0 else grad * grad.real.dtype.type(scale)


def _config_dict(cfg):
    d = dataclasses.asdict(dataclasses.replace(cfg, progress=None))     # a callback need not be copyable
    d["progress"] = None if cfg.progress is None else getattr(cfg.progress, "__name__", "callback")
    return d

