"""A resumable reconstruction of a data file: configuration, outputs, checkpoints and signals.

    outcome = cuptycho.run.reconstruct_file("scan.cxi", config="run.toml", output="scan.result.cxi",
                                            checkpoint_every=50)
    outcome.result, outcome.stopped_by     # the Result (None when a signal stopped the run)

What `cuptycho reconstruct` does, for Python users too: the configuration comes from a TOML file,
the checkpoint's own copy (resuming) or the defaults, with overrides (`--set KEY=VALUE`, `--epochs`,
...) checked by the same schema; every output is refused before any work if it exists (unless
`force`), and so is an output that is one of the inputs or a folder that cannot take a new file; a
checkpoint (``OUT`` with the suffix ``.ckpt.npz``) is written every `checkpoint_every` epochs and
when SIGINT / SIGTERM stop the run after the current epoch; the result is CXI with the effective
configuration beside it. A resumed run continues exactly (same settings: a difference from the
checkpoint's configuration is refused, except the options in `RESUME_FREE`).

A finished run is never lost to its last write: while a result or checkpoint is being written,
signals are only noted (honoured once it is written), and when the result cannot be written (a full
disk, a read-only mount, an I/O error) the run's state is saved as a checkpoint, at the checkpoint
path or else in the temporary folder ($TMPDIR) or the working folder, and `WriteFailed` says where
and how to resume (which then only writes the result).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import atomic, checkpoint, config as C, defaults, engines, io, parallel, units
from .settings import GROUPS

RESUME_FREE = {"epochs", "backend", "profile", "metrics_every"}      # may differ when resuming


def checkpoint_path(out) -> Path:
    """Where a run writing OUT keeps its checkpoint: OUT with the suffix ``.ckpt.npz``."""
    out = Path(os.fspath(out))
    return out.with_suffix(".ckpt.npz") if out.suffix else out.with_name(out.name + ".ckpt.npz")


def default_output(data) -> Path:
    """DATA's name without its data suffix, plus ``.result.cxi``, in the working folder."""
    name = Path(os.fspath(data)).name
    for suffix in (".bz2", ".npz", ".cxi", ".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".tif", ".tiff"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return Path(f"{name}.result.cxi")


def differences(a: dict, b: dict, prefix=""):
    """[(dotted key, a's value, b's value)] where two TOML documents' engine options differ."""
    out = []
    for k in sorted(set(a) | set(b)):
        if not prefix and (k in RESUME_FREE or k == "engine" or k in ("data", "output", "simulate")):
            continue                       # a different engine has its own message (load_state_dict)
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k in GROUPS:
            out += differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((f"{prefix}{k}", va, vb))
    return out


def reader_options(data: dict) -> dict:
    """[data] as keywords for `cuptycho.io.load` (without "path"; energies in joules, frames as a slice)."""
    out = {k: v for k, v in data.items() if k != "path"}
    if "energy_ev" in out:
        out["energy"] = units.ev_to_joule(out.pop("energy_ev"))
    if "energy_kev" in out:
        out["energy"] = units.ev_to_joule(out.pop("energy_kev") * 1e3)
    if isinstance(out.get("frames"), dict):
        f = out["frames"]
        out["frames"] = slice(f.get("start"), f.get("stop"), f.get("step"))
    for k in ("padding", "bin", "crop", "center", "obj_shape", "detector_pixel_size", "pixel_size"):
        if isinstance(out.get(k), list):
            out[k] = tuple(out[k])
    return out


class StopOnSignal:
    """While active, SIGINT and SIGTERM ask the reconstruction to stop after the current epoch
    (`Reconstruction.stop`); a second SIGINT raises KeyboardInterrupt at once, except inside `hold`
    (a result or checkpoint being written), where it waits for the write to finish."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, rec):
        self.rec, self.signum, self.previous, self.holding = rec, None, {}, 0

    def _handler(self, signum, frame):
        # inside `hold` only noted: cutting the write of a result or checkpoint short would lose the run
        if self.signum is not None and signum == signal.SIGINT and not self.holding:
            raise KeyboardInterrupt("a second SIGINT: stopped at once, without writing a checkpoint")
        self.signum = self.signum or signum
        self.rec.stop()

    @contextlib.contextmanager
    def hold(self):
        """Signals that arrive inside the block only stop the run (they never interrupt the block)."""
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1

    def __enter__(self):
        for s in self.SIGNALS:
            self.previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False


class WriteFailed(OSError):
    """A run's result (or the checkpoint of a run stopped by a signal) could not be written. The run's
    state was saved at `saved` (None: nowhere could take it; `failures` says why) and `command`
    resumes it; `result` is the finished Result (None for a stopped run)."""

    def __init__(self, what, target, cause, saved, failures, command, result=None):
        head = "the run finished, but its result" if what == "result" else "the checkpoint"
        super().__init__(f"{head} could not be written to {target} ({_reason(cause)})"
                         + (f"; the run's state was saved to {saved}" if saved else "; its state could not be saved"))
        self.errno = getattr(cause, "errno", None)
        self.what, self.target, self.cause, self.saved = what, Path(target), cause, saved
        self.failures, self.command, self.result = failures, command, result

    def lines(self):
        """What the command line says: the error, where the state went (or why nowhere), how to resume."""
        out = [f"error: {self}"]
        out += [f"note: could not save the state at {path} either ({why})" for path, why in self.failures]
        if self.saved:
            out.append(f"{'write the result' if self.what == 'result' else 'resume'} with: {self.command}")
        return out


@dataclass
class Outcome:
    """How a run ended. `result` is None when a signal stopped it (a checkpoint was written);
    `stopped_by` is the signal's number, also when it came after the last epoch."""
    result: object
    reconstruction: object
    output: Path
    checkpoint: Path
    data: str
    start_epoch: int
    stopped_by: int | None
    seconds: float

    @property
    def complete(self):
        return self.result is not None

    def resume_command(self, force=False):
        """The command that continues this run (with --force also when the state was saved elsewhere
        and the output's own checkpoint path is taken)."""
        own = checkpoint_path(self.output)
        force = force or (Path(self.checkpoint) != own and os.path.lexists(own))
        return _resume_command(self.data, self.checkpoint, self.output, force)


def _resume_command(data, ckpt, output, force):
    command = ["cuptycho", "reconstruct", os.fspath(data), "--resume", os.fspath(ckpt), "-o", os.fspath(output)]
    return shlex.join(command + (["--force"] if force else []))


def with_overrides(run, overrides):
    """`run` (a config.RunConfig) with the {dotted key: value} `overrides` set, checked by the schema; the keys
    set count as given (the measured-data defaults leave them alone)."""
    if not overrides:
        return run
    doc = C.to_dict(run.config, data=run.data, output=run.output)
    for key, value in overrides.items():
        doc = C.override(doc, key, value)
    return dataclasses.replace(C.from_dict(doc, source="the command line"), explicit=run.explicit | set(overrides))


def new_run_config(run, ds, note: Callable[[str], None] = lambda line: None, measured_defaults=True):
    """The configuration a new run of `ds` uses: the measured-data defaults fill what `run` leaves unset, and
    without a probe guess in the file the probe starts from the data and is refined (each said through `note`)."""
    cfg = run.config
    if measured_defaults:
        cfg, applied = defaults.apply(cfg, ds.n_patterns, run.explicit)
        if applied:
            note("note: " + defaults.describe(cfg))
    if "init_probe" not in run.explicit and ds.probe is None:
        cfg.init_probe = "data"
        if "probe.enabled" not in run.explicit:
            cfg.probe = dataclasses.replace(cfg.probe, enabled=True)
        note("note: the data file has no probe guess: the probe starts from the data's mean pattern "
             "(init_probe = \"data\") and is refined ([probe] enabled = true)")
    return cfg


class ResumableRun:
    """One reconstruction of a data file, ready to `execute`; everything is checked on construction,
    before any work is done (the configuration, the data, every output).

    config : a TOML path, a `config.RunConfig`, or None (defaults; resuming: the checkpoint's own).
    overrides : {dotted key: value} applied over the configuration (checked by the same schema),
        e.g. {"epochs": 300, "probe.lr": 0.05}; from the command line's --set / --epochs / ... .
    note : called with one line for each thing the run decided that the user did not ask for.
    """

    def __init__(self, data=None, *, config=None, overrides=None, resume=None, output=None, checkpoint_every=None,
                 force=False, note: Callable[[str], None] = lambda line: None, comm=None):
        # several MPI ranks (cuptycho.parallel): every rank runs, rank 0 alone writes and speaks
        self.comm = parallel.communicator(comm)
        self.lead = self.comm.rank == 0
        self.force, self.note = force, (note if self.lead else (lambda line: None))
        run = self._configuration(config, overrides or {}, resume)
        self.data = os.fspath(data or run.data.get("path") or (self.saved or {}).get("data") or "")
        if not self.data:
            raise ValueError("no data file: give DATA, or path in the config's [data] table")
        if self.saved is not None and Path(self.data).resolve() != Path(self.saved["data"]).resolve():
            note(f"note: the checkpoint was made from {self.saved['data']}; continuing with {self.data}")
        every = checkpoint_every if checkpoint_every is not None else run.output.get("checkpoint_every", 0)
        if every < 0:
            raise ValueError(f"--checkpoint-every must be >= 0, got {every}")
        self.every = every
        self._outputs(output, resume, config)
        self._build(run)
        self._check_room()

    def _configuration(self, config, overrides, resume):
        """The RunConfig in force: file or defaults, the checkpoint's when resuming without one,
        then the overrides; a resumed run refuses settings that differ from its checkpoint's."""
        given = config is not None
        run = C.load(config) if isinstance(config, (str, os.PathLike)) else (config or C.RunConfig())
        origin = f"--config {os.fspath(config)}" if isinstance(config, (str, os.PathLike)) else "the configuration"
        self.state, self.saved = None, None
        if resume:
            self.state = checkpoint.load(resume)
            self.saved = self.state.get("cli")
            if self.saved is None and not given:
                raise ValueError(f"{resume} records no configuration (it was not written by the command line); "
                                 "pass the run's --config")
        saved_run = None
        if self.saved is not None:
            saved_run = C.from_dict(self.saved["config"], source=f"checkpoint {resume}")
            if not given:
                run = saved_run
        run = with_overrides(run, overrides)
        if saved_run is not None:
            # the checkpoint's run had the measured-data defaults filled in (`_build`): so has this one
            n = len(self.state["arrays"]["correction"])
            run = dataclasses.replace(run, config=defaults.apply(run.config, n, run.explicit)[0])
            diff = differences(C.to_dict(run.config), C.to_dict(saved_run.config))
            if diff:
                key, mine, theirs = diff[0]
                raise ValueError(f"{origin} sets {key} = {mine!r} but the checkpoint's run used {theirs!r} "
                                 f"({len(diff)} difference(s)); a resumed run continues with the checkpoint's "
                                 f"settings (only {', '.join(sorted(RESUME_FREE))} may change): leave out --config "
                                 "and --set to use them")
        return run

    def _outputs(self, output, resume, config):
        """Refuse, before any work: an output that is an input (also through a link), that exists
        (without force) or is not a regular file, or whose folder cannot take a new file."""
        self.output = Path(output) if output else default_output(self.data)
        self.checkpoint = checkpoint_path(self.output)
        self.resuming_here = bool(resume) and (atomic.same_file(resume, self.checkpoint)
                                               or Path(resume).resolve() == self.checkpoint.resolve())
        inputs = [("the input data file", self.data), ("the checkpoint being resumed", resume)]
        if isinstance(config, (str, os.PathLike)):
            inputs.append(("the --config file", config))
        for what, out in (("output", self.output), ("checkpoint", self.checkpoint)):
            for name, path in inputs:
                if path and atomic.same_file(out, path) and not (out is self.checkpoint and self.resuming_here
                                                                 and path is resume):
                    raise ValueError(f"the {what} {out} is {name} {os.fspath(path)}; choose another -o")
        atomic.check_writable(self.output, overwrite=self.force, probe=True)
        atomic.check_writable(self.checkpoint, overwrite=True)          # not a folder, device, FIFO
        if os.path.lexists(self.checkpoint) and not self.force and not self.resuming_here:
            raise FileExistsError(f"{self.checkpoint} already exists (the checkpoint of an earlier run?): continue "
                                  f"it with --resume {self.checkpoint}, or pass --force to start afresh and replace it")
        if self.checkpoint.parent.resolve() != self.output.parent.resolve():     # today always the same folder
            atomic.check_folder(self.checkpoint.parent)

    def _build(self, run):
        """The dataset and the engine (with the checkpoint's state when resuming)."""
        try:
            # several ranks share the checking pass of streamed data (each reads a part of the file)
            ranks = {"comm": self.comm} if self.comm.size > 1 else {}
            self.dataset = ds = io.load(self.data, **reader_options(run.data), **ranks)
        except TypeError as err:
            raise ValueError(f"{self.data}: a [data] option does not apply to this kind of file ({err})") from None
        cfg = run.config
        if self.saved is None:                                 # not a command line's checkpoint: fill the gaps
            cfg = new_run_config(run, ds, self.note, measured_defaults=self.state is None)
        self.rec = rec = engines.create(ds, cfg, comm=None if self.comm.size == 1 else self.comm)
        self.config = rec.cfg
        data = os.fspath(Path(self.data).resolve())
        self.effective = C.to_dict(dataclasses.replace(rec.cfg, backend=rec.device, progress=None),
                                   data={**run.data, "path": data}, output={"checkpoint_every": self.every})
        if self.state is not None:
            n = ds.n_patterns
            have = self.state["arrays"].get("correction")
            if have is None or have.shape != (n, 2):
                raise ValueError(f"the checkpoint was made for {None if have is None else have.shape[0]} positions; "
                                 f"{self.data} has {n}")
            try:
                rec.load_state_dict(self.state)
            except (KeyError, ValueError) as err:
                raise ValueError(f"the checkpoint does not fit this run ({type(err).__name__}: {err})") from None
        self.start = rec.epoch

    def _check_room(self):
        """A warning now, rather than a surprise after the last epoch, when the output's folder has less
        room than the result needs (the object and probe are stored twice: ptychodus' layout and ours)."""
        arrays = (getattr(self.rec, "obj", None), getattr(self.rec, "probe", None))
        need = 2 * sum(int(getattr(a, "nbytes", 0)) for a in arrays) + (1 << 16)     # + positions, history, ...
        folder = self.output.parent if str(self.output.parent) else Path(".")
        try:
            st = os.statvfs(folder)
        except (OSError, AttributeError):        # no statvfs (Windows): nothing to say
            return
        free = st.f_bavail * st.f_frsize
        if free < need:
            self.note(f"warning: {folder} has {free / 1e6:.3g} MB free but the result needs about {need / 1e6:.3g} "
                      "MB; if it cannot be written, the run's state is saved elsewhere and the place is printed")

    def describe(self) -> str:
        ds, cfg, rec = self.dataset, self.config, self.rec
        n, ny, nx = ds.data.shape
        return (f"reconstructing {self.data}: {n} patterns of {ny} x {nx}, object {ds.obj_shape}, {ds.propagator}, "
                f"{cfg.epochs} epochs of the {cfg.engine} engine on {rec.device}"
                + (f", resumed at epoch {self.start}" if self.state is not None else "")
                + (f", checkpoint every {self.every} epochs" if self.every else "") + "; " + refined_groups(rec)
                + "".join(f"; the given probe scaled by {e['factor']:.4g} to the data's counts (fit_probe_scale)"
                          for e in rec.events if e.get("event") == "probe_scale" and self.state is None))

    def save_checkpoint(self, path=None):
        if not self.lead:                         # every rank holds the same state; rank 0 writes it
            return
        state = self.rec.state_dict()
        state["cli"] = {"config": self.effective, "data": os.fspath(Path(self.data).resolve()),
                        "output": os.fspath(self.output)}
        checkpoint.save(state, self.checkpoint if path is None else path)

    def save_anywhere(self, failed=None):
        """Save the state where it fits: the checkpoint path (unless that already `failed` with this
        exception), else a new file in the temporary folder ($TMPDIR), else in the working folder.
        Returns (the path or None, [(path, why) for each place that failed])."""
        failures, tried = [], set()
        if failed is None:
            try:
                self.save_checkpoint()
                return self.checkpoint, failures
            except Exception as err:             # noqa: BLE001 - whatever it was, try elsewhere
                failed = err
        failures.append((self.checkpoint, _reason(failed)))
        tried.add(self.checkpoint.parent.resolve())
        for folder in (Path(tempfile.gettempdir()), Path.cwd()):
            if folder.resolve() in tried:
                continue
            tried.add(folder.resolve())
            path = None
            try:                                 # a new name: never replaces anyone's file in a shared folder
                fd, name = tempfile.mkstemp(prefix=f"{self.output.stem}.", suffix=".ckpt.npz", dir=folder)
                os.close(fd)
                path = Path(name)
                self.save_checkpoint(path)
                return path, failures
            except Exception as err:             # noqa: BLE001
                failures.append((folder, _reason(err)))
                if path is not None:
                    with contextlib.suppress(OSError):
                        path.unlink()
        return None, failures

    def _fail(self, what, target, err, result=None):
        """WriteFailed for `err`, after saving the state wherever it fits."""
        saved, failures = self.save_anywhere(failed=err if Path(target) == self.checkpoint else None)
        failures = [f for f in failures if Path(f[0]) != Path(target)]       # said once, in the error itself
        force = self.force or (saved != self.checkpoint and os.path.lexists(self.checkpoint))
        command = _resume_command(self.data, saved, self.output, force) if saved else None
        return WriteFailed(what, target, err, saved, failures, command, result)

    def execute(self, progress=None, *, handle_signals=True) -> Outcome:
        """Run to the last epoch (checkpoints on the way), write the result and return the Outcome.
        `progress` is `Config.progress` (called with each epoch's record). With `handle_signals`,
        SIGINT / SIGTERM stop after the current epoch with a checkpoint (Outcome.result None), and wait
        for a result or checkpoint being written.

        Raises `WriteFailed` when the result (or a stopped run's checkpoint) cannot be written, after
        saving the state elsewhere; a periodic checkpoint that fails is only a warning (`note`)."""
        rec, cfg = self.rec, self.config
        cfg.progress = progress
        t0 = time.perf_counter()
        # under MPI every rank handles the signal mpiexec forwards, and the ranks agree on the epoch to stop after
        # (Distributed.stop_agreed); rank 0 writes the checkpoint
        stop = StopOnSignal(rec) if handle_signals else None
        hold = stop.hold if stop is not None else contextlib.nullcontext
        saved = self.checkpoint

        def going():
            if rec.interrupted:                  # the last `run` stopped on a request (on every rank)
                return False
            return self.comm.size > 1 or stop is None or stop.signum is None
        with stop if stop is not None else contextlib.nullcontext():
            while rec.epoch < cfg.epochs and not rec.finished and going():
                until = cfg.epochs if not self.every else min(cfg.epochs, (rec.epoch // self.every + 1) * self.every)
                rec.run(until=until)
                if going() and self.every and rec.epoch % self.every == 0 and rec.epoch < cfg.epochs \
                        and not rec.finished:
                    with hold():
                        try:
                            self.save_checkpoint()
                        except OSError as err:   # the run goes on; the final write has its own fallback
                            self.note(f"warning: could not write the checkpoint of epoch {rec.epoch} "
                                      f"({_reason(err)}); the run goes on")
            result = None
            with hold():
                if rec.epoch >= cfg.epochs or rec.finished:
                    result = rec.result()
                    try:
                        if self.lead:
                            io.write_result(self.output, result, self.dataset, config=self.effective,
                                            overwrite=self.force)
                    except Exception as err:     # noqa: BLE001 - a full disk, EIO, a file that appeared, ...
                        raise self._fail("result", self.output, err, result) from err
                    if self.every or self.resuming_here:   # the checkpoint follows the result (--resume --epochs)
                        try:
                            self.save_checkpoint()
                        except OSError as err:
                            self.note(f"warning: the result is complete, but the checkpoint {self.checkpoint} "
                                      f"could not be updated ({_reason(err)})")
                else:                                       # stopped by a signal
                    try:
                        self.save_checkpoint()
                    except Exception as err:     # noqa: BLE001
                        failure = self._fail("checkpoint", self.checkpoint, err)
                        if failure.saved is None:
                            raise failure from err
                        self.note(f"note: {failure}")
                        saved = failure.saved
            signum = None if stop is None else stop.signum      # read last: a signal during the write counts
            if self.comm.size > 1 and rec.interrupted:         # the signal every rank reports, as rank 0 does
                signum = int(self.comm.maximum(float(signum or 0))) or None
        return Outcome(result=result, reconstruction=rec, output=self.output, checkpoint=saved,
                       data=self.data, start_epoch=self.start, stopped_by=signum, seconds=time.perf_counter() - t0)


def _reason(err) -> str:
    """Why a write failed, without the file name the caller already gives: "No space left on device"."""
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno)
    return str(err) or type(err).__name__


def reconstruct_file(data=None, **options) -> Outcome:
    """`ResumableRun(data, **options).execute()`: reconstruct a data file and write the result."""
    progress = options.pop("progress", None)
    handle_signals = options.pop("handle_signals", True)
    return ResumableRun(data, **options).execute(progress, handle_signals=handle_signals)


def refined_groups(rec) -> str:
    """What the run refines and what it keeps fixed, said once at the start (a group that is off by default,
    such as the probe, is then never a surprise): e.g. "refines object, probe (from epoch 5); fixed: positions"."""
    on, off = [], []
    for name in rec.opt:
        group = getattr(rec.cfg, name)
        if name == "z" and rec.z0 is None:
            continue
        (on if group.enabled else off).append(name + (f" (from epoch {group.start_epoch})"
                                                      if group.enabled and group.start_epoch else ""))
    return "refines " + (", ".join(on) or "nothing") + ("; fixed: " + ", ".join(off) if off else "")
