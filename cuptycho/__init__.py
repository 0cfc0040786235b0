"""cuptycho: ptychographic reconstruction as one differentiable optimisation problem.

The public functional API is `forward` and `loss_and_grad`; `reconstruct(Dataset, Config)` runs the
gradient engine (`Reconstruction` for step-by-step control and checkpoints). Conventions are in
MATH.md and the README. Submodules: `reference` (the NumPy oracle of the model), `io` (readers and
writers), `simulate`, `metrics`, `registration`, `geometry`.
"""
from .api import forward, loss_and_grad
from .dataset import Dataset
from .engine import Config, Group, Reconstruction, Result, reconstruct

__version__ = "0.1.0"
__all__ = ["forward", "loss_and_grad", "Dataset", "Config", "Group", "Reconstruction", "Result", "reconstruct",
           "__version__"]
