"""Freezing a backbone: BatchNorm replaced by frozen copies, the first stages without gradients."""
from __future__ import annotations

import torch
from torch import nn

from detect.models.backbones.base import Backbone
from detect.models.backbones.layers import frozen_copy


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    """True if module/parameter ``name`` is inside one of ``prefixes`` ("" matches everything)."""
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


@torch.no_grad()
def freeze_batchnorm(module: nn.Module, prefixes: tuple[str, ...] = ("",)) -> None:
    """Replace, in place, every ``nn.BatchNorm2d`` under ``prefixes`` by a frozen copy."""
    targets = [
        (name, m) for name, m in module.named_modules()
        if isinstance(m, nn.BatchNorm2d) and _under(name, prefixes)
    ]
    for name, bn in targets:
        parent_name, _, child_name = name.rpartition(".")
        setattr(module.get_submodule(parent_name), child_name, frozen_copy(bn))


def freeze_stages(backbone: Backbone, frozen_stages: int) -> None:
    """Stop gradients (and freeze BatchNorm) in the stem and the first ``frozen_stages - 1`` stages."""
    stages = backbone.stages()
    if not 0 <= frozen_stages <= len(stages):
        raise ValueError(f"frozen_stages={frozen_stages} out of range 0..{len(stages)} for {type(backbone).__name__}")
    backbone.frozen_stages = frozen_stages
    prefixes = tuple(p for stage in stages[:frozen_stages] for p in stage)
    if not prefixes:
        return
    for name, param in backbone.named_parameters():
        if _under(name, prefixes):
            param.requires_grad_(False)
    freeze_batchnorm(backbone, prefixes)
