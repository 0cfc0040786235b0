"""The gradient reconstruction engine: object, probe modes, object modes, positions and z refined
jointly by minibatch Adam on the hand-derived gradients of `model.evaluate`.

    result = cuptycho.reconstruct(dataset, Config(epochs=100, probe=Group(lr=1e-2)))

Backend-agnostic: the same loop runs on NumPy (reference), CPU-kernel and CuPy arrays; the state
lives on the device for the whole run and only scalars come back per batch.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import backend as backends
from . import constraints, initial, metrics, model, reference, regularisers, schedules
from .launchers import adam as adam_kernel
from .optim import adam_reference
from . import validation
from .validation import choice, to_host


# --------------------------------------------------------------------------- configuration

@dataclass
class Group:
    """Optimiser settings of one parameter group.

    lr is a step size per Adam update: in transmission units for the object (|O| ~ 1), in pixels
    for positions, and relative for the probe (in units of the initial probe's RMS amplitude, which
    scales with the photon count) and for z (a step of lr changes z by about lr * z0).
    """
    enabled: bool = True
    start_epoch: int = 0
    lr: float = 1e-2
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    schedule: object = "constant"


def _group(**kw):
    return field(default_factory=lambda: Group(**kw))


@dataclass
class Config:
    """Everything `reconstruct` does, with defaults that suit a far-field dataset.

    engine : "gradient" (minibatch Adam on the hand-derived gradients, this module) or one of the
        classical engines "epie", "rpie", "mpie" (`cuptycho.pie`: the PIE updates on the same
        kernels; object, probe and position refinement, not z or regularisers).
    pie : settings of the PIE engines (`cuptycho.pie.KEYS`), e.g. {"alpha": 0.1, "beta": 1.0}; an
        absent key takes the engine's default (`cuptycho.pie.DEFAULTS`).
    batch : "full", an int, or {"start": b0, "factor": f, "every": n, "max": bmax}: a growing
        minibatch size b0 * f**(epoch // n) capped at bmax (DAP: small batches first). None: the
        engine's default, "full" for the gradient engine and 1 (sequential) for the PIE engines,
        whose batch > 1 is the parallel variant.
    loss : a name, or [(epoch, name), ...] switching loss at those epochs; at a switch the new loss
        is scaled so the object gradient's norm is continuous (`Result.events` records the factor).
    position_l1 : weight of an L1 penalty on the position corrections (pixels).
    max_position_correction : largest |correction| per axis in pixels (None: only the object's
        edges limit it: corrected patches always stay on the object).
    init_probe : "dataset" (Dataset.probe), "data" (from the mean pattern, DAP) or
        {"aperture": radius_px}; n_probe_modes adds small orthogonal modes (None: as given).
    tv : {"ratio": r, "p": 2, "q": 1, "eps": 1e-6, "start_epoch": 0} adaptive TV on the object, its
        weight reset every epoch to r times the data loss over the unweighted TV (a fixed ratio to
        the data); start_epoch delays it until the object has structure (the TV of a flat start
        is tiny, which makes the first weights large).
    amplitude_range : {"low": a, "high": b, "weight": w} penalty on |object| outside [a, b].
    probe_power : {"weight": w, "target": P} penalty on the probe's total power (target by default
        the mean total counts per pattern: a unit object transmits all of the probe).
    constraints : per-epoch projections, each optional: "orthogonalize_probe", "recentre_probe",
        "zero_probe_phase", "renormalise" (bools), "phase_range" / "amplitude_range" ((low, high)).
    early_stop : {"patience": n, "min_delta": rel} stops when the epoch loss has not improved by
        a relative min_delta for n epochs; None never stops early.
    progress : called after every epoch with the epoch's record (a dict); returning True stops.
    profile : synchronise at stage boundaries so Result.timings attributes time exactly.
    metrics_every : with a known truth, compare with it every this many epochs (and at the first
        and the last): registration against the truth costs more than a small epoch.
    """
    epochs: int = 100
    engine: str = "gradient"
    pie: dict | None = None
    batch: object = None
    loss: object = "gaussian"
    object: Group = _group(lr=1e-2)
    object_modes: Group = _group(lr=1e-2)
    probe: Group = _group(enabled=False, lr=1e-2)
    positions: Group = _group(enabled=False, lr=5e-2)      # PIE engines: one Adam step per position per epoch
    z: Group = _group(enabled=False, lr=1e-3)
    position_l1: float = 0.0
    max_position_correction: float | None = None
    n_object_modes: int = 1
    n_probe_modes: int | None = None
    init_probe: object = "dataset"
    fit_probe_scale: bool = True
    tv: dict | None = None
    amplitude_range: dict | None = None
    probe_power: dict | None = None
    constraints: dict = field(default_factory=dict)
    early_stop: dict | None = None
    max_divergences: int = 5
    seed: int = 0
    backend: str = "auto"
    dtype: str = "complex64"
    profile: bool = False
    metrics_every: int = 10
    progress: Callable | None = None

    def check(self):
        """ValueError naming the first invalid setting."""
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {self.epochs!r}")
        for name in ("object", "object_modes", "probe", "positions", "z"):
            g = getattr(self, name)
            if not isinstance(g, Group):
                raise ValueError(f"{name} must be a Group, got {type(g).__name__}")
            if not (g.lr > 0 and math.isfinite(g.lr)):
                raise ValueError(f"{name}.lr must be positive, got {g.lr!r}")
            if not (0 <= g.betas[0] < 1 and 0 <= g.betas[1] < 1):
                raise ValueError(f"{name}.betas must lie in [0, 1), got {g.betas!r}")
            schedules.from_spec(g.schedule)
        for _, name in _loss_plan(self.loss):
            choice("loss", name, reference.LOSSES)
        choice("dtype", self.dtype, ("complex64", "complex128"))
        choice("engine", self.engine, ENGINES)
        if self.batch is not None:
            _batch_sizes(self.batch, 1, 1)
        if self.n_object_modes < 1:
            raise ValueError(f"n_object_modes must be >= 1, got {self.n_object_modes}")
        unknown = set(self.constraints) - set(CONSTRAINTS)
        if unknown:
            raise ValueError(f"unknown constraint(s) {sorted(unknown)}; known: {list(CONSTRAINTS)}")
        options = {"tv": {"ratio", "start_epoch", "p", "q", "eps", "reduction", "mask"},
                   "amplitude_range": {"low", "high", "weight"},
                   "probe_power": {"weight", "target"}, "early_stop": {"patience", "min_delta"}}
        for name, known in options.items():
            table = getattr(self, name)
            if table is None:
                continue
            if not isinstance(table, dict) or set(table) - known:
                raise ValueError(f"{name} takes the keys {sorted(known)}, got {table!r}")
        if self.tv:
            regularisers.AdaptiveTV(**{k: v for k, v in self.tv.items() if k not in ("ratio", "start_epoch")})
        if self.amplitude_range:
            regularisers.AmplitudeRange(**self.amplitude_range)
        if self.engine != "gradient":
            from . import pie
            pie.check_config(self)
        elif self.pie:
            raise ValueError(f"pie settings {sorted(self.pie)} apply to the PIE engines, but engine is 'gradient'")


ENGINES = ("gradient", "epie", "rpie", "mpie")


CONSTRAINTS = ("orthogonalize_probe", "recentre_probe", "zero_probe_phase", "renormalise", "phase_range",
               "amplitude_range")


def _loss_plan(spec):
    """[(start_epoch, loss name), ...] sorted, from a name or a list of pairs."""
    if isinstance(spec, str):
        return [(0, spec)]
    plan = sorted((int(e), str(n)) for e, n in spec)
    if not plan or plan[0][0] != 0:
        raise ValueError(f"loss schedule must start at epoch 0, got {spec!r}")
    return plan


def _batch_sizes(spec, epoch, n_patterns):
    """The minibatch size for `epoch`."""
    if spec == "full":
        return n_patterns
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec < 1:
            raise ValueError(f"batch must be >= 1, got {spec}")
        return min(int(spec), n_patterns)
    if isinstance(spec, dict):
        unknown = set(spec) - {"start", "factor", "every", "max"}
        if unknown or "start" not in spec:
            raise ValueError(f"batch schedule needs 'start' and takes 'factor', 'every', 'max'; got {sorted(spec)}")
        size = spec["start"] * spec.get("factor", 2) ** (epoch // max(1, spec.get("every", 1)))
        return int(min(size, spec.get("max") or n_patterns, n_patterns))
    raise ValueError(f"batch must be 'full', an integer or a growth schedule dict, got {spec!r}")


# --------------------------------------------------------------------------- optimiser state

class _Adam:
    """Adam state of one parameter group (moments per real component, MATH.md)."""

    def __init__(self, param, group: Group, device, unit=1.0):
        self.group, self.device, self.unit = group, device, unit
        self.m, self.v = adam_kernel.adam_state(param)
        self.step_count = 0
        self.schedule = schedules.from_spec(group.schedule)
        self.lr_scale = 1.0                    # halved after each divergence

    @property
    def lr(self):
        return self.group.lr * self.schedule.factor * self.lr_scale * self.unit

    def update_rows(self, param, grad, idx):
        """Adam on rows `idx` of a host array (the positions of one minibatch), their moments only.

        The step count is global (SparseAdam semantics): bias correction fades after a few batches.
        """
        self.step_count += 1
        new, m, v = adam_reference(param[idx], grad, self.m[idx], self.v[idx], step=self.step_count, lr=self.lr,
                                   betas=self.group.betas, eps=self.group.eps)
        param[idx], self.m[idx], self.v[idx] = new, m, v

    def update(self, param, grad):
        """One Adam step of `param` in place (rows of a larger array: pass contiguous copies)."""
        self.step_count += 1
        kw = dict(step=self.step_count, lr=self.lr, betas=self.group.betas, eps=self.group.eps)
        if self.device == "numpy":
            new, self.m, self.v = adam_reference(param, grad, self.m, self.v, **kw)
            param[...] = new
        else:
            adam_kernel.adam_step(param, grad, self.m, self.v, **kw)


# --------------------------------------------------------------------------- result

@dataclass
class Result:
    """What a reconstruction produced, and how it got there."""
    object: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    z: float | None
    history: list
    events: list
    timings: dict
    config: dict
    device: str

    @property
    def loss(self):
        return np.array([h["loss"] for h in self.history])


# --------------------------------------------------------------------------- the engine

class Reconstruction:
    """The state of one run: parameters and optimisers on the device, the dataset, the history.

    `Reconstruction(dataset, config)` builds the engine `config.engine` names: this class for the
    gradient engine, `cuptycho.pie.PIEReconstruction` (a subclass) for the PIE engines.
    """

    # what a divergence restores: the parameters and everything that steps them
    SNAPSHOT = ("obj", "probe", "correction", "z_rel", "opt", "loss_scale")

    def __new__(cls, dataset=None, config=None):
        if cls is Reconstruction and isinstance(config, Config) and config.engine != "gradient":
            from .pie import PIEReconstruction
            cls = PIEReconstruction
        return super().__new__(cls)

    def __init__(self, dataset, config: Config):
        config.check()
        self.ds, self.cfg = dataset, config
        self.device = backends.resolve(config.backend)
        self.xp = np if self.device in ("numpy", "cpu") else backends.cupy_module()
        self.dtype = np.dtype(config.dtype)
        self.real = reference.real_dtype(self.dtype)
        self.rng = np.random.default_rng(config.seed)
        dev = (lambda a: backends.to_device(self.device, a))
        n, ny, nx = dataset.data.shape
        self.data = dev(np.ascontiguousarray(dataset.data, dtype=self.real))
        mask = np.ones((ny, nx)) if dataset.mask is None else dataset.mask
        self.mask = dev(np.ascontiguousarray(mask, dtype=self.real))
        self.nominal = np.ascontiguousarray(dataset.positions, dtype=np.float64)       # host: tiny
        self.correction = np.zeros_like(self.nominal)
        self.obj = dev(self._initial_object())
        self.probe = dev(self._initial_probe())
        self.z0 = dataset.z
        self.z_rel = np.ones(1)                                                        # z = z0 * z_rel
        self.loss_plan = _loss_plan(config.loss)
        self.loss_scale = 1.0
        self.history, self.events, self.timings = [], [], {}
        self.epoch, self.finished, self.stop_requested = 0, False, False
        self.best, self.stale, self.divergences = math.inf, 0, 0
        if config.fit_probe_scale:
            self._fit_probe_scale()
        self.regs = self._regularisers()
        if dataset.truth.get("object") is not None:
            self.scanned = self.illuminated()          # the region lit by the initial scan and probe
        probe_rms = float(self.xp.sqrt(self.xp.mean(self.xp.abs(self.probe) ** 2)))
        self.opt = {name: _Adam(p, getattr(config, name), self.device if name not in ("positions", "z") else "numpy",
                                unit=probe_rms if name == "probe" else 1.0)
                    for name, p in self._groups().items()}

    # ---- initial guesses
    def _initial_object(self):
        return initial.object_ones(self.ds.obj_shape, self.cfg.n_object_modes, self.dtype, seed=self.cfg.seed)

    def _initial_probe(self):
        spec, ds = self.cfg.init_probe, self.ds
        if isinstance(spec, dict) and set(spec) == {"aperture"}:
            return initial.probe_aperture(ds.patch_shape, spec["aperture"], self.cfg.n_probe_modes or 1,
                                          seed=self.cfg.seed, dtype=self.dtype)
        if spec == "data":
            return initial.probe_from_data(ds.data, self.cfg.n_probe_modes or 1, mask=ds.mask, seed=self.cfg.seed,
                                           dtype=self.dtype, **ds.forward_kwargs())
        if spec != "dataset":
            raise ValueError(f"init_probe must be 'dataset', 'data' or {{'aperture': radius_px}}, got {spec!r}")
        if ds.probe is None:
            raise ValueError("init_probe='dataset' but the dataset has no probe guess: set Dataset.probe or use "
                             "init_probe='data'")
        probe = np.asarray(ds.probe, dtype=self.dtype)
        probe = probe[None] if probe.ndim == 2 else probe
        wanted = self.cfg.n_probe_modes
        if wanted and wanted > probe.shape[0]:
            probe = initial.add_modes(probe, wanted, seed=self.cfg.seed)
        return np.ascontiguousarray(probe)

    def _fit_probe_scale(self):
        """Scale the probe so the first predicted intensities match the data (least squares)."""
        self.probe = initial.fit_probe_scale(self.obj, self.probe, self.positions(), self.data, self.mask,
                                             backend=self.device, **self.ds.forward_kwargs())

    def _regularisers(self):
        cfg, regs = self.cfg, {}
        if cfg.tv:
            opts = {k: v for k, v in cfg.tv.items() if k not in ("ratio", "start_epoch")}
            regs["tv"] = (regularisers.AdaptiveTV(**opts), "object")
        if cfg.amplitude_range:
            regs["amplitude_range"] = (regularisers.AmplitudeRange(**cfg.amplitude_range), "object")
        if cfg.probe_power:
            opts = dict(cfg.probe_power)
            opts.setdefault("target", float(np.mean(np.sum(self.ds.data, axis=(1, 2), dtype=np.float64))))
            regs["probe_power"] = (regularisers.ProbePower(**opts), "probe")
        return regs

    # ---- parameters
    def _groups(self):
        groups = {"object": self.obj[:1], "probe": self.probe, "positions": self.correction, "z": self.z_rel}
        if self.obj.shape[0] > 1:
            groups["object_modes"] = self.obj[1:]
        return groups

    def positions(self):
        return np.ascontiguousarray(self.nominal + self.correction)

    def batch_positions(self, idx):
        """Current positions of the patterns `idx` (host, C-contiguous), without forming all of them:
        a sequential engine asks once per position."""
        return self.nominal[idx] + self.correction[idx]

    def z(self):
        return None if self.z0 is None else float(self.z0 * self.z_rel[0])

    def _model_kwargs(self):
        """Propagator and geometry in the model's form (pixel size and padding as pairs), current z."""
        ds = self.ds
        return {"propagator": ds.propagator,
                **validation.propagation(ds.propagator, self.z() if ds.propagator != "farfield" else None,
                                         ds.wavelength, ds.pixel_size, ds.padding)}

    def _active(self, name, epoch):
        g = getattr(self.cfg, name)
        if name == "z" and self.z0 is None:
            return False
        if name == "object_modes" and self.obj.shape[0] == 1:
            return False
        return g.enabled and epoch >= g.start_epoch

    def loss_name(self, epoch):
        return [n for e, n in self.loss_plan if e <= epoch][-1]

    # ---- one minibatch
    def batch_data(self, idx):
        """(data, mask) of the patterns `idx` on the device."""
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx):     # sorted and contiguous: a view, no copy
            didx = slice(int(idx[0]), int(idx[-1]) + 1)
        else:
            didx = idx if self.xp is np else self.xp.asarray(idx)
        return self.data[didx], (self.mask if self.mask.ndim == 2 else self.mask[didx])

    def evaluate(self, idx, loss, profile=None, wanted=model.GRADIENTS):
        pos = backends.to_device(self.device, self.batch_positions(idx))
        data, mask = self.batch_data(idx)
        return model.evaluate(self.device, self.obj, self.probe, pos, data, mask, loss=loss,
                              profile=profile, wanted=wanted, **self._model_kwargs())

    def step(self, idx, epoch, profile):
        # only the gradients an active group uses: no position reduction or dL/dz when they are fixed
        wanted = {"object", "probe"} | {g for g in ("positions", "z") if self._active(g, epoch)}
        value, grads = self.evaluate(idx, self.loss_name(epoch), profile, frozenset(wanted))
        with model.stage(profile, "optimiser", self.device):
            return self._update(idx, epoch, value, grads)

    def _update(self, idx, epoch, value, grads):
        scale = self.loss_scale
        for name, (reg, target) in self.regs.items():
            if name == "tv" and epoch < self.cfg.tv.get("start_epoch", 0):
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
        if self._active("positions", epoch):
            self._update_positions(idx, scale * to_host(grads["positions"]))
        if self._active("z", epoch):
            self.opt["z"].update(self.z_rel, np.array([scale * grads["z"] * self.z0]))
        return scale * value

    def _update_positions(self, idx, grad):
        """Adam on the batch's rows of the corrections, an optional L1 pull to zero, then clipping."""
        grad = grad + self.cfg.position_l1 * np.sign(self.correction[idx])
        self.opt["positions"].update_rows(self.correction, grad, idx)
        self._clip_positions()

    def _clip_positions(self):
        limit = self.cfg.max_position_correction
        if limit is not None:
            np.clip(self.correction, -limit, limit, out=self.correction)
        ny, nx = self.probe.shape[-2:]
        high = np.array([self.obj.shape[1] - ny, self.obj.shape[2] - nx], dtype=np.float64)
        self.correction[...] = np.clip(self.nominal + self.correction, 0, high) - self.nominal

    # ---- the loop
    def snapshot(self):
        return copy.deepcopy({k: getattr(self, k) for k in self.SNAPSHOT})

    def restore(self, snap):
        for k, v in copy.deepcopy(snap).items():
            setattr(self, k, v)

    def switch_loss(self, epoch):
        """At a loss switch, scale the new loss so the object gradient's norm is continuous."""
        old, new = self.loss_name(epoch - 1), self.loss_name(epoch)
        idx = np.arange(self.ds.n_patterns)
        _, g_old = self.evaluate(idx, old)
        _, g_new = self.evaluate(idx, new)
        n_old = float(self.xp.linalg.norm(g_old["object"])) * self.loss_scale
        n_new = float(self.xp.linalg.norm(g_new["object"]))
        if n_new > 0 and math.isfinite(n_old / n_new):
            self.loss_scale = n_old / n_new
        self.events.append({"epoch": epoch, "event": "loss_switch", "from": old, "to": new,
                            "scale": self.loss_scale})

    def run_epoch(self, epoch):
        profile = {} if self.cfg.profile else None
        n = self.ds.n_patterns
        size = _batch_sizes(self.batch_spec(), epoch, n)
        order = self.rng.permutation(n)
        total = 0.0
        for start in range(0, n, size):
            idx = np.sort(order[start:start + size])
            total += self.step(idx, epoch, profile) * len(idx)
        return total / n, size, profile

    def batch_spec(self):
        return "full" if self.cfg.batch is None else self.cfg.batch

    def halve_steps(self):
        """After a divergence: halve every learning rate; returns the common scale now applied."""
        for opt in self.opt.values():
            opt.lr_scale *= 0.5
        return min((opt.lr_scale for opt in self.opt.values()), default=1.0)

    def record(self, epoch, loss, size, seconds, profile):
        rec = {"epoch": epoch, "loss": loss, "loss_name": self.loss_name(epoch), "batch": size, "seconds": seconds,
               "z": self.z(), "position_correction_rms": float(np.sqrt(np.mean(self.correction ** 2))),
               "lr": {k: o.lr for k, o in self.opt.items()}}
        if self.ds.truth and (epoch % max(1, self.cfg.metrics_every) == 0 or epoch == self.cfg.epochs - 1):
            rec.update(self.metrics())
        if profile:
            for k, v in profile.items():
                self.timings[k] = self.timings.get(k, 0.0) + v
        self.history.append(rec)
        return rec

    def metrics(self):
        truth, out = self.ds.truth, {}
        if truth.get("object") is not None:
            scanned = self.scanned
            # a global translation (the mean position error, which refinement cannot see) is registered
            # first; then a linear phase ramp, invisible in far-field data once the probe is refined
            # (it moves into the probe), is removed relative to the truth, on the aligned grid
            true_obj = np.asarray(truth["object"])[0]
            estimate, _ = metrics.align(to_host(self.obj[0]), true_obj, mask=scanned)
            estimate = metrics.remove_phase_ramp(estimate, mask=scanned, reference=true_obj)
            out["object_correlation"] = metrics.correlation(estimate, true_obj, mask=scanned, shift=False)
        if truth.get("positions") is not None:
            err = metrics.position_errors(self.positions(), np.asarray(truth["positions"]))
            out["position_error_median"], out["position_error_rms"] = err["median"], err["rms"]
        if truth.get("z") is not None and self.z0 is not None:
            out["z_error"] = metrics.z_error(self.z(), truth["z"])["relative"]
        return out

    def illuminated(self):
        """Object pixels the probe lights to at least 10% of the maximum (host bool (H, W))."""
        power = to_host(self.xp.sum(self.xp.abs(self.probe) ** 2, axis=0)).astype(np.complex128)
        pos = self.positions()
        patches = np.broadcast_to(power, (len(pos), 1, *power.shape))
        ill = reference.patch_adj(np.ascontiguousarray(patches), pos, (1, *self.obj.shape[1:])).real[0]
        return ill > 0.1 * ill.max()

    def stop(self):
        """Ask a running `run` to stop after the current epoch (safe from a signal handler)."""
        self.stop_requested = True

    def run(self, until: int | None = None) -> Result:
        """Run (or continue) up to epoch `until` (default: Config.epochs) and return the Result."""
        cfg = self.cfg
        until = cfg.epochs if until is None else min(until, cfg.epochs)
        good = self.snapshot()
        t_start = time.perf_counter()
        while self.epoch < until and not self.finished:
            epoch = self.epoch
            if epoch > 0 and self.loss_name(epoch) != self.loss_name(epoch - 1) and \
                    not any(e["event"] == "loss_switch" and e["epoch"] == epoch for e in self.events):
                self.switch_loss(epoch)
            t0 = time.perf_counter()
            loss, size, profile = self.run_epoch(epoch)
            if not (math.isfinite(loss) and self._finite()):
                self.divergences += 1
                self.restore(good)
                scale = self.halve_steps()
                self.events.append({"epoch": epoch, "event": "divergence", "action": "restored the last good state "
                                    "and halved every step size", "lr_scale": scale})
                if self.divergences > cfg.max_divergences:
                    self._finish(epoch, "diverged too often")
                continue
            for opt in self.opt.values():
                opt.schedule.step(loss)
            self.apply_constraints()
            self.adapt_tv(loss)
            rec = self.record(epoch, loss, size, time.perf_counter() - t0, profile)
            good = self.snapshot()
            self.epoch += 1
            if cfg.progress is not None and cfg.progress(rec):
                self._finish(epoch, "progress callback")
            elif cfg.early_stop:
                if loss < self.best * (1 - cfg.early_stop.get("min_delta", 1e-4)):
                    self.best, self.stale = loss, 0
                else:
                    self.stale += 1
                    if self.stale >= cfg.early_stop.get("patience", 10):
                        self._finish(epoch, "loss plateau")
            if self.stop_requested:
                self.stop_requested = False
                self.events.append({"epoch": epoch, "event": "interrupted"})
                break
        if (self.finished or self.epoch >= cfg.epochs) and self.history and self.ds.truth and \
                "object_correlation" not in self.history[-1] and self.ds.truth.get("object") is not None:
            self.history[-1].update(self.metrics())    # a run that stopped early ends with metrics too
        self.timings["total"] = self.timings.get("total", 0.0) + time.perf_counter() - t_start
        return self.result()

    def _finish(self, epoch, reason):
        self.finished = True
        self.events.append({"epoch": epoch, "event": "stopped", "reason": reason})

    def result(self) -> Result:
        return Result(object=to_host(self.obj), probe=to_host(self.probe), positions=self.positions(), z=self.z(),
                      history=self.history, events=self.events, timings=self.timings,
                      config=_config_dict(self.cfg), device=self.device)

    # ---- checkpoints
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly: parameters, optimiser and schedule
        states, the minibatch RNG, the loss scale, the TV weight, counters and the history.
        Arrays are NumPy; everything else is JSON-serialisable."""
        state = {
            "engine": self.cfg.engine, "epoch": self.epoch, "finished": self.finished, "best": self.best,
            "stale": self.stale, "divergences": self.divergences, "loss_scale": self.loss_scale, "rng": self.rng.bit_generator.state,
            "history": self.history, "events": self.events, "timings": self.timings,
            "tv_weight": self.regs["tv"][0].weight if "tv" in self.regs else None,
            "arrays": {"object": to_host(self.obj), "probe": to_host(self.probe), "correction": self.correction.copy(),
                       "z_rel": self.z_rel.copy()},
            "optimisers": {},
        }
        for name, opt in self.opt.items():
            state["arrays"][f"{name}.m"], state["arrays"][f"{name}.v"] = to_host(opt.m), to_host(opt.v)
            state["optimisers"][name] = {"step": opt.step_count, "lr_scale": opt.lr_scale, "unit": opt.unit,
                                         "schedule": opt.schedule.state_dict()}
        return state

    def load_state_dict(self, state: dict):
        """Continue from `state_dict()` output (same dataset and configuration)."""
        saved_engine = state.get("engine", "gradient")
        if saved_engine != self.cfg.engine:
            raise ValueError(f"checkpoint is of a run of the {saved_engine!r} engine; this run uses {self.cfg.engine!r}")
        arrays = state["arrays"]
        if arrays["object"].shape != self.obj.shape or arrays["probe"].shape != self.probe.shape or \
                arrays["correction"].shape != self.correction.shape:
            raise ValueError(f"checkpoint holds an object {arrays['object'].shape}, a probe {arrays['probe'].shape} "
                             f"and {len(arrays['correction'])} positions; this run has {self.obj.shape}, "
                             f"{self.probe.shape} and {len(self.correction)}")
        if set(state["optimisers"]) != set(self.opt):
            raise ValueError(f"checkpoint optimises {sorted(state['optimisers'])}, this run {sorted(self.opt)}: "
                             "the configuration differs (e.g. n_object_modes)")
        dev = (lambda a: backends.to_device(self.device, a))
        self.obj = dev(arrays["object"].astype(self.dtype))
        self.probe = dev(arrays["probe"].astype(self.dtype))
        self.correction = arrays["correction"].astype(np.float64)
        self.z_rel = arrays["z_rel"].astype(np.float64)
        for name, opt in self.opt.items():
            o = state["optimisers"][name]
            host = name in ("positions", "z")
            opt.m = arrays[f"{name}.m"] if host else dev(arrays[f"{name}.m"])
            opt.v = arrays[f"{name}.v"] if host else dev(arrays[f"{name}.v"])
            opt.step_count, opt.lr_scale, opt.unit = o["step"], o["lr_scale"], o["unit"]
            opt.schedule.load_state_dict(o["schedule"])
        self.rng.bit_generator.state = state["rng"]
        for key in ("epoch", "finished", "best", "stale", "divergences", "loss_scale"):
            setattr(self, key, state[key])
        self.history, self.events, self.timings = list(state["history"]), list(state["events"]), dict(state["timings"])
        if state.get("tv_weight") is not None and "tv" in self.regs:
            self.regs["tv"][0].weight = state["tv_weight"]

    def adapt_tv(self, data_loss):
        """Reset the TV weight to keep `ratio` x (data loss) / (unweighted TV) (DAP's adaptive TV)."""
        if "tv" not in self.regs:
            return
        tv = self.regs["tv"][0]
        raw = tv.value(self.obj, weighted=False)
        if raw > 0 and math.isfinite(data_loss):
            tv.weight = self.cfg.tv.get("ratio", 0.1) * self.loss_scale * data_loss / raw

    def apply_constraints(self):
        """The per-epoch projections chosen in Config.constraints, in a fixed order."""
        c = self.cfg.constraints
        if c.get("orthogonalize_probe"):
            self.probe[...] = constraints.orthogonalize_modes(self.probe)
        if c.get("recentre_probe"):
            probe, obj, _ = constraints.recentre_probe(self.probe, self.obj)
            self.probe[...], self.obj[...] = probe, obj
        if c.get("zero_probe_phase"):
            probe, obj = constraints.zero_probe_phase(self.probe, self.obj)
            self.probe[...], self.obj[...] = probe, obj
        if c.get("renormalise"):
            obj, probe, _ = constraints.renormalise(self.obj, self.probe,
                                                    backends.to_device(self.device, self.illuminated()))
            self.obj[...], self.probe[...] = obj, probe
        if c.get("phase_range"):
            self.obj[...] = constraints.clamp_phase(self.obj, *c["phase_range"])
        if c.get("amplitude_range"):
            self.obj[...] = constraints.clamp_amplitude(self.obj, *c["amplitude_range"])

    def _finite(self):
        xp = self.xp
        return bool(xp.all(xp.isfinite(self.obj))) and bool(xp.all(xp.isfinite(self.probe))) and \
            bool(np.all(np.isfinite(self.correction))) and bool(np.all(np.isfinite(self.z_rel)))


def _scaled(grad, scale):
    return grad if scale == 1.0 else grad * grad.real.dtype.type(scale)


def _config_dict(cfg):
    d = dataclasses.asdict(dataclasses.replace(cfg, progress=None))     # a callback need not be copyable
    d["progress"] = None if cfg.progress is None else getattr(cfg.progress, "__name__", "callback")
    return d


def reconstruct(dataset, config: Config | None = None) -> Result:
    """Reconstruct `dataset` (a `cuptycho.Dataset`) with `config` (defaults: `Config()`)."""
    return Reconstruction(dataset, config or Config()).run()
