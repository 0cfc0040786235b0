"""What a reconstruction produced: the `Result` every engine returns and `io.read_result` reads back."""
from __future__ import annotations

from dataclasses import dataclass, field

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
    # indices of the positions left out of the loss at the end ([position_search] exclude: their pattern
    # still stood out wherever the search looked, so their positions are not to be trusted)
    excluded_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # the detector model ([background], [scale]): counts added to every pattern ((Ny, Nx), or (J, Ny, Nx) per
    # pattern, detector order) and each pattern's intensity factor (J,); None: not refined
    background: np.ndarray | None = None
    scale: np.ndarray | None = None
    # [focus]: the refined focus-to-sample distance (m) and the sample pixel size (dy, dx) it implies; None: not
    # refined (the dataset's hold)
    focus_distance: float | None = None
    pixel_size: tuple | None = None
    mpi_ranks: int = 1                       # the processes the run was shared among (cuptycho.parallel)

    @property
    def loss(self):
        return np.array([h["loss"] for h in self.history])
