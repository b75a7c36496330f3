"""Checkpoints: written atomically, read without unpickling code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` (`detect.tensor_files`); a file carrying a pickled object is refused, never executed.
`stored_config` checks the entries besides weights (``config``, ``categories``, ``keypoints``);
weights that do not fit the model they are loaded into are a one-line error naming the first
tensors (`load_weights`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detect.config import Config, ConfigError, config_from_dict
from detect.io import atomic_write_bytes
from detect.tensor_files import CheckpointError, load_tensor_file


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; any failure is a one-line `CheckpointError`."""
    state = load_tensor_file(path, "checkpoint", map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a detect checkpoint (no 'model' entry)")
    return state


def _check_meta(state: dict[str, Any], path: str | Path) -> None:
    """The entries besides weights that the trainer writes, with the types their readers expect."""
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path}: not a detect checkpoint (no 'config' entry)")
    cats = state.get("categories")
    ok = (isinstance(cats, dict) and isinstance(cats.get("ids"), list)
          and isinstance(cats.get("names"), list) and len(cats["ids"]) == len(cats["names"]) > 0
          and all(isinstance(i, int) and not isinstance(i, bool) for i in cats["ids"])
          and all(isinstance(n, str) for n in cats["names"]))
    if not ok:
        raise CheckpointError(f"{path}: 'categories' must hold equally long lists of integer "
                              "'ids' and string 'names'")
    kpts = state.get("keypoints")
    if kpts is not None and not (isinstance(kpts, dict) and all(
            isinstance(kpts.get(k), list) for k in ("names", "skeleton", "flip_pairs"))):
        raise CheckpointError(f"{path}: 'keypoints' must hold 'names', 'skeleton' and "
                              "'flip_pairs' lists")


def load_weights(model: nn.Module, weights: dict[str, Tensor], path: str | Path) -> None:
    """``model.load_state_dict(weights)``, or a one-line `CheckpointError` naming the first
    mis-shaped, missing and unexpected tensors (the model is left unchanged)."""
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: the weights must map parameter names to tensors")
    own = model.state_dict()
    wrong = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{k} is {list(weights[k].shape)} in the file but {list(own[k].shape)} "
                     f"in the model" + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing ({missing[0]}, ...)")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s) ({unexpected[0]}, ...)")
    if parts:
        raise CheckpointError(f"{path}: weights do not fit the model: " + "; ".join(parts))
    model.load_state_dict(weights)


def stored_config(state: dict[str, Any], path: str | Path) -> Config:
    """The `Config` a checkpoint was written with, after checking its ``config``, ``categories``
    and ``keypoints`` entries; anything invalid is a `CheckpointError`."""
    _check_meta(state, path)
    try:
        return config_from_dict(state["config"], str(path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
