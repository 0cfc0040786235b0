"""cuptycho: ptychographic reconstruction as one differentiable optimisation problem.

The public functional API is `forward` and `loss_and_grad`; conventions are in MATH.md and the
README. Submodules: `reference` (the NumPy oracle of the model), `geometry`, `simulate`,
`metrics`, `registration`.
"""
from .api import forward, loss_and_grad

__version__ = "0.1.0"
__all__ = ["forward", "loss_and_grad", "__version__"]
