"""The memory a run needs, bounded before anything is allocated: one clear error instead of a MemoryError.

`estimate` adds up the host memory of a reconstruction from plain numbers (patterns, object and probe
shapes, modes, precision, batch); `check` takes a dataset and a configuration (duck-typed: no engine
or settings import, so the engine calls it first thing in its constructor) and raises
`MemoryBudgetError` naming the dominant term when the estimate exceeds the budget. The readers
(`cuptycho.io`) call `require` to refuse, before reading, a file whose header claims more than the
machine holds.

The budget (`limit`) is the machine's physical memory, or a smaller cgroup limit, not what happens
to be free now: it refuses the impossible, it does not schedule. ``CUPTYCHO_MEMORY_LIMIT`` overrides
it (bytes, or a number with a suffix K, M, G or T, powers of 1024, "iB"/"B" optional), for tests and
for users on shared nodes.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from . import validation

ENV = "CUPTYCHO_MEMORY_LIMIT"
# each parameter (object, probe) is held as its value, its gradient, Adam's two moments, and the
# engine's last good copy of value and moments (restored after a divergence)
PARAMETER_COPIES = 7
# per position of a batch: the exit waves, their propagated fields and the fields of the gradient
WAVE_COPIES = 3
# the CPU kernels work through a batch in chunks of about this much wave buffer (cuptycho.model)
CPU_CHUNK_BYTES = int(os.environ.get("CUPTYCHO_CHUNK_BYTES", 4 << 20))

# streamed data (cuptycho.data_rows): a step evaluates at most this many bytes of float32 rows at once, and the
# epoch's reads come in blocks of this size, one read ahead
STREAM_PART_BYTES = 1 << 25
READ_AHEAD_BYTES = 1 << 24

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}


class MemoryBudgetError(ValueError):
    """A run or a file needs more memory than the budget allows; the message names what and how much."""


# --------------------------------------------------------------------------- sizes and the budget

def format_bytes(n) -> str:
    """A byte count for people: '784 KiB', '7.1 TiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"                                            # pragma: no cover


def parse_size(text, name=ENV) -> int:
    """Bytes from '24G', '512MiB', '1.5 TB', '1e9'; ValueError naming `name` otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmgtp]?)(?:i?b)?\s*", str(text), re.I)
    if not m:
        raise ValueError(f"{name} must be a number of bytes, optionally with a suffix K, M, G or T "
                         f"(e.g. 24G), got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{name} must be at least one byte, got {text!r}")
    return int(value)


def _cgroup_limit():
    """The cgroup's memory limit in bytes (v2, then v1), or None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:            # v1 writes a huge number for "no limit"
            return int(text)
    return None


def limit() -> tuple[int, str]:
    """(bytes, a phrase saying where they come from): CUPTYCHO_MEMORY_LIMIT, else the physical memory
    or the cgroup's limit when smaller."""
    env = os.environ.get(ENV, "").strip()
    if env:
        n = parse_size(env)
        return n, f"the budget {ENV}={env} allows {format_bytes(n)}"
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):           # not POSIX: no bound we can trust
        total = None
    cgroup = _cgroup_limit()
    if cgroup is not None and (total is None or cgroup < total):
        return cgroup, f"this process's cgroup allows {format_bytes(cgroup)} of memory (set {ENV} to change the budget)"
    if total is None or total <= 0:
        return 2**63, "the memory of this machine is unknown"
    return total, f"this machine has {format_bytes(total)} of memory (set {ENV} to change the budget)"


def require(nbytes, what: str, budget=None) -> int:
    """`nbytes` if it fits the budget (`limit()`, or a (bytes, phrase) pair); else MemoryBudgetError
    "<what> needs <size>; <where the budget comes from>"."""
    cap, where = limit() if budget is None else budget
    if nbytes > cap:
        raise MemoryBudgetError(f"{what} needs {format_bytes(nbytes)}; {where}")
    return int(nbytes)


# --------------------------------------------------------------------------- a reconstruction's memory

@dataclass(frozen=True)
class Term:
    """One part of a run's memory: bytes, and a phrase naming the value that sets it."""
    bytes: int
    text: str


def sizes(n_patterns, patch_shape, obj_shape, n_object_modes, n_probe_modes, padding, dtype, batch):
    """The checked numbers of a memory estimate: (J, (Ny, Nx), (H, W), Mo, K, the padded wave buffer
    (Ny + 2 py, Nx + 2 px), the complex dtype, the patterns per step (None: J))."""
    j = validation.integer("n_patterns", n_patterns)
    ny, nx = validation.integer_pair("patch_shape", patch_shape)
    obj = validation.integer_pair("obj_shape", obj_shape)
    mo = validation.integer("n_object_modes", n_object_modes)
    k = validation.integer("n_probe_modes", n_probe_modes)
    py, px = validation.integer_pair("padding", padding, low=0)
    c = validation.complex_dtype(dtype)
    b = j if batch is None else min(validation.integer("batch", batch), j)
    return j, (ny, nx), obj, mo, k, (ny + 2 * py, nx + 2 * px), c, b


def estimate(n_patterns, patch_shape, obj_shape, *, n_object_modes=1, n_probe_modes=1, dtype="complex64",
             batch=None, padding=0, per_frame_mask=False, device=None, streamed=False) -> dict[str, Term]:
    """Host bytes of a reconstruction, by term: "data", "mask", "object", "probe", "waves".

    Parameters
    ----------
    n_patterns, patch_shape, obj_shape : int, (Ny, Nx), (H, W)
    n_object_modes, n_probe_modes : int >= 1
    dtype : complex64 or complex128 (the data are held in its real precision)
    batch : int, optional
        Patterns per step (None: all of them, the gradient engine's full batch).
    padding : int or (py, px)
        Near-field padding of the wave buffer.
    per_frame_mask : bool
        A (J, Ny, Nx) mask rather than one (Ny, Nx).
    device : str, optional
        "cpu": the kernels work through a batch in chunks of a few MiB of waves.
    streamed : bool
        The data stay in their file (`cuptycho.patterns`): what is held is two blocks of read-ahead, the
        rows of one part of a step and 16 bytes per pattern (`memory_plan.STREAM_PART_BYTES`).
    """
    j, (ny, nx), (h, w), mo, k, (by, bx), c, b = sizes(n_patterns, patch_shape, obj_shape, n_object_modes,
                                                       n_probe_modes, padding, dtype, batch)
    real = c.itemsize // 2
    per_position = mo * k * by * bx * c.itemsize
    if device == "cpu":
        b = min(b, max(os.cpu_count() or 1, CPU_CHUNK_BYTES // per_position))
    real_name = np.dtype(f"f{real}").name
    obj = mo * h * w * c.itemsize
    data = Term(j * ny * nx * real, f"the data, {j} patterns of {ny} x {nx} as {real_name},")
    if streamed:
        held = min(j * ny * nx * 4, 2 * READ_AHEAD_BYTES + STREAM_PART_BYTES) + 16 * j   # read-ahead, a part
        data = Term(held, f"the streamed data's read-ahead and parts, of {j} patterns of {ny} x {nx},")
    return {
        "data": data,
        "mask": Term(j * ny * nx // 8 if per_frame_mask and streamed else
                     j * ny * nx * real if per_frame_mask else ny * nx * real,
                     f"the mask, {j if per_frame_mask else 1} x {ny} x {nx} "
                     f"{'as bits' if per_frame_mask and streamed else 'as ' + real_name},"),
        "object": Term(obj * PARAMETER_COPIES,
                       f"the object, n_object_modes = {mo} x {h} x {w} pixels (obj_shape) as {c.name} "
                       f"({format_bytes(obj)}; {PARAMETER_COPIES} copies with its gradient, optimiser moments and "
                       "last good state),"),
        "probe": Term(k * ny * nx * c.itemsize * PARAMETER_COPIES,
                      f"the probe, n_probe_modes = {k} x {ny} x {nx} pixels as {c.name} ({PARAMETER_COPIES} copies),"),
        "waves": Term(b * per_position * WAVE_COPIES,
                      f"the waves of one step, batch = {b} patterns x n_probe_modes = {k} x n_object_modes = {mo} x "
                      f"{by} x {bx} pixels as {c.name} ({WAVE_COPIES} buffers),"),
    }


def _get(source, name, default=None):
    """`source.name` or `source[name]` (a dataset, a configuration, or a plain dict of numbers)."""
    if isinstance(source, dict):
        return source.get(name, default)
    return getattr(source, name, default)


def shapes_of(dataset) -> dict:
    """The numbers `estimate` needs from a `Dataset` (or any object / dict with the same names:
    n_patterns and patch_shape, or data; obj_shape; optionally padding, mask, probe)."""
    data = _get(dataset, "data")
    n = _get(dataset, "n_patterns", None if data is None else np.shape(data)[0])
    patch = _get(dataset, "patch_shape", None if data is None else tuple(np.shape(data)[1:]))
    mask = _get(dataset, "mask")
    probe = _get(dataset, "probe")
    return {"n_patterns": n, "patch_shape": patch, "obj_shape": _get(dataset, "obj_shape"),
            "padding": _get(dataset, "padding", 0) or 0,
            "per_frame_mask": bool(_get(dataset, "per_frame_mask", mask is not None and len(np.shape(mask)) == 3)),
            "streamed": bool(_get(dataset, "streamed", False)),
            "stored_probe_modes": 0 if probe is None else (1 if np.ndim(probe) == 2 else int(np.shape(probe)[0]))}


def largest_batch(spec):
    """The most patterns a step of batch option `spec` takes: None for the full batch ("full" or None), a
    growing batch's max (None when it grows to the full set), else the number."""
    if spec is None or spec == "full":
        return None
    if isinstance(spec, dict):
        return spec.get("max") or None
    return spec


def check(dataset, config, *, batch=None, device=None, budget=None) -> dict[str, Term]:
    """Refuse a reconstruction whose memory estimate exceeds the budget, before anything is allocated.

    Parameters
    ----------
    dataset : Dataset, or an object / dict with its shape numbers (`shapes_of`)
    config : Config, or an object / dict with n_object_modes, n_probe_modes, dtype, batch
    batch : the engine's batch option ("full", an int, a growth table); default config.batch, and
        "full" when that is None
    device : "numpy", "cpu" or "cuda" (the CPU kernels chunk the batch's waves)
    budget : (bytes, phrase), optional; default `limit()`

    Returns
    -------
    dict of `Term`
        The estimate, when it fits.

    Raises
    ------
    MemoryBudgetError
        Naming the dominant term and its value, e.g. "n_object_modes = 100000000 with an object of
        100 x 98 pixels (...) needs 51 TiB; the run needs about 51 TiB and this machine has 23 GiB".
    """
    s = shapes_of(dataset)
    n = s["n_patterns"]
    b = largest_batch(_get(config, "batch") if batch is None else batch)
    wanted = _get(config, "n_probe_modes") or 1
    terms = estimate(n, s["patch_shape"], s["obj_shape"], n_object_modes=_get(config, "n_object_modes", 1),
                     n_probe_modes=max(wanted, s["stored_probe_modes"]), dtype=_get(config, "dtype", "complex64"),
                     batch=b, padding=s["padding"], per_frame_mask=s["per_frame_mask"], device=device,
                     streamed=s["streamed"])
    total = sum(t.bytes for t in terms.values())
    cap, where = limit() if budget is None else budget
    if total > cap:
        worst = max(terms.values(), key=lambda t: t.bytes)
        raise MemoryBudgetError(f"{worst.text} needs {format_bytes(worst.bytes)}; the run needs about "
                                f"{format_bytes(total)} and {where}")
    return terms
