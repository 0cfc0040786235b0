"""One reconstruction over several processes: the communicator the gradient engine sums through.

    from mpi4py import MPI
    result = cuptycho.reconstruct(dataset, config, comm=MPI.COMM_WORLD)     # mpirun -n R python run.py

Each rank owns a spatially compact tile of the positions (`partition`: recursive bisection of the scan
along its longer extent into R groups of equal size, so a rank's patches touch a small part of the
object). A minibatch is drawn identically on every rank (same seed); each rank evaluates the patterns
of the batch it owns with the loss normalised by the whole batch, and the sums over patterns (loss,
object, probe, z, focus and [scan] gradients, a shared background) are summed across the ranks
(`Communicator.sum`, an MPI Allreduce): every rank then takes the same step and holds the same state,
and R ranks give the result of one process up to the order of floating-point summation. Per-pattern
parameters (position corrections, scales) are stepped by their owner and exchanged after each epoch.

GPU arrays go to a CUDA-aware MPI as they are (no host copy; `cuda_aware` asks the library, or set
CUPTYCHO_MPI_CUDA_AWARE), otherwise through host buffers (a device -> host copy, Allreduce, host ->
device); the whole object is summed, which for production sizes is the cost to cut next (only the rows a
tile touches).
Without mpi4py or with one rank, `Serial` does nothing at all.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from . import backend as backends


class Serial:
    """One process: sums are the values themselves."""
    rank, size = 0, 1

    def __init__(self):
        self.bytes_summed = 0              # bytes passed to `sum` (the communication volume, for benchmarks)

    def sum(self, value):
        return value

    def maximum(self, value: float) -> float:
        """The largest of the ranks' `value` (a float)."""
        return value

    def gather_all(self, value) -> list:
        """Every rank's `value` (small host objects: a few rows), in rank order, on every rank."""
        return [value]

    def abort(self, code=1):
        """End every rank (nothing to end in one process)."""


def cuda_aware() -> bool:
    """Whether the MPI library reads and writes GPU memory itself: `CUPTYCHO_MPI_CUDA_AWARE` = 1 / 0 when set,
    else what the library says (MPIX_Query_cuda_support, through mpi4py 4's `MPI.Query_cuda_support`; False
    where it cannot say: a host-buffer sum is always correct, a device pointer given to an MPI that is not
    CUDA-aware is a crash)."""
    setting = os.environ.get("CUPTYCHO_MPI_CUDA_AWARE", "").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off"):
        return False
    if setting:
        raise ValueError(f"CUPTYCHO_MPI_CUDA_AWARE must be 1 or 0 (unset: ask the MPI library), got {setting!r}")
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    return bool(query()) if query is not None else False


class MPICommunicator(Serial):
    """An mpi4py communicator: `sum` is an Allreduce of floats or arrays. CuPy arrays go to the MPI library as
    they are where it is CUDA-aware (`cuda_aware`), else through host buffers (device -> host, Allreduce,
    host -> device)."""

    def __init__(self, comm, device_buffers=None):
        super().__init__()
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self._device_buffers = device_buffers           # None: asked of the library at the first GPU sum

    @property
    def device_buffers(self) -> bool:
        """Whether GPU arrays are passed to MPI without host copies (a CUDA-aware MPI)."""
        if self._device_buffers is None:
            self._device_buffers = cuda_aware()
        return self._device_buffers

    def sum(self, value):
        from mpi4py import MPI

        if isinstance(value, (float, int, np.floating, np.integer)):
            self.bytes_summed += 8
            return type(value)(self.comm.allreduce(value))
        if not isinstance(value, np.ndarray) and self.device_buffers:
            xp = backends.array_module(value)
            value = xp.ascontiguousarray(value)
            out = xp.empty_like(value)
            # MPI reads the buffers outside CuPy's stream: the kernels that wrote them must have finished
            xp.cuda.get_current_stream().synchronize()
            self.comm.Allreduce(value, out, op=MPI.SUM)
            self.bytes_summed += value.nbytes
            return out
        host = np.ascontiguousarray(backends.to_host(value))
        out = np.empty_like(host)
        self.comm.Allreduce(host, out, op=MPI.SUM)
        self.bytes_summed += host.nbytes
        return out if isinstance(value, np.ndarray) else backends.to_device("cuda", out)

    def maximum(self, value: float) -> float:
        from mpi4py import MPI

        self.bytes_summed += 8
        return float(self.comm.allreduce(float(value), op=MPI.MAX))

    def gather_all(self, value) -> list:
        values = self.comm.allgather(value)
        self.bytes_summed += sum(_nbytes(v) for v in values)
        return values

    def abort(self, code=1):
        self.comm.Abort(code)


def _nbytes(value) -> int:
    """The bytes of the arrays in `value` (nested tuples and lists of them), for the communication count."""
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 8))


def communicator(comm=None) -> Serial:
    """`Serial` for None or a one-rank communicator, else an `MPICommunicator` around the mpi4py one."""
    if comm is None or isinstance(comm, Serial):
        return comm or Serial()
    if comm.Get_size() == 1:
        return Serial()
    return MPICommunicator(comm)


def from_environment() -> Serial:
    """The world communicator when this process was started by mpiexec / mpirun with several ranks (MPICH's
    PMI_SIZE, Open MPI's OMPI_COMM_WORLD_SIZE), else `Serial`; ImportError naming mpi4py when it is missing."""
    size = os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1"
    if int(size) <= 1:
        return Serial()
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(f"started as one of {size} MPI ranks but mpi4py is not installed: pip install mpi4py "
                          "(and mpich where no MPI is installed), or run without mpiexec") from None
    return communicator(MPI.COMM_WORLD)


def select_gpu(comm: Serial):
    """One GPU per rank: the ranks of a node (MPI's shared-memory split) take its visible devices in turn, before
    any array is made. Returns the device number chosen (None in one process or without CuPy)."""
    if comm.size == 1 or not isinstance(comm, MPICommunicator):
        return None
    from mpi4py import MPI

    cupy = backends.cupy_module()
    local = comm.comm.Split_type(MPI.COMM_TYPE_SHARED)
    device = local.Get_rank() % cupy.cuda.runtime.getDeviceCount()
    local.Free()
    cupy.cuda.Device(device).use()
    return device


def partition(positions, parts: int) -> np.ndarray:
    """The owner (0 .. parts-1) of each position: recursive bisection along the longer extent of each group
    into tiles of equal count (+-1), so each tile's patches cover a compact part of the object."""
    positions = np.asarray(positions, dtype=np.float64)
    owner = np.zeros(len(positions), dtype=np.int64)

    def split(idx, first, count):
        if count == 1 or len(idx) == 0:
            owner[idx] = first
            return
        pts = positions[idx]
        axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
        order = idx[np.argsort(pts[:, axis], kind="stable")]
        left = count // 2
        cut = int(round(len(order) * left / count))
        split(order[:cut], first, left)
        split(order[cut:], first + left, count - left)

    split(np.arange(len(positions)), 0, int(parts))
    return owner


@contextlib.contextmanager
def abort_on_error(comm: Serial):
    """Run the block; an exception on one rank is printed and ends every rank (MPI Abort), so the others do not
    wait for it in their next sum."""
    try:
        yield
    except BaseException as err:
        if comm.size > 1:
            print(f"cuptycho: rank {comm.rank} of {comm.size} failed: {type(err).__name__}: {err}", file=sys.stderr,
                  flush=True)
            comm.abort(1)
        raise
