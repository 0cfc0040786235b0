"""Shared by the experiment scripts in this folder: command-line options, the machine, tables, JSON.

Small and generic on purpose; each experiment keeps its own physics and settings.

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    add_arguments(parser, epochs=300, quick_epochs=40)
    args = parser.parse_args()
    epochs = resolve_epochs(args)
    ...
    print_table(rows, COLUMNS)
    write_json(args.json, {"config": ..., "history": ..., "machine": machine()})
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RAW = argparse.RawDescriptionHelpFormatter

# The repository root, so `python benchmarks/experiments/x.py` works from a checkout without installing.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path and (_ROOT / "cuptycho").is_dir():
    sys.path.insert(0, str(_ROOT))


def add_arguments(parser: argparse.ArgumentParser, *, epochs: int, quick_epochs: int, every: int = 10):
    """The options every experiment takes: --epochs --backend --seed --json --quick --every."""
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs to run (default {epochs}; {quick_epochs} with --quick)")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cuda", "numpy", "auto"),
                        help="cuptycho backend (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation and of the minibatch order")
    parser.add_argument("--json", metavar="PATH", default=None, help="write config, history and timings here")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (fewer epochs)")
    parser.add_argument("--every", type=int, default=None,
                        help=f"print a table row every this many epochs (default {every}; the last row always)")
    parser.set_defaults(_default_epochs=epochs, _quick_epochs=quick_epochs, _default_every=every)
    return parser


def resolve_epochs(args) -> int:
    """--epochs if given, else the quick or the full default."""
    if args.epochs is not None:
        if args.epochs < 1:
            raise SystemExit(f"--epochs must be >= 1, got {args.epochs}")
        return args.epochs
    return args._quick_epochs if args.quick else args._default_epochs


def resolve_every(args, epochs: int) -> int:
    every = args.every if args.every is not None else args._default_every
    return max(1, min(int(every), epochs))


def machine() -> dict:
    """Where the numbers were measured."""
    import cuptycho

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "numpy": np.__version__,
        "cuptycho": getattr(cuptycho, "__version__", None),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
    except OSError:
        info["cpu_model"] = None
    return info


def _fmt(value, spec):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


class Table:
    """A table printed row by row as a run goes: `Table(columns).row(record)`; the header comes with
    the first row. `columns` is [(header, key, format spec), ...]; a column is at least `width` wide."""

    def __init__(self, columns, width=9, file=None):
        self.columns, self.file = columns, file
        self.widths = [max(len(h), width) for h, _, _ in columns]
        self.started = False

    def row(self, record):
        file = self.file or sys.stdout
        if not self.started:
            print("  ".join(h.rjust(w) for (h, _, _), w in zip(self.columns, self.widths)), file=file)
            self.started = True
        cells = [_fmt(record.get(key), spec) for _, key, spec in self.columns]
        print("  ".join(c.rjust(w) for c, w in zip(cells, self.widths)), file=file, flush=True)


def run_tracked(recon, columns, *, every, verbose=True, derive=None, first=None):
    """Run a reconstruction (`cuptycho.engines.create`) to its end, keeping every epoch's record.

    Each record gains "wall" (the seconds of the whole epoch: the engine's step, metrics and
    bookkeeping) and whatever `derive(record)` returns (a dict); every `every` epochs and at the
    last one the record is printed as a row of `Table(columns)` when `verbose`, after the row
    `first` (e.g. the starting point) when given. Returns (result, records, wall seconds of the whole run).
    """
    rows, table = [], Table(columns)
    if verbose and first is not None:
        table.row(first)
    epochs = recon.cfg.epochs
    last = [time.perf_counter()]

    def progress(rec):
        now = time.perf_counter()
        rec = dict(rec, wall=now - last[0])
        last[0] = now
        if derive is not None:
            rec.update(derive(rec))
        rows.append(rec)
        if verbose and (rec["epoch"] % every == 0 or rec["epoch"] == epochs - 1):
            table.row(rec)
        return False

    recon.cfg.progress = progress
    t0 = last[0] = time.perf_counter()
    result = recon.run()
    return result, rows, time.perf_counter() - t0


def print_table(rows, columns, file=None):
    """Print `rows` (dicts) as an aligned table; `columns` is [(header, key, format spec), ...].

    A missing or None value prints as "-".
    """
    file = file or sys.stdout
    cells = [[_fmt(row.get(key), spec) for _, key, spec in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (h, _, _), w in zip(columns, widths)), file=file)
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)), file=file)
    file.flush()


def jsonable(obj):
    """Plain JSON types from NumPy scalars/arrays, tuples, dataclass dicts; NaN and inf become None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return repr(obj)


def write_json(path, payload) -> Path:
    """Write `payload` as strict JSON to `path` atomically (temporary file in the same folder, then a
    rename), replacing an existing file."""
    from cuptycho.atomic import open_atomic

    path = Path(path)
    text = json.dumps(jsonable(payload), indent=1, allow_nan=False)
    with open_atomic(path, "w", overwrite=True, encoding="utf-8") as fh:
        fh.write(text + "\n")
    return path
