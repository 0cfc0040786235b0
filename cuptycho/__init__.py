"""cuptycho: ptychographic reconstruction as one differentiable optimisation problem.

The public functional API is `forward` and `loss_and_grad` (`warmup` compiles the kernels ahead);
`reconstruct(Dataset, Config)` runs the engine the Config names (`engines.create` for step-by-step
control and checkpoints). Conventions are in MATH.md and the README. Submodules: `reference` (the
NumPy oracle of the model), `io` (readers and writers), `simulate`, `metrics`, `registration`,
`geometry`, `settings` (every option), `config` (TOML files), `run` (a resumable run from a data file).
"""
from ._version import __version__
from .api import forward, loss_and_grad, warmup
from .dataset import Dataset
from .engine import Reconstruction
from .result import Result
from .engines import create, reconstruct
from .settings import Config, Group

__all__ = ["forward", "loss_and_grad", "warmup", "Dataset", "Config", "Group", "Reconstruction", "Result", "create",
           "reconstruct", "__version__"]
