"""The gradient engine over several ranks (`cuptycho.parallel` says how the work is shared).

A mixin of `engine.Reconstruction`: which patterns of a batch (or of a pass over all of them) this rank
evaluates, the sums across ranks of what a batch adds up over its patterns, and the exchange of the
per-pattern parameters (position corrections, scales) each owner stepped, after every epoch. The engine
attaches its communicator before its set-up, so the set-up's passes over the data are shared too.
"""
from __future__ import annotations

import numpy as np

from . import backend as backends
from . import initial, parallel


class Distributed:
    """The engine's side of a communicator (one process: `parallel.Serial`, which changes nothing)."""

    comm = parallel.Serial()
    owner = None                           # (n,) rank owning each pattern, when attached to several ranks

    def attach(self, comm):
        """Share the work with the ranks of `comm` (an mpi4py communicator; None or one rank: alone)."""
        comm = parallel.communicator(comm)
        if comm.size == 1:
            return
        if self.cfg.engine != "gradient" and self.cfg.batch in (None, 1):
            raise ValueError(f"the sequential {self.cfg.engine} engine runs in one process (its updates follow each "
                             "other position by position): under MPI set batch = B (parallel PIE, B patterns a step "
                             "shared by the ranks) or use engine = 'gradient'")
        self.comm, self.owner = comm, parallel.partition(self.nominal, comm.size)

    def own(self, idx):
        """The patterns of `idx` this rank evaluates (all of them in one process)."""
        return idx if self.owner is None else idx[self.owner[idx] == self.comm.rank]

    @property
    def chunks(self):
        """How the set-up's passes over the data combine their chunks (`initial.Chunks`): shared by the ranks."""
        return initial.IN_ORDER if self.comm.size == 1 else RankChunks(self.comm)

    def chunk_sums(self, step, compute, count):
        """`count` sums (floats) over every pattern: ``compute(idx)`` gives them (floats or 0-d arrays on any
        device) over the patterns `idx`, a consecutive range of at most `step`, combined by `chunks` (with
        several ranks dealt to them and summed as one process sums them, bit for bit)."""
        return tuple(float(v) for v in self.chunks.sums(self.ds.n_patterns, step, compute, [()] * count))

    def stop_agreed(self, asked: bool) -> bool:
        """Whether to stop after this epoch: `asked` here (a signal) or, with several ranks, on any of them (one
        8-byte allreduce an epoch: mpiexec forwards a Ctrl-C to every rank, but not at the same moment, and
        every rank must stop after the same epoch or the others wait in their next sum)."""
        if self.comm.size == 1:
            return asked
        return self.comm.maximum(1.0 if asked else 0.0) > 0

    def reduce(self, value, grads, mine, wanted):
        """The batch's loss and its sums over patterns, summed across ranks; a rank that owns none of the batch
        contributes zeros. Per-pattern gradients (positions, scales) stay this rank's rows."""
        if self.owner is None:
            return value, grads
        if not len(mine):
            value, grads = 0.0, self._zero_grads(wanted)
        grads["object"], grads["probe"] = self.comm.sum(grads["object"]), self.comm.sum(grads["probe"])
        if "z" in grads:
            grads["z"] = self.comm.sum(float(grads["z"]))
        if "background" in grads and grads["background"].ndim == 2:       # one map; per pattern: this rank's rows
            grads["background"] = self.comm.sum(grads["background"])
        return self.comm.sum(float(value)), grads

    def _zero_grads(self, wanted):
        xp, out = self.xp, {"object": self.xp.zeros_like(self.obj), "probe": self.xp.zeros_like(self.probe),
                            "positions": np.zeros((0, 2))}
        if "z" in wanted and self.propagation["propagator"] != "farfield":
            out["z"] = 0.0
        if "scale" in wanted and self.shot_scale is not None:
            out["scale"] = np.zeros(0)
        if "background" in wanted and self.background is not None:
            out["background"] = xp.zeros((0,) * (self.background.ndim - 2) + self.background.shape[-2:],
                                         self.background.dtype)
        return out

    def share_rows(self, rows):
        """After a PIE registration, in which each rank stepped the positions `rows` of its own patterns: every
        rank takes every rank's new rows, corrections and Adam moments (one allgather of the rows alone)."""
        if self.owner is None:
            return
        arrays = [self.correction, self.opt["positions"].m, self.opt["positions"].v]
        for theirs, values in self.comm.gather_all((rows, [a[rows] for a in arrays])):
            for array, value in zip(arrays, values):
                array[theirs] = value

    def exchange_rows(self):
        """After an epoch: every rank takes each pattern's correction and scale (and background map, when there is
        one per pattern), and their optimiser moments, from the rank that owns it (so every rank, and a
        checkpoint any of them writes, holds the whole state)."""
        if self.owner is None:
            return
        mine = self.owner == self.comm.rank
        rows = [self.correction] + ([self.shot_scale] if self.shot_scale is not None else [])
        rows += [getattr(self.opt[name], k) for name in ("positions", "scale")
                 if name in self.opt and getattr(self.cfg, name).enabled for k in "mv"]
        if self.background is not None and self.background.ndim == 3:
            rows += [self.background, self.opt["background"].m, self.opt["background"].v]
        for array in rows:
            xp = backends.array_module(array)
            keep = backends.to_device("cuda" if xp is not np else "cpu", mine.reshape((-1,) + (1,) * (array.ndim - 1)))
            array[...] = self.comm.sum(xp.where(keep, array, array.dtype.type(0)))


def _host_stack(values):
    """Floats or float arrays of one shape (NumPy or CuPy) stacked into one float64 NumPy array."""
    arrays = [v for v in values if not isinstance(v, (int, float))]
    xp = backends.array_module(*arrays) if arrays else np
    return backends.to_host(xp.stack([xp.asarray(v, dtype=xp.float64) for v in values]))


def dealt(comm, n, step):
    """(the start of every range of `step` patterns of `n`, the indices of the ranges rank `comm.rank` computes:
    every comm.size-th from its rank on)."""
    starts = list(range(0, n, step))
    return starts, list(range(comm.rank, len(starts), comm.size))


class RankChunks(initial.Chunks):
    """`initial.Chunks` over MPI ranks: the ranges are dealt to the ranks in turn (each reads a part of streamed
    data), what each gives is exchanged exactly (an allreduce in which the other ranks add zeros) and combined
    as in one process (sums in range order, rows in place), so every rank holds one process's result bit for
    bit."""

    def __init__(self, comm):
        self.comm = comm

    def sums(self, n, step, compute, shapes):
        starts, mine = dealt(self.comm, n, step)
        tables = [np.zeros((len(starts), *shape)) for shape in shapes]
        values = [compute(np.arange(starts[k], min(starts[k] + step, n))) for k in mine]
        for i, table in enumerate(tables):          # one transfer per output, from whichever device computed it
            if values:
                table[mine] = _host_stack([v[i] for v in values])
        out = None
        for rows in zip(*(self.comm.sum(t) for t in tables)):      # in range order
            out = rows if out is None else tuple(a + b for a, b in zip(out, rows))
        return out

    def rows(self, n, step, compute, widths):
        starts, mine = dealt(self.comm, n, step)
        out = [np.zeros((n, w)) for w in widths]
        for k in mine:
            for full, part in zip(out, compute(np.arange(starts[k], min(starts[k] + step, n)))):
                full[starts[k]:starts[k] + len(part)] = part
        return tuple(self.comm.sum(full) for full in out)
