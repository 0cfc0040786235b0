"""Command line: `cuptycho simulate | reconstruct | show | info | bench | demo`.

    cuptycho simulate small_farfield -o sim.cxi
    cuptycho info sim.cxi
    cuptycho reconstruct sim.cxi --config run.toml -o recon.cxi --checkpoint-every 50
    cuptycho show recon.cxi -o recon.png

Exit codes
----------
0    done.
1    `demo` only: the recovered object is not good enough.
2    a user error (bad files, bad configuration, an output that exists, is an input or is not a
     regular file, a folder that cannot be written): one line ``cuptycho: error: ...`` on stderr,
     without a traceback (set CUPTYCHO_DEBUG=1 to see one), found before any work where it can be.
     A write that fails in `simulate` or `show` (nothing is lost: run it again) is one too.
3    `reconstruct` diverged more than max_divergences times (see divergence_factor): the result is
     written, holding the best state reached, not a converged one.
74   (EX_IOERR) `reconstruct` finished, or was stopped by a signal, but its result (or checkpoint)
     could not be written (a full disk, a read-only mount, an I/O error): the error names the output,
     the run's state is saved as a checkpoint (at ``OUT.ckpt.npz``, else in $TMPDIR or the working
     folder: the path is printed) and the printed command resumes it, which only writes the result.
130  / 143: SIGINT / SIGTERM stopped `reconstruct` after the current epoch; a checkpoint (``OUT`` with
     the suffix ``.ckpt.npz``) is written and the command that resumes it printed. A second SIGINT
     stops at once, without a checkpoint, except while a result or checkpoint is being written: the
     write is finished first.

Outputs are written atomically and an existing file is replaced only with ``--force``, which replaces
regular files only (a symbolic link is replaced itself, never written through; a folder, device,
FIFO or socket is refused), and never an input of the same command.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path

EXIT_USAGE = 2
EXIT_DIVERGED = 3                # the run kept diverging: the result holds its best state
EXIT_IOERR = 74                  # sysexits.h EX_IOERR: finished, but the result could not be written


def _say(message: str) -> None:
    print(f"cuptycho: {message}", file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line each (through tqdm while a progress bar is drawn)."""
    text = f"cuptycho: warning: {message}"
    if _Progress.active is not None:
        _Progress.active.write(text)
    else:
        print(text, file=sys.stderr if file is None else file, flush=True)


# --------------------------------------------------------------------------- demo

def demo(args) -> int:
    """Simulate a small experiment and reconstruct it with the gradient engine.

    By default the reconstruction is blind: the probe starts from the data's mean pattern and is
    refined together with the object from a flat start. --known-probe gives it the true probe.
    """
    from cuptycho import Config, Group, reconstruct, simulate

    exp = simulate.preset(args.preset, seed=args.seed)
    ds = exp.dataset()
    if args.known_probe:
        ds.probe = exp.probe
    n = exp.positions.shape[0]
    print(f"cuptycho demo: preset {args.preset!r}, {n} patterns of {exp.data.shape[1:]}, {exp.probe.shape[0]} "
          f"probe mode(s), {exp.propagator} propagation, object {exp.obj.shape[1:]}, "
          f"{'known' if args.known_probe else 'unknown (refined)'} probe")
    print(f"{'epoch':>6} {'loss':>12} {'correlation':>12} {'seconds':>8}")
    every = max(1, args.epochs // 10)

    def progress(rec):
        if rec["epoch"] % every == 0 or rec["epoch"] == args.epochs - 1:
            print(f"{rec['epoch']:>6} {rec['loss']:>12.5g} {rec['object_correlation']:>12.4f} {rec['seconds']:>8.3f}",
                  flush=True)

    cfg = Config(epochs=args.epochs, batch=8, object=Group(lr=0.1), probe=Group(enabled=not args.known_probe, lr=0.05),
                 init_probe="dataset" if args.known_probe else "data", backend=args.backend, progress=progress,
                 seed=args.seed, metrics_every=every)
    result = reconstruct(ds, cfg)
    corr = result.history[-1]["object_correlation"]
    print(f"{len(result.history)} epochs in {result.timings['total']:.2f} s on the {result.device} backend; "
          f"object correlation with the truth {corr:.4f}")
    return 0 if corr > 0.9 else 1


# --------------------------------------------------------------------------- simulate

def simulate_cmd(args) -> int:
    from . import config as C
    from . import io, simulate

    options = {}
    if args.config:
        run = C.load(args.config)
        if run.simulate is None:
            raise ValueError(f"config {args.config}: no [simulate] table (give a preset name instead, or add "
                             "[simulate] with preset = \"small_farfield\" and simulate() keywords)")
        options = dict(run.simulate)
    name = args.preset or options.pop("preset", None) or "small_farfield"
    options.pop("preset", None)
    if args.seed is not None:
        options["seed"] = args.seed
    io.check_writable(args.output, overwrite=args.force, probe=True)
    try:
        exp = simulate.preset(name, **options)
    except TypeError as err:                   # a keyword simulate() does not take
        raise ValueError(f"[simulate]: {err}") from None
    ds = exp.measurement()
    io.write_cxi(args.output, ds, overwrite=args.force)
    print(f"cuptycho: wrote {args.output}: preset {name!r}"
          + (f" with {', '.join(f'{k}={v!r}' for k, v in options.items())}" if options else ""))
    print(ds.describe())
    return 0


# --------------------------------------------------------------------------- info, show, bench

def info_cmd(args) -> int:
    from . import io

    print(io.info(args.file))
    return 0


def plan_cmd(args) -> int:
    from . import config as C
    from . import io, memory_plan
    from .run import new_run_config, reader_options, with_overrides

    run = C.load(args.config) if args.config else C.RunConfig()
    run = with_overrides(run, dict(C.parse_assignment(text) for text in args.set or ()))
    path = args.data or run.data.get("path")
    if not path:
        raise ValueError("no data file: give DATA, or path in the config's [data] table")
    ds = io.load(path, **reader_options(run.data))
    plan = memory_plan.plan(ds, new_run_config(run, ds), device="cuda")
    print(memory_plan.describe(plan["host"], "host memory, CPU backend"))
    print(memory_plan.describe(plan["device"], "GPU memory, cuda backend (peak)"))
    return 0


def show_cmd(args) -> int:
    from . import report

    out = report.write_report(args.result, args.output, overwrite=args.force)
    print(f"cuptycho: wrote {out}")
    return 0


def _bench_module():
    """benchmarks/bench_gradient.py of a source checkout, imported, or None (an installed wheel)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gradient.py"
    if not path.exists():
        return None
    sys.path.insert(0, str(path.parent))      # it imports its neighbour `common`
    try:
        spec = importlib.util.spec_from_file_location("cuptycho_bench_gradient", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception as err:                  # a broken checkout: fall back to the built-in timing
        _say(f"note: cannot import {path} ({type(err).__name__}: {err}); using the built-in timing")
        return None
    finally:
        sys.path.remove(str(path.parent))


def bench_cmd(args) -> int:
    module = None if args.builtin else _bench_module()
    if module is not None:
        argv = list(args.options) or ["--quick", "--no-reference"]
        if args.backend in ("cpu", "cuda") and "--device" not in argv:
            argv += ["--device", args.backend]
        print(f"cuptycho bench: benchmarks/bench_gradient.py {shlex.join(argv)}", flush=True)
        module.main(argv)
        return 0
    if args.options:
        raise ValueError(f"bench options {shlex.join(args.options)} are for benchmarks/bench_gradient.py, which is "
                         "not available here (only in a source checkout)")
    return _builtin_bench(args)


def _builtin_bench(args) -> int:
    """Median time of one loss_and_grad over all patterns of the small far-field preset."""
    import statistics

    from . import backend as backends
    from . import loss_and_grad, simulate

    device = backends.resolve(args.backend)
    exp = simulate.preset("small_farfield", seed=0)
    kw = dict(backend=device, **exp.forward_kwargs())
    obj, probe, pos, data = exp.obj, exp.probe, exp.positions, exp.data
    if device == "cuda":
        cp = backends.cupy_module()
        obj, probe, data = cp.asarray(obj), cp.asarray(probe), cp.asarray(data)
    loss_and_grad(obj, probe, pos, data, **kw)                     # compile / plan / warm up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        value, grads = loss_and_grad(obj, probe, pos, data, **kw)
        float(value)                                               # waits for the device
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    n, ny, nx = exp.data.shape
    print(f"cuptycho bench (built-in): loss_and_grad on {device}, {n} patterns of {ny} x {nx}, "
          f"{exp.probe.shape[0]} probe mode(s), {exp.propagator}, {exp.obj.dtype}: median of {args.repeat} "
          f"{1e3 * t:.2f} ms ({1e6 * t / n:.1f} us per pattern)")
    return 0


# --------------------------------------------------------------------------- reconstruct

class _Progress:
    """Config.progress: a tqdm bar (epoch, loss, z, RMS position correction) on a terminal, else a log
    line every few epochs (the first and last included)."""

    active = None                               # the tqdm bar being drawn, for warnings

    def __init__(self, mode, total, initial):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.first = mode, total, True
        self.every = max(1, total // 20)
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="epoch", file=sys.stderr, dynamic_ncols=True,
                            desc="cuptycho")
            _Progress.active = self.bar

    @staticmethod
    def _fields(rec):
        text = f"loss {rec['loss']:.5g}"
        if rec.get("focus_distance") is not None:             # [focus]: z1 and the effective z it implies
            text += f"  z1 {rec['focus_distance']:.6g} m"
        if rec.get("z") is not None:
            text += f"  z {rec['z']:.6g} m"
        text += f"  pos-rms {rec.get('position_correction_rms', 0.0):.3g} px"
        if rec.get("background_mean") is not None:           # the detector model, when refined
            text += f"  background {rec['background_mean']:.4g}"
        if rec.get("scale_std") is not None:
            text += f"  scale-std {rec['scale_std']:.3g}"
        return text

    def __call__(self, rec):
        epoch = rec["epoch"]
        if self.bar is not None:
            self.bar.set_postfix_str(self._fields(rec), refresh=False)
            self.bar.update(1)
        elif self.mode == "log" and (self.first or (epoch + 1) % self.every == 0 or epoch + 1 == self.total):
            print(f"epoch {epoch + 1}/{self.total}  {self._fields(rec)}  {rec['seconds']:.3g} s", file=sys.stderr,
                  flush=True)
        self.first = False
        return False                             # never asks the engine to stop

    def close(self):
        if self.bar is not None:
            self.bar.close()
            _Progress.active = None


def warmup_cmd(args) -> int:
    from .api import warmup

    done = warmup(args.backend)
    what = "; ".join(done["compiled"]) or "nothing to compile (the NumPy reference)"
    print(f"cuptycho: {done['backend']} kernels ready in {done['seconds']:.2f} s: {what}")
    return 0


def reconstruct_cmd(args) -> int:
    from . import config as C
    from . import parallel
    from .run import ResumableRun, WriteFailed

    overrides = dict(C.parse_assignment(text) for text in args.set or ())
    for key in ("epochs", "backend", "engine"):           # the shortcuts for the commonest --set keys
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    comm = parallel.from_environment()         # started by mpiexec with several ranks: one run over them all
    with parallel.abort_on_error(comm):
        run = ResumableRun(args.data, config=args.config, overrides=overrides, resume=args.resume,
                           output=args.output, checkpoint_every=args.checkpoint_every, force=args.force, note=_say,
                           comm=comm)
        if not run.lead:                       # the other ranks compute; rank 0 speaks and writes
            outcome = run.execute(None)
            return 128 + outcome.stopped_by if outcome.result is None else 0
        _say(run.describe())
        progress = _Progress(args.progress, run.config.epochs, run.start)
        try:
            try:
                outcome = run.execute(progress)
            finally:
                progress.close()
        except WriteFailed as err:             # the state is saved (or why not is said): never a plain exit 2
            for line in err.lines():
                _say(line)
            return EXIT_IOERR
    rec = outcome.reconstruction
    if outcome.result is None:                 # stopped by a signal: checkpoint written, say how to resume
        name = signal.Signals(outcome.stopped_by).name
        _say(f"{name}: stopped after epoch {rec.epoch} of {run.config.epochs}; checkpoint written to "
             f"{outcome.checkpoint}")
        _say(f"resume with: {outcome.resume_command(args.force)}")
        return 128 + outcome.stopped_by
    result = outcome.result
    last = result.history[-1]["loss"] if result.history else float("nan")
    per_pixel = [h["loss_per_pixel"] for h in result.history if "loss_per_pixel" in h]
    stopped = [e.get("reason") for e in result.events if e.get("event") == "stopped"]
    print(f"cuptycho: {len(result.history)} epochs ({rec.epoch - outcome.start_epoch} now) in {outcome.seconds:.1f} s "
          f"on {rec.device}, final loss {last:.6g}" + (f" ({per_pixel[-1]:.6g} per pixel)" if per_pixel else "")
          + (f", stopped early: {stopped[-1]}" if stopped else "")
          + f"; wrote {outcome.output}")
    if run.dataset.pixel_size is None:
        _say(f"note: {run.data} records no wavelength, detector distance and pixel size: lengths in "
             f"{outcome.output} (translations, image sizes) are in object pixels, marked units = 'pixel'; "
             "give the geometry under [data] for metres")
    if outcome.stopped_by is not None:
        _say(f"{signal.Signals(outcome.stopped_by).name} came after the last epoch: the result is complete")
    if rec.diverged:
        _say(f"error: the run diverged ({rec.divergences} rollbacks > max_divergences = {run.config.max_divergences});"
             f" {outcome.output} holds the best state reached, not a converged one: lower the learning rates")
        return EXIT_DIVERGED
    return 0


# --------------------------------------------------------------------------- the parser

def _non_negative(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    from .settings import BACKENDS, ENGINES
    from .simulate import PRESETS

    top = argparse.ArgumentParser(prog="cuptycho", description="Ptychographic reconstruction engine.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backends = list(BACKENDS)

    p = sub.add_parser("simulate", help="write a simulated measurement as CXI (a preset, or [simulate] in a TOML)",
                       description="Simulate a ptychography experiment and write it as a CXI file (patterns, "
                                   "nominal positions, geometry; no probe guess, no truth).")
    p.add_argument("preset", nargs="?", help=f"simulator preset: {', '.join(PRESETS)} (default: the config's "
                                             "[simulate] preset, else small_farfield)")
    p.add_argument("--config", metavar="FILE.toml", help="a TOML file with a [simulate] table: preset = NAME and "
                                                         "keywords of cuptycho.simulate.simulate")
    p.add_argument("--seed", type=_non_negative, help="random seed (overrides the preset's)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.cxi")
    p.add_argument("--force", action="store_true",
                   help="replace an existing OUT (a regular file, or a symbolic link itself)")
    p.set_defaults(run=simulate_cmd)

    p = sub.add_parser("reconstruct", help="reconstruct a measurement (CXI/HDF5, TIFF, NPZ) and write the result",
                       description="Reconstruct object, probe, positions and z from a data file. The result is "
                                   "CXI (ptychodus layout plus /entry_1/cuptycho with the effective configuration). "
                                   "SIGINT / SIGTERM stop after the current epoch with a checkpoint (exit 130 / "
                                   "143); --resume continues it.")
    p.add_argument("data", nargs="?", metavar="DATA", help="the data file (default: path in the config's [data])")
    p.add_argument("--config", metavar="FILE.toml", help="engine, [data] and [output] options (cuptycho.config)")
    p.add_argument("-o", "--output", metavar="OUT.cxi", help="result file (default: DATA's name + .result.cxi)")
    p.add_argument("--backend", choices=backends, help="overrides the config's backend")
    p.add_argument("--engine", choices=ENGINES, help="overrides the config's engine (gradient, or a classical PIE "
                                                     "engine: epie, rpie, mpie)")
    p.add_argument("--epochs", type=_non_negative, help="overrides the config's epochs (resuming: extends the run)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set any configuration key over the config file, e.g. --set probe.lr=0.05 --set batch=8 "
                        "(KEY as in the TOML file, table.key; VALUE a TOML value); repeatable")
    p.add_argument("--resume", metavar="CKPT", help="continue from this checkpoint (its configuration is used)")
    p.add_argument("--checkpoint-every", type=_non_negative, metavar="N",
                   help="write OUT's .ckpt.npz every N epochs (default: [output] checkpoint_every, else 0: only "
                        "on SIGINT / SIGTERM)")
    p.add_argument("--progress", choices=["auto", "bar", "log", "none"], default="auto",
                   help="a progress bar (auto: on a terminal), log lines (auto: otherwise) or nothing")
    p.add_argument("--force", action="store_true",
                   help="replace an existing OUT and checkpoint (regular files, or symbolic links themselves; never "
                        "an input)")
    p.set_defaults(run=reconstruct_cmd)

    p = sub.add_parser("plan", help="print the memory a reconstruction needs, host and GPU, before running it",
                       description="The memory plan of `cuptycho reconstruct DATA` with the same --config and --set: "
                                   "host bytes by term (the budget check's estimate) and the GPU's peak by term "
                                   "(data, parameters and their optimiser copies, cached FFT and scratch buffers, "
                                   "the set-up's fits, the largest transient).")
    p.add_argument("data", nargs="?", metavar="DATA", help="the data file (default: path in the config's [data])")
    p.add_argument("--config", metavar="FILE.toml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="as for reconstruct; repeatable")
    p.set_defaults(run=plan_cmd)

    p = sub.add_parser("show", help="draw a result's report as PNG",
                       description="Object magnitude and phase, probe modes, loss curve, position corrections "
                                   "and z trajectory of a result file, as one PNG.")
    p.add_argument("result", metavar="RESULT", help="a result file written by cuptycho reconstruct")
    p.add_argument("-o", "--output", required=True, metavar="REPORT.png")
    p.add_argument("--force", action="store_true",
                   help="replace an existing REPORT.png (a regular file, or a symbolic link itself; never RESULT)")
    p.set_defaults(run=show_cmd)

    p = sub.add_parser("info", help="describe what a data or result file holds")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(run=info_cmd)

    p = sub.add_parser("bench", help="time the gradient step (benchmarks/bench_gradient.py in a checkout)",
                       description="Runs benchmarks/bench_gradient.py (default: --quick --no-reference) when the "
                                   "source checkout has it, else a built-in timing of loss_and_grad. Options after "
                                   "'--' go to bench_gradient.py.")
    p.add_argument("--backend", choices=backends, default="auto")
    p.add_argument("--builtin", action="store_true", help="the built-in timing even in a checkout")
    p.add_argument("--repeat", type=_non_negative, default=10, help="built-in timing: repetitions (default 10)")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options for bench_gradient.py (after --)")
    p.set_defaults(run=bench_cmd)

    p = sub.add_parser("warmup", help="compile (or load) the kernels now (a container image, a beamtime's start)")
    p.add_argument("--backend", default="auto", choices=backends)
    p.set_defaults(run=warmup_cmd)

    p = sub.add_parser("demo", help="simulate a small dataset and recover its object (built-in example)")
    p.add_argument("--preset", default="small_farfield", help="simulator preset (default: small_farfield)")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--known-probe", action="store_true", help="give the engine the true probe (object only)")
    p.add_argument("--backend", default="auto", choices=backends)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(run=demo)
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "options", None) and args.options[0] == "--":
        args.options = args.options[1:]
    debug = os.environ.get("CUPTYCHO_DEBUG", "") not in ("", "0")
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except KeyboardInterrupt as err:
        if debug:
            raise
        print(f"cuptycho: error: {err or 'interrupted'}", file=sys.stderr)
        return 128 + signal.SIGINT
    except (ValueError, OSError) as err:       # user errors (DataError, ConfigError, FileExistsError, ...)
        if debug:
            raise
        message = str(err) or type(err).__name__
        print(f"cuptycho: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
