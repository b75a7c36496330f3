"""Files of tensors read without unpickling code: ``torch.load(weights_only=True)``, so a file
carrying a pickled object is refused, never executed, and any failure is one line naming the file
(`CheckpointError`). Below `detect.models` and `detect.engine`: checkpoints, torchvision state
dicts and exported model files report through it.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def load_tensor_file(path: str | Path, what: str = "checkpoint",
                     map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure is a one-line `CheckpointError`
    naming the file (``what`` says what it should be)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        if "global" not in reason.lower():  # not an object we refused: not a pickle at all
            raise CheckpointError(f"{path}: not a readable {what} ({reason[:160]})") from None
        raise CheckpointError(f"{path}: refused: the file holds pickled objects that are not "
                              f"plain tensors/containers ({reason[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a readable {what} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _unpickler_reason(message: str) -> str:
    """The one line of torch's ``weights_only`` refusal that says why ("Unsupported global: ...",
    "Unsupported operand 110")."""
    detail = message.partition("WeightsUnpickler error:")[2] or message
    lines = [x.strip() for x in detail.splitlines() if x.strip()]
    return lines[0] if lines else "unsafe content"
