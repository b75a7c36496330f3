"""Loading a weight file into a backbone: ``load_backbone_weights`` accounts for every tensor of
the file: loaded, or deliberately skipped (classifier / head), anything else is an error."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from detect.models.backbones.base import Backbone


@dataclass(frozen=True)
class LoadReport:
    """What ``load_backbone_weights`` did with each key.

    Attributes:
        source: the file, URL or torchvision weights name.
        loaded: module keys filled from the file.
        skipped: file keys deliberately not loaded: classifier / head, and BatchNorm batch
            counters that a frozen BatchNorm does not keep.
        missing: module keys the file lacks (non-empty only with ``strict=False``).
        unexpected: file keys (after renaming) the module lacks (non-empty only with ``strict=False``).
        mismatched: keys whose shapes differ (non-empty only with ``strict=False``; not loaded).
    """

    source: str
    loaded: list[str]
    skipped: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} "
            f"(classifier/head), missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape mismatch {len(self.mismatched)}"
        )


_WEIGHTS_ENUM_NAME = re.compile(r"\w+_Weights\.\w+")


def read_state_dict(source: str) -> dict[str, Tensor]:
    """Read a state_dict from a local file, an http(s) URL or a torchvision weights name.

    A file holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped. URLs and weights
    names go through torch.hub / torchvision and need internet (or a warm cache).
    """
    if source.startswith(("http://", "https://")):
        obj: Any = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
    elif _WEIGHTS_ENUM_NAME.fullmatch(source) and not os.path.exists(source):
        import torchvision

        obj = torchvision.models.get_weight(source).get_state_dict(progress=True)
    elif not os.path.isfile(source):
        raise FileNotFoundError(f"backbone weights file not found: {source}")
    else:
        try:
            obj = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle / zip errors have many types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(f"{source}: cannot read as a PyTorch weights file ({type(exc).__name__}: {first_line})") from exc
    return _unwrap_state_dict(obj, source)


def _unwrap_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{source}: expected a state_dict (name -> tensor), got {type(obj).__name__}")
    return dict(obj)


def _few(keys: list[str], n: int = 3) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


@torch.no_grad()
def load_backbone_weights(backbone: Backbone, source: str, strict: bool = True) -> LoadReport:
    """Load a weight file into ``backbone``, accounting for every tensor of the file.

    File keys under ``backbone.skip_prefixes`` are skipped; the rest are renamed with
    ``backbone.rename_key`` and must match the module's keys and shapes exactly.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: (with ``strict``) missing, unexpected or mis-shaped keys, in one line naming
            the file and the first offending keys; the module is left unchanged.
    """
    file_sd = read_state_dict(source)
    own_sd = backbone.state_dict()
    skipped = sorted(k for k in file_sd if k.startswith(backbone.skip_prefixes))
    renamed = {backbone.rename_key(k): v for k, v in file_sd.items() if k not in skipped}
    # frozen BatchNorm keeps no batch counter; it carries no information for inference
    counters = sorted(k for k in renamed if k.endswith(".num_batches_tracked") and k not in own_sd)
    renamed = {k: v for k, v in renamed.items() if k not in counters}
    # old torchvision files predate BN batch counters; BatchNorm fills them in itself
    missing = sorted(k for k in own_sd if k not in renamed and not k.endswith(".num_batches_tracked"))
    unexpected = sorted(k for k in renamed if k not in own_sd)
    mismatched = sorted(k for k, v in renamed.items() if k in own_sd and v.shape != own_sd[k].shape)
    if strict and (missing or unexpected or mismatched):
        raise ValueError(_mismatch_message(source, type(backbone).__name__, missing, unexpected, mismatched))
    loadable = {k: v for k, v in renamed.items() if k in own_sd and k not in mismatched}
    backbone.load_state_dict(loadable, strict=False)
    return LoadReport(source, sorted(loadable), skipped + counters, missing, unexpected, mismatched)


def _mismatch_message(source: str, model: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing keys: {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_few(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatch: {_few(mismatched)}")
    return f"{source}: weights do not fit {model}; " + "; ".join(parts)
