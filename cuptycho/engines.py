"""The engines by name: `Config.engine` -> the class that runs it.

    rec = cuptycho.engines.create(dataset, Config(engine="rpie"))     # step by step, checkpoints
    result = cuptycho.reconstruct(dataset, config)                      # create(...).run()

A new engine subclasses `engine.Reconstruction` (overriding `step` and the loop's hooks
`after_step` / `end_epoch`, and `check_config` for what it cannot honour), lists its names in
`ENGINES`, and is registered here; `settings.ENGINES` names it for the configuration schema
(a test keeps the two equal).
"""
from __future__ import annotations

from . import backend, parallel
from .engine import Reconstruction
from .result import Result
from .pie import PIEReconstruction
from .settings import Config

REGISTRY = {name: cls for cls in (Reconstruction, PIEReconstruction) for name in cls.ENGINES}


def engine_class(name: str) -> type[Reconstruction]:
    if name not in REGISTRY:
        raise ValueError(f"engine must be one of {', '.join(map(repr, REGISTRY))}, got {name!r}")
    return REGISTRY[name]


def check(config: Config) -> Config:
    """`config.check()` and what its engine cannot honour, as one ValueError naming the option."""
    config.check()
    engine_class(config.engine).check_config(config)
    return config


def create(dataset, config: Config | None = None, comm=None) -> Reconstruction:
    """The run of `config.engine` on `dataset` (a `cuptycho.Dataset`), ready to `run()`; with an mpi4py
    communicator `comm` of several ranks, shared among them (`cuptycho.parallel`)."""
    config = config or Config()
    check(config)
    comm = parallel.communicator(comm)
    if comm.size > 1 and backend.resolve(config.backend) == "cuda":
        parallel.select_gpu(comm)              # one GPU per rank of a node, before the engine allocates
    return engine_class(config.engine)(dataset, config, comm=comm)


def reconstruct(dataset, config: Config | None = None, comm=None) -> Result:
    """Reconstruct `dataset` (a `cuptycho.Dataset`) with `config` (defaults: `Config()`), on the ranks of
    `comm` when given: a failure on one rank then ends them all (MPI Abort) rather than leaving them waiting."""
    with parallel.abort_on_error(parallel.communicator(comm)):
        return create(dataset, config, comm).run()
