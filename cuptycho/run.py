"""A resumable reconstruction of a data file: configuration, outputs, checkpoints and signals.

    outcome = cuptycho.run.reconstruct_file("scan.cxi", config="run.toml", output="scan.result.cxi",
                                            checkpoint_every=50)
    outcome.result, outcome.stopped_by     # the Result (None when a signal stopped the run)

What `cuptycho reconstruct` does, for Python users too: the configuration comes from a TOML file,
the checkpoint's own copy (resuming) or the defaults, with overrides (`--set KEY=VALUE`, `--epochs`,
...) checked by the same schema; every output is refused before any work if it exists (unless
`force`); a checkpoint (``OUT`` with the suffix ``.ckpt.npz``) is written every `checkpoint_every`
epochs and when SIGINT / SIGTERM stop the run after the current epoch; the result is CXI with the
effective configuration beside it. A resumed run continues exactly (same settings: a difference
from the checkpoint's configuration is refused, except the options in `RESUME_FREE`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import atomic, checkpoint, config as C, engines, io, units
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
    (`Reconstruction.stop`); a second SIGINT raises KeyboardInterrupt at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, rec):
        self.rec, self.signum, self.previous = rec, None, {}

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("a second SIGINT: stopped at once, without writing a checkpoint")
        self.signum = self.signum or signum
        self.rec.stop()

    def __enter__(self):
        for s in self.SIGNALS:
            self.previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False


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
        command = ["cuptycho", "reconstruct", self.data, "--resume", os.fspath(self.checkpoint), "-o",
                   os.fspath(self.output)]
        return shlex.join(command + (["--force"] if force else []))


class ResumableRun:
    """One reconstruction of a data file, ready to `execute`; everything is checked on construction,
    before any work is done (the configuration, the data, every output).

    config : a TOML path, a `config.RunConfig`, or None (defaults; resuming: the checkpoint's own).
    overrides : {dotted key: value} applied over the configuration (checked by the same schema),
        e.g. {"epochs": 300, "probe.lr": 0.05}; from the command line's --set / --epochs / ... .
    note : called with one line for each thing the run decided that the user did not ask for.
    """

    def __init__(self, data=None, *, config=None, overrides=None, resume=None, output=None, checkpoint_every=None,
                 force=False, note: Callable[[str], None] = lambda line: None):
        self.force, self.note = force, note
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
        self._outputs(output, resume)
        self._build(run)

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
        if overrides:
            doc = C.to_dict(run.config, data=run.data, output=run.output)
            for key, value in overrides.items():
                doc = C.override(doc, key, value)
            explicit = run.explicit | set(overrides)
            run = dataclasses.replace(C.from_dict(doc, source="the command line"), explicit=explicit)
        if saved_run is not None:
            diff = differences(C.to_dict(run.config), C.to_dict(saved_run.config))
            if diff:
                key, mine, theirs = diff[0]
                raise ValueError(f"{origin} sets {key} = {mine!r} but the checkpoint's run used {theirs!r} "
                                 f"({len(diff)} difference(s)); a resumed run continues with the checkpoint's "
                                 f"settings (only {', '.join(sorted(RESUME_FREE))} may change): leave out --config "
                                 "and --set to use them")
        return run

    def _outputs(self, output, resume):
        """Refuse, before any work, an output that is the input or that exists (without force)."""
        self.output = Path(output) if output else default_output(self.data)
        self.checkpoint = checkpoint_path(self.output)
        if Path(self.data).exists() and self.output.resolve() == Path(self.data).resolve():
            raise ValueError(f"the output {self.output} is the input data file; choose another -o")
        atomic.check_writable(self.output, overwrite=self.force)
        self.resuming_here = bool(resume) and Path(resume).resolve() == self.checkpoint.resolve()
        if self.checkpoint.exists() and not self.force and not self.resuming_here:
            raise FileExistsError(f"{self.checkpoint} already exists (the checkpoint of an earlier run?): continue "
                                  f"it with --resume {self.checkpoint}, or pass --force to start afresh and replace it")

    def _build(self, run):
        """The dataset and the engine (with the checkpoint's state when resuming)."""
        try:
            self.dataset = ds = io.load(self.data, **reader_options(run.data))
        except TypeError as err:
            raise ValueError(f"{self.data}: a [data] option does not apply to this kind of file ({err})") from None
        cfg = run.config
        if "init_probe" not in run.explicit and ds.probe is None and self.saved is None:
            cfg.init_probe = "data"
            if "probe.enabled" not in run.explicit:
                cfg.probe = dataclasses.replace(cfg.probe, enabled=True)
            self.note("note: the data file has no probe guess: the probe starts from the data's mean pattern "
                      "(init_probe = \"data\") and is refined ([probe] enabled = true)")
        self.rec = rec = engines.create(ds, cfg)
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

    def describe(self) -> str:
        ds, cfg, rec = self.dataset, self.config, self.rec
        n, ny, nx = ds.data.shape
        return (f"reconstructing {self.data}: {n} patterns of {ny} x {nx}, object {ds.obj_shape}, {ds.propagator}, "
                f"{cfg.epochs} epochs of the {cfg.engine} engine on {rec.device}"
                + (f", resumed at epoch {self.start}" if self.state is not None else "")
                + (f", checkpoint every {self.every} epochs" if self.every else ""))

    def save_checkpoint(self):
        state = self.rec.state_dict()
        state["cli"] = {"config": self.effective, "data": os.fspath(Path(self.data).resolve()),
                        "output": os.fspath(self.output)}
        checkpoint.save(state, self.checkpoint)

    def execute(self, progress=None, *, handle_signals=True) -> Outcome:
        """Run to the last epoch (checkpoints on the way), write the result and return the Outcome.
        `progress` is `Config.progress` (called with each epoch's record). With `handle_signals`,
        SIGINT / SIGTERM stop after the current epoch with a checkpoint (Outcome.result None)."""
        rec, cfg = self.rec, self.config
        cfg.progress = progress
        t0 = time.perf_counter()
        stop = StopOnSignal(rec) if handle_signals else None
        with stop if stop is not None else contextlib.nullcontext():
            while rec.epoch < cfg.epochs and not rec.finished and (stop is None or stop.signum is None):
                until = cfg.epochs if not self.every else min(cfg.epochs, (rec.epoch // self.every + 1) * self.every)
                rec.run(until=until)
                if (stop is None or stop.signum is None) and self.every and rec.epoch % self.every == 0 \
                        and rec.epoch < cfg.epochs and not rec.finished:
                    self.save_checkpoint()
            signum = None if stop is None else stop.signum
            result = None
            if rec.epoch >= cfg.epochs or rec.finished:
                result = rec.result()
                io.write_result(self.output, result, self.dataset, config=self.effective, overwrite=self.force)
                if self.every or self.resuming_here:   # the checkpoint follows the result (--resume --epochs)
                    self.save_checkpoint()
            else:                                       # stopped by a signal
                self.save_checkpoint()
        return Outcome(result=result, reconstruction=rec, output=self.output, checkpoint=self.checkpoint,
                       data=self.data, start_epoch=self.start, stopped_by=signum, seconds=time.perf_counter() - t0)


def reconstruct_file(data=None, **options) -> Outcome:
    """`ResumableRun(data, **options).execute()`: reconstruct a data file and write the result."""
    progress = options.pop("progress", None)
    handle_signals = options.pop("handle_signals", True)
    return ResumableRun(data, **options).execute(progress, handle_signals=handle_signals)
