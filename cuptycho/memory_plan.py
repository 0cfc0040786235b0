"""The device memory of a gradient-engine run on a GPU, predicted from plain numbers before anything is allocated.

`budget.estimate` bounds the host side; this is the GPU's side, term by term, each one an allocation the
engine and `model.loss_and_grad` make:

- the data and mask, held on the device for the whole run (streamed data: the rows of one part of a step);
- object and probe: value and Adam's two moments; the divergence watch's snapshot of the best state, and
  during the steps the gradient and a second snapshot (the last state, awaiting confirmation);
- the cached work buffers: one FFT buffer per distinct chunk shape (the step's chunks, and the chunks of
  the per-epoch loss record) and one gradient-patch scratch buffer per shape, each cache bounded by
  `fft.CACHE_BYTES`; with z refined in the near field a spectrum buffer per shape too;
- the transient of the phase that peaks: the loss record's float64 terms (`LOSS_CHUNK_BYTES` at a time),
  or a step's row sums and position gradients.

`plan(...)` returns the terms; `cuptycho plan DATA` prints them next to the host's; every engine on a GPU
calls `check_device` before allocating (the PIE engines hold about as much: a batch of one, mPIE's momentum
two more copies of object and probe). Checked against the emulated GPU's allocator (tests/test_memory_plan.py).
"""
from __future__ import annotations

import numpy as np

from . import budget, fft, model
from .budget import Term, format_bytes
from .launchers.sampling import TILE, tile_slots

# Copies of object and probe alive (value, Adam's two moments, snapshots of those three for the divergence
# watch): during the per-epoch loss record the best state's snapshot alone (6); during the steps also the
# last epoch's snapshot awaiting confirmation, and the gradient (10)
RECORD_COPIES = 6
STEP_COPIES = 10
# the loss record's float64 arrays alive at once per pattern pixel: intensity and data as float64, the
# loss terms, the masked terms and the mask broadcast over them
LOSS_RECORD_ARRAYS = 5
# threads of a full grid on the GPU the plan assumes (32 blocks of 256 per SM, 132 SMs: an H100/H200); it
# sizes the probe adjoint's scratch of per-chunk sums, a few MiB on any GPU
GRID_THREADS = 32 * 256 * 132
# the engine's bounded chunks, defined here (a lower floor) for the engine's mixins and the plan alike
LOSS_CHUNK_BYTES = 1 << 23                  # float64 loss terms formed at once by the loss record (divergence)
FIT_CHUNK_BYTES = 1 << 23                   # modelled intensities per chunk of the probe-scale fit (guesses)


def streamed_rows(patch_shape) -> int:
    """Patterns per part of a step on streamed data."""
    return max(1, budget.STREAM_PART_BYTES // (int(np.prod(patch_shape)) * 4))


def step_lengths(j, b, part=None) -> list[int]:
    """The distinct numbers of patterns one evaluation takes: a batch of `b` and the epoch's last, shorter
    one, each cut into parts of at most `part` patterns (streamed data)."""
    batches = {b} | ({j % b} if j % b else set())
    if part is None:
        return sorted(batches)
    return sorted({x for n in batches for x in ((part,) if n >= part else ()) + ((n % part,) if n % part else ())})


def chunk_sizes(n_pos, per_position, elements) -> list[int]:
    """The distinct chunk lengths `model.loss_and_grad` cuts `n_pos` positions into on a GPU."""
    c = model.chunk_size("cuda", n_pos, per_position, elements)
    return sorted({c, n_pos % c} - {0})


def device_estimate(n_patterns, patch_shape, obj_shape, *, n_object_modes=1, n_probe_modes=1, dtype="complex64",
                    batch=None, padding=0, per_frame_mask=False, refine_z=False, streamed=False) -> dict[str, Term]:
    """GPU bytes of a gradient-engine run, by term (see the module's docstring).

    batch: patterns per step (None: all, the default full batch; a growing batch: its largest);
    refine_z: z refined in the near field (a spectrum buffer per chunk shape); streamed: the data stay in
    their file and one part of a step (`streamed_rows`) is on the device at a time. The peak is the larger of
    the set-up's (the probe-scale fit) and the run's.
    """
    j, (ny, nx), (h, w), mo, k, (by, bx), c, b = budget.sizes(n_patterns, patch_shape, obj_shape, n_object_modes,
                                                              n_probe_modes, padding, dtype, batch)
    real = c.itemsize // 2
    elements = mo * k * by * bx
    per_position = elements * c.itemsize
    record = min(j, max(1, LOSS_CHUNK_BYTES // (8 * ny * nx)))      # the loss record's patterns at a time
    # chunk lengths: a step's (its batch and the epoch's last, shorter batch) and the loss record's (forward only)
    part = streamed_rows((ny, nx)) if streamed else None
    lengths = step_lengths(j, b, part)
    steps = {c for n in lengths for c in chunk_sizes(n, per_position, elements)}
    records = set(chunk_sizes(record, per_position, elements)) | set(chunk_sizes(j % record, per_position, elements)
                                                                      if j % record else ())
    shapes = sorted(steps | records)
    waves = min(fft.CACHE_BYTES, sum(shapes) * per_position)
    scratch = min(fft.CACHE_BYTES, sum(steps) * mo * ny * nx * c.itemsize)
    spectrum = min(fft.CACHE_BYTES, sum(steps) * per_position) if refine_z else 0
    obj = mo * h * w * c.itemsize
    probe = k * ny * nx * c.itemsize
    record_bytes = record * ny * nx * (LOSS_RECORD_ARRAYS * 8 + real)
    # the loss rows and position gradients, and the probe adjoint's per-chunk sums (launchers.exitwave)
    adjoint_chunks = min(max(steps), -(-GRID_THREADS // (ny * nx)))
    # the object adjoint's tile lists (launchers.sampling): keys, their sort and the patch list; tile starts
    tiles = 3 * max(steps) * tile_slots((ny, nx)) * 8 + 2 * (-(-h // TILE) * -(-w // TILE) + 1) * 8
    step_bytes = max(lengths) * (ny * 8 + 16) + adjoint_chunks * k * ny * nx * c.itemsize + tiles
    in_record = RECORD_COPIES * (obj + probe) + record_bytes >= STEP_COPIES * (obj + probe) + step_bytes
    copies = RECORD_COPIES if in_record else STEP_COPIES
    held = ("value, Adam's moments and the best state's snapshot of them" if in_record else
            "value, gradient, Adam's moments and two snapshots of value and moments")
    real_name = np.dtype(f"f{real}").name
    rows = max(lengths + [record]) if streamed else j              # streamed: the rows of one part or chunk
    terms = {
        "data": Term(rows * ny * nx * real, f"the data, {j} patterns of {ny} x {nx} as {real_name}" if not streamed
                     else f"the data's rows of one part, {rows} patterns of {ny} x {nx} (streamed)"),
        "mask": Term((rows if per_frame_mask else 1) * ny * nx * real, "the mask"),
    }
    # the set-up's peak: the probe-scale fit, FIT_CHUNK_BYTES of intensities at a time, two products of them
    fit = min(j, max(1, FIT_CHUNK_BYTES // (ny * nx * real)))
    fit_bytes = obj + probe + sum(chunk_sizes(fit, per_position, elements)) * per_position + 3 * fit * ny * nx * real
    # the run's
    run = {
        "object": Term(obj * copies, f"the object, {mo} x {h} x {w} as {c.name} ({copies} copies: {held})"),
        "probe": Term(probe * copies, f"the probe, {k} x {ny} x {nx} ({copies} copies)"),
        "waves": Term(waves, f"FFT buffers of {', '.join(map(str, shapes))} positions x {mo * k} modes x "
                             f"{by} x {bx} (one per chunk shape)"),
        "scratch": Term(scratch, "gradient-patch buffers, one per chunk shape"),
        "transient": Term(record_bytes if in_record else step_bytes,
                          f"the loss record's float64 terms, {record} patterns at a time" if in_record else
                          "a step's loss rows, position gradients, probe-adjoint chunk sums and object-adjoint tile lists"),
    }
    if spectrum:
        run["spectrum"] = Term(spectrum, "forward spectra kept for the z gradient, one per chunk shape")
    run_bytes = sum(t.bytes for t in run.values())
    if run_bytes >= fit_bytes:
        terms.update(run)
    else:
        terms["setup"] = Term(fit_bytes, f"the set-up: object, probe and the probe-scale fit, {fit} patterns at a "
                                         "time (peaks before the run)")
    return terms


def describe(terms: dict[str, Term], title: str) -> str:
    total = sum(t.bytes for t in terms.values())
    lines = [f"{title}: {format_bytes(total)}"]
    for name, term in sorted(terms.items(), key=lambda kv: -kv[1].bytes):
        lines.append(f"  {name:<10} {format_bytes(term.bytes):>10}  {term.text.rstrip(',')}")
    return "\n".join(lines)


def plan(dataset, config, *, device="cuda", batch=None) -> dict[str, dict[str, Term]]:
    """{"host": terms of a run on the CPU backend, "device": the GPU's terms (device "cuda")} of a reconstruction
    of `dataset` (or its shape numbers, `budget.shapes_of`) with `config` (batch: the engine's batch option,
    default config.batch)."""
    s = budget.shapes_of(dataset)
    b = budget.largest_batch(getattr(config, "batch", None) if batch is None else batch)
    k = max(getattr(config, "n_probe_modes", 1) or 1, s["stored_probe_modes"])
    common = dict(n_object_modes=getattr(config, "n_object_modes", 1), n_probe_modes=k,
                  dtype=getattr(config, "dtype", "complex64"), batch=b, padding=s["padding"],
                  per_frame_mask=s["per_frame_mask"], streamed=s["streamed"])
    out = {"host": budget.estimate(s["n_patterns"], s["patch_shape"], s["obj_shape"], device="cpu", **common)}
    if device == "cuda":
        z = getattr(config, "z", None)
        out["device"] = device_estimate(s["n_patterns"], s["patch_shape"], s["obj_shape"],
                                        refine_z=bool(getattr(z, "enabled", False)), **common)
    return out


def check_device(dataset, config, device_bytes, *, batch=None) -> dict[str, Term]:
    """The GPU terms of the run, or MemoryBudgetError before anything is allocated when their sum exceeds
    `device_bytes` (the GPU's memory), naming the largest term."""
    terms = plan(dataset, config, batch=batch)["device"]
    total = sum(t.bytes for t in terms.values())
    if total > device_bytes:
        worst = max(terms.values(), key=lambda t: t.bytes)
        raise budget.MemoryBudgetError(
            f"{worst.text} needs {format_bytes(worst.bytes)} of GPU memory; the run needs about "
            f"{format_bytes(total)} and the GPU has {format_bytes(device_bytes)} (`cuptycho plan` prints every term; "
            "a smaller batch, CUPTYCHO_GPU_CHUNK_BYTES or complex64 need less)")
    return terms
