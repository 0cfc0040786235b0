"""Checkpoints of a reconstruction: `Reconstruction.state_dict()` in one .npz file, written atomically.

Arrays are stored as .npz members, everything else (counters, RNG and schedule states, history)
as one JSON document in the member "state.json", so a checkpoint loads without pickle.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .atomic import open_atomic

FORMAT = "cuptycho-checkpoint-1"


def save(state: dict, path) -> None:
    """Write `state` to `path` atomically: a temporary file in the same folder, then a rename."""
    meta = {k: v for k, v in state.items() if k != "arrays"}
    members = {f"array/{k}": v for k, v in state["arrays"].items()}
    members["state.json"] = np.frombuffer(json.dumps({"format": FORMAT, **meta}).encode(), dtype=np.uint8)
    with open_atomic(path, "wb", overwrite=True) as fh:
        np.savez(fh, **members)


def load(path) -> dict:
    """The state saved by `save` (ValueError when `path` is not a cuptycho checkpoint)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(bytes(npz["state.json"]).decode())
            arrays = {k[len("array/"):]: npz[k] for k in npz.files if k.startswith("array/")}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:    # EOFError: a truncated file
        raise ValueError(f"{os.fspath(path)} is not a readable cuptycho checkpoint ({err})") from None
    if meta.pop("format", None) != FORMAT:
        raise ValueError(f"{os.fspath(path)} is not a {FORMAT} file")
    return {**meta, "arrays": arrays}
