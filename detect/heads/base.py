"""The head protocol and the convolution tower heads are built from.

A head turns FPN features into one dense prediction per anchor, computes its own losses from the
matches the detector made once for all heads, and decodes its predictions. Heads never match.

    forward(features: list[Tensor [B, F, H_l, W_l]]) -> Tensor [B, A, D]
    loss(pred [B, A, D], matches: Matches) -> dict[str, Tensor]   (keys start with "loss_")
    decode(pred [B, A, D], anchors [A, 4]) -> Tensor [B, A, ...]

``A = sum_l H_l * W_l * anchors_per_location``, level-major, then row, column, anchor: the order of
`detect.anchors.AnchorGenerator`.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from detect.heads.fused import (FoldCache, Layer, can_fold, fold_levels, inference_form,
                                run_layers, sources)
from detect.structures import Matches

Norm = Literal["none", "gn", "bn"]


def _conv(in_channels: int, channels: int, depthwise: bool, bias: bool) -> nn.Module:
    """3x3 conv, or depthwise 3x3 + pointwise 1x1, in_channels -> channels."""
    if not depthwise:
        return nn.Conv2d(in_channels, channels, 3, padding=1, bias=bias)
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, channels, 1, bias=bias))


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "gn":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class Tower(nn.Module):
    """``depth`` blocks of conv + norm + ReLU whose convolutions are shared across FPN levels.

    GroupNorm (the published choice) is shared across levels too. BatchNorm is not: one set of
    statistics for every level would mix P3's and P7's very different statistics and break
    inference, so each level gets its own BatchNorm (as EfficientDet does).

    The first block maps ``in_channels`` (default ``channels``) to ``channels``: a tower may be
    narrower than the features it reads.

    In evaluation without autograd each block runs as one convolution with its BatchNorm folded
    in (`detect.heads.fused`), the same output to float rounding.
    """

    def __init__(self, channels: int, depth: int, norm: Norm = "none", depthwise: bool = False,
                 num_levels: int = 5, in_channels: int | None = None) -> None:
        super().__init__()
        ins = [in_channels or channels] + [channels] * (depth - 1)
        self.channels = channels
        self.convs = nn.ModuleList(_conv(i, channels, depthwise, norm == "none") for i in ins[:depth])
        per_level = num_levels if norm == "bn" else 1
        self.norms = nn.ModuleList(
            nn.ModuleList(_norm(norm, channels) for _ in range(per_level)) for _ in range(depth))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.fold_cache = FoldCache()

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        if inference_form(self) and can_fold([self]):
            return [run_layers(f, layers) for f, layers in zip(features, self.folded(len(features)))]
        out = []
        for level, f in enumerate(features):
            for conv, norms in zip(self.convs, self.norms):
                f = torch.relu(norms[min(level, len(norms) - 1)](conv(f)))
            out.append(f)
        return out

    def folded(self, num_levels: int) -> list[list[Layer]]:
        """Per level, the blocks as folded convolutions (`detect.heads.fused.fold_layers`),
        built once per change of the weights."""
        return self.fold_cache.get(num_levels, sources(self),
                                   lambda: fold_levels([self], num_levels))


def flatten_levels(maps: list[Tensor], per_anchor: int) -> Tensor:
    """[B, a*D, H, W] per level -> [B, sum(H*W*a), D] in anchor order."""
    out = []
    for m in maps:
        b, _, h, w = m.shape
        m = m.view(b, -1, per_anchor, h, w)  # [B, a, D, H, W]
        out.append(m.permute(0, 3, 4, 1, 2).reshape(b, -1, per_anchor))  # [B, H*W*a, D]
    return torch.cat(out, dim=1)


def predictor_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A head's 3x3 output convolution: weights N(0, 0.01), bias zero."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class Head(nn.Module):
    """Base of every head: an optional tower, then a 3x3 predictor conv with ``a * D`` outputs.

    ``own_terms``: loss terms that train parameters of this head's own only (`own_parameters`),
    which no other term reaches: they enter no balancing statistic
    (`detect.balancing.own_terms_gradient_only`), their gradients are clipped apart, and they
    learn at ``own_lr_scale`` times the learning rate (`detect.engine.trainer`)."""

    name: str = ""
    own_terms: tuple[str, ...] = ()
    own_lr_scale: float = 1.0

    def own_parameters(self) -> list[nn.Parameter]:
        """The parameters only ``own_terms`` train (none by default)."""
        return []

    def __init__(self, in_channels: int, num_anchors: int, outputs_per_anchor: int,
                 tower: Tower | None) -> None:
        super().__init__()
        self.tower = tower
        self.num_anchors = num_anchors
        self.outputs_per_anchor = outputs_per_anchor
        self.predictor = predictor_conv(in_channels, num_anchors * outputs_per_anchor)

    def forward(self, features: list[Tensor]) -> Tensor:
        """features: per level [B, F, H_l, W_l] -> [B, A, D]."""
        return self.predict(self.tower_features(features))

    def tower_features(self, features: list[Tensor]) -> list[Tensor]:
        """What the predictor reads: the tower's output per level (the features without one)."""
        return features if self.tower is None else self.tower(features)

    def predict(self, tower_features: list[Tensor]) -> Tensor:
        """`tower_features` per level -> [B, A, D]."""
        return flatten_levels([self.predictor(f) for f in tower_features], self.outputs_per_anchor)

    def loss(self, pred: Tensor, matches: Matches) -> dict[str, Tensor]:
        raise NotImplementedError

    def decode(self, pred: Tensor, anchors: Tensor) -> Tensor:
        raise NotImplementedError
