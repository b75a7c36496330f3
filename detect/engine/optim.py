"""What the optimiser trains: frozen parts (``train.freeze``), the parameter groups and their
learning rates and weight decay."""
from __future__ import annotations

import torch

from detect.config import TrainConfig
from detect.models.detector import MultiHeadDetector


def freeze_parts(model: MultiHeadDetector, parts: tuple[str, ...]) -> None:
    """train.freeze: stop gradients in the backbone, the neck and/or whole heads."""
    modules = {"backbone": model.backbone, "neck": model.neck, **dict(model.heads.items())}
    for part in parts:
        if part in modules:
            for p in modules[part].parameters():
                p.requires_grad_(False)


def own_parameter_ids(model: MultiHeadDetector) -> set[int]:
    """ids of the parameters only their heads' ``own_terms`` train (`Head.own_parameters`)."""
    return {id(p) for head in model.heads.values() for p in head.own_parameters()}


def clip_groups(model: MultiHeadDetector) -> list[list[torch.nn.Parameter]]:
    """The trainable parameters in the groups whose gradients are clipped apart: the shared
    ones and every head's ordinary ones, then the heads' own (`own_parameter_ids`); no empty
    group."""
    own = own_parameter_ids(model)
    params = [p for p in model.parameters() if p.requires_grad]
    return [g for g in ([p for p in params if id(p) not in own],
                        [p for p in params if id(p) in own]) if g]


def build_optimizer(t: TrainConfig, model: MultiHeadDetector) -> torch.optim.Optimizer:
    """No weight decay on biases and normalisation parameters; each head's own parameters
    (`Head.own_parameters`) in a group of their own at ``own_lr_scale`` times the learning rate,
    without weight decay."""
    own = own_parameter_ids(model)
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in own:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    for head in model.heads.values():
        if trained := [p for p in head.own_parameters() if p.requires_grad]:
            groups.append({"params": trained, "weight_decay": 0.0, "lr": t.lr * head.own_lr_scale})
    match t.optimizer:
        case "sgd":
            return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=True)
        case "adamw":
            return torch.optim.AdamW(groups, lr=t.lr)
