"""trainer_state.pt: everything needed to continue a run, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common import UserError, atomic_write_bytes
from ..common.contract import TrainerState, parse
from ..models.checkpoint import safe_torch_load


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy arrays are not weights_only-safe: store the key as a tensor.
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()  # torch.save's own writer turns a full disk into "file write failed"
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"nothing to resume: {path} does not exist; start the run without --resume")
    state = safe_torch_load(path, fix="delete it to start the run over")
    parse(TrainerState, state, str(path), "it is not a skipnet-train state file; start the run over with --overwrite")
    return state
