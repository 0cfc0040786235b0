"""What a reconstruction produced: the `Result` every engine returns and `io.read_result` reads back."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Result:
    """What a reconstruction produced, and how it got there."""
    object: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    z: float | None
    history: list
    events: list
    timings: dict
    config: dict
    device: str
    scan_matrix: np.ndarray | None = None    # I + A of the refined scan model ([scan]); None: not refined

    @property
    def loss(self):
        return np.array([h["loss"] for h in self.history])
