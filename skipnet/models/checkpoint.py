"""Checkpoint I/O for weights and run directories - the one implementation every stage uses.

Formats read:
- a run directory (``model.safetensors`` + ``config.json``, written by skipnet-train);
- a ``.safetensors`` file;
- a PyTorch state_dict pickle (``.pth``/``.pt``, e.g. the authors' ``skipblocknet-m.pth``),
  read with ``torch.load(weights_only=True)`` so a pickle that would run code is refused.
Weights are only ever written as safetensors.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from ..common import UserError, atomic_write_bytes, first_line, read_json
from ..common.contract import CONFIG_FILE, WEIGHTS_FILE, RunConfig, parse
from ..common.io import refuse_special_file


def is_run_dir(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def read_run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """config.json of a run directory, checked against the contract's schema (types and ranges)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise UserError(f"run directory {run_dir} {what}; pass the --out directory of skipnet-train")
    path = run_dir / CONFIG_FILE
    cfg = read_json(path)
    parse(RunConfig, cfg, str(path), "point at a directory written by skipnet-train, or re-train it")
    return cfg


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model``'s state_dict as safetensors, atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "pt", **{k: str(v) for k, v in (metadata or {}).items()}}
    # Serialised in memory, written by Python: a full disk is then an OSError that names its cause
    # (safetensors' own writer reports it in a message of its own).
    atomic_write_bytes(path, save(state, metadata=meta))


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (state_dict, metadata) from a run directory, .safetensors file or state_dict pickle."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    refuse_special_file(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check the path (a run directory needs {WEIGHTS_FILE})")
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return _read_pickle_state_dict(path), {}
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    # No telling extension: a torch file is a zip ("PK") or a bare pickle (0x80); else try safetensors.
    with open(path, "rb") as f:
        head = f.read(2)
    if head.startswith((b"PK", b"\x80")):
        return _read_pickle_state_dict(path), {}
    return _read_safetensors(path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a valid safetensors file ({e}); re-export or re-train to recreate it") from None


def safe_torch_load(path: str | os.PathLike, fix: str = "check that the file is complete") -> Any:
    """``torch.load(weights_only=True)``, with its failures turned into one-line UserErrors.

    A pickle that would import a callable (the way a malicious checkpoint runs code) is refused
    by torch before anything executes; say so, and never suggest weights_only=False.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise UserError(
                f"refusing to load {path}: it would import {found.group(1)}, so it could run code; "
                "only plain tensors (state_dicts, .safetensors) are accepted"
            ) from None
        raise UserError(f"{path} is not a readable PyTorch checkpoint (corrupt or another format); {fix}") from None
    except Exception as e:  # noqa: BLE001 - corrupt bytes surface as KeyError, IndexError, ... from the unpickler
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({first_line(e)}); {fix}") from None


def _read_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = safe_torch_load(path)
    # Unwrap the usual containers: {"state_dict": ...}, {"model": ...}.
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not contain a state_dict of tensors; save it with torch.save(model.state_dict())")
    # DataParallel / DDP checkpoints prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _match_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Map a foreign key layout onto ours where that is unambiguous (e.g. a bare torchvision state_dict)."""
    if set(state) == expected:
        return state
    for prefix in ("net.",):
        prefixed = {prefix + k: v for k, v in state.items()}
        if set(prefixed) <= expected and len(expected - set(prefixed)) < len(expected - set(state)):
            return prefixed
    return state


def load_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    name: str | None = None,
    reset_head: bool = False,
) -> None:
    """Load weights into ``model`` strictly; any mismatch is a UserError that says which and why.

    ``reset_head=True`` keeps the model's own (freshly initialised) final classifier, for
    fine-tuning a checkpoint on a dataset with other classes.
    """
    meta: dict[str, str] = {}
    state = dict(source) if isinstance(source, Mapping) else None
    if state is None:
        state, meta = read_state_dict(source)
    name = name or getattr(model, "model_name", type(model).__name__)
    if meta.get("model") and getattr(model, "model_name", None) and meta["model"] != model.model_name:
        raise UserError(
            f"checkpoint {source} holds a {meta['model']} model, not {model.model_name}; "
            f"use --model {meta['model']} or the right checkpoint"
        )
    own = model.state_dict()
    state = _match_keys(state, set(own))
    if reset_head:
        head = _classifier_keys(own)
        state = {k: v for k, v in state.items() if k not in head}
        own = {k: v for k, v in own.items() if k not in head}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(
            f"checkpoint does not fit {name}: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); was it saved from another model?"
        )
    head = _classifier_keys(own)
    for k, v in state.items():
        if v.shape != own[k].shape:
            hint = ""
            if k in head:
                hint = (
                    f" (the checkpoint has {v.shape[0]} classes: pass num_classes={v.shape[0]}, "
                    "or reset the classifier to fine-tune on other classes)"
                )
            raise UserError(
                f"checkpoint does not fit {name}: {k} has shape {list(v.shape)} "
                f"but the model expects {list(own[k].shape)}{hint}"
            )
    model.load_state_dict(state, strict=not reset_head)


def _classifier_keys(state: Mapping[str, torch.Tensor]) -> set[str]:
    """Weight and bias keys of the last Linear layer (its first dimension is the class count)."""
    keys = [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
    if not keys:
        return set()
    prefix = keys[-1][: -len("weight")]
    return {prefix + "weight", prefix + "bias"}
