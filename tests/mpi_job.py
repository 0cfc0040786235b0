"""A reconstruction run by `mpiexec -n R python tests/mpi_job.py MODE OUT` for tests/test_mpi.py.

MODE: "run" (the whole run), "newton" (the whole run with Gauss-Newton position steps), "pie" (parallel mPIE,
registering positions), "background" (a background map per pattern), "switch" (gaussian, then poisson), "streamed" (the whole
run on the dataset written as OUT.cxi by the test and streamed from it by every rank), "setup" (OUT.cxi
opened streamed by the ranks together and an engine set up on it: the frame totals, the fitted probe, the
counts and the loss record, and the frames each rank read while opening), "resume" (stopped
after epoch 3, checkpointed by rank 0, loaded by every rank and finished), "raise" (rank 1 fails at its second
epoch). Rank 0 writes OUT (.npz: object, probe, positions, loss, the bytes this rank summed, the ranks).
"""
from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

from cuptycho import Config, Group, checkpoint, create, simulate


def job_config(**kw):
    return Config(**{**dict(epochs=6, batch=8, backend="cpu", dtype="complex128", seed=3, object=Group(lr=0.1),
                            probe=Group(enabled=True, lr=0.02), positions=Group(enabled=True, lr=0.1, start_epoch=2),
                            scan=Group(enabled=True, lr=1e-3), metrics_every=3), **kw})


PIE_REGISTER_EVERY = 16     # registrations within an epoch of 49 patterns: the ranks share rows mid-epoch


def pie_config():
    """The "pie" mode: parallel mPIE (a batch of 8 shared by the ranks) with position registration."""
    return job_config(engine="mpie", scan=Group(enabled=False), positions=Group(enabled=True, lr=0.3, start_epoch=1))


SWITCH = [(0, "gaussian"), (3, "poisson")]      # the "switch" mode's losses: the scale is set from every pattern


def background_config():
    """The "background" mode: a background map per pattern, stepped by its owner, exchanged after each epoch."""
    return job_config(background=Group(enabled=True, lr=0.05), background_per_pattern=True)


def job_dataset():
    exp = simulate.preset("small_farfield", seed=1, position_error=2.0)
    ds = exp.dataset()
    ds.probe = exp.probe
    return ds


SETUP_CHUNK_BYTES = 6 * 64 * 64 * 8     # the set-up's passes in chunks of 6 patterns: dealt to both ranks


def small_chunks(setattr=setattr):
    """The set-up's chunk sizes shrunk (`setattr` may be a pytest monkeypatch's), the same in both processes."""
    from cuptycho import detector, divergence, guesses, initial

    for module, name in ((initial, "MOMENT_CHUNK_BYTES"), (guesses, "FIT_CHUNK_BYTES"),
                         (detector, "COUNT_CHUNK_BYTES"), (divergence, "LOSS_CHUNK_BYTES")):
        setattr(module, name, SETUP_CHUNK_BYTES)


def counting_reads():
    """The frames of diffraction data read from CXI files from now on (a list: one count per read)."""
    from cuptycho.io import cxi

    frames, read = [], cxi._read

    def counted(path, dset, what, sel=()):
        if what == "diffraction data":
            frames.append(np.arange(dset.shape[0])[sel[-1]].size)
        return read(path, dset, what, sel)
    cxi._read = counted
    return frames


def setup_config():
    """The set-up of the "setup" mode: probe and object guessed from the data, the detector background on."""
    return job_config(init_probe="data", init_object="data", background=Group(enabled=True))


def setup(comm, out):
    """The "setup" mode: what opening and setting up leave on every rank, exactly, and who read what."""
    from cuptycho import io

    small_chunks()
    frames = counting_reads()
    ds = io.load(out + ".cxi", stream=True, comm=comm, chunk_bytes=5 * 64 * 64 * 4)
    opened = sum(frames)
    rec = create(ds, setup_config(), comm=comm)
    set_up = sum(frames) - opened
    values = dict(sums=ds.data.frame_sums(), probe=np.asarray(rec.probe), obj=np.asarray(rec.obj),
                  counts=np.array(rec.masked_counts()),
                  loss=np.array(rec.data_loss("gaussian")))
    opened, set_up = comm.gather(opened), comm.gather(set_up)
    if comm.Get_rank() == 0:
        np.savez(out, opened=np.array(opened), set_up=np.array(set_up), ranks=comm.Get_size(), **values)


def main(mode, out):
    comm = MPI.COMM_WORLD
    if mode == "setup":
        return setup(comm, out)
    ds = job_dataset()
    if mode == "streamed":
        from cuptycho import io
        ds = io.load(out + ".cxi", stream=True)
    if mode == "raise":
        def fail(rec):
            if comm.Get_rank() == 1 and rec["epoch"] == 1:
                raise RuntimeError("rank 1 fails on purpose")
        cfg = job_config(epochs=50, progress=fail)
    elif mode == "background":
        cfg = background_config()
    elif mode == "switch":
        cfg = job_config(loss=SWITCH)
    elif mode == "pie":
        from cuptycho import pie
        pie.REGISTER_EVERY = PIE_REGISTER_EVERY
        cfg = pie_config()
    elif mode == "newton":
        cfg = job_config(position_step="newton", positions=Group(enabled=True, lr=0.5, start_epoch=2))
    else:
        cfg = job_config()
    from cuptycho import parallel
    with parallel.abort_on_error(parallel.communicator(comm)):
        rec = create(ds, cfg, comm=comm)
        if mode == "resume":
            rec.run(until=3)
            path = out + ".ckpt.npz"
            if comm.Get_rank() == 0:
                checkpoint.save(rec.state_dict(), path)
            comm.Barrier()
            rec = create(ds, cfg, comm=comm)
            rec.load_state_dict(checkpoint.load(path))
        agreed = watch_registrations(rec, comm) if mode == "pie" else []
        result = rec.run()
    if comm.Get_rank() == 0:
        np.savez(out, object=result.object, probe=result.probe, positions=result.positions, loss=result.loss,
                 background=np.asarray(result.background if result.background is not None else 0), bytes_summed=rec.comm.bytes_summed, ranks=comm.Get_size(), agreed=np.array(agreed, dtype=bool))


def watch_registrations(rec, comm):
    """After each PIE registration: whether every rank holds the same positions (a list, one entry each)."""
    agreed, register = [], rec.refine_positions

    def checked(profile=None):
        registered = rec.pending_count > 0
        register(profile)
        if registered:
            mine = rec.correction.copy()
            agreed.append(all(np.array_equal(mine, theirs) for theirs in comm.allgather(mine)))
    rec.refine_positions = checked
    return agreed


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
