"""The head protocol and the convolution tower heads are built from.

A head turns FPN features into one dense prediction per anchor, computes its own losses from the
matches the detector made once for all heads, decodes its predictions and evaluates itself.
Heads never match. The detector, training, export, evaluation and drawing use only this
interface and name no head:

    forward(features: list[Tensor [B, F, H_l, W_l]]) -> Tensor [B, A, D]
    extra_map(features, levels) -> Tensor | None     a map kept besides it (`HeadOutputs.maps`)
    loss(pred [B, A, D], matches: Matches, extra) -> dict[str, Tensor]   (keys start "loss_")
    evaluate(gt, predictions, backend, class_names) -> {table row: stats}

and one of three roles, by base class: `ScoreHead` (class probabilities per anchor, which pick
the candidates), `BoxRegressionHead` (a box per anchor) and `InstanceHead` (a field decoded for
the final detections only: keypoints, masks, any per-object value; see `InstanceHead`).

``A = sum_l H_l * W_l * anchors_per_location``, level-major, then row, column, anchor: the order of
`detect.anchors.AnchorGenerator`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from detect.heads.fused import (FoldCache, Layer, can_fold, fold_levels, inference_form,
                                run_layers, sources)
from detect.structures import Geometry, Matches

Norm = Literal["none", "gn", "bn"]


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

    def __init__(self, channels: int, depth: int, norm: Norm = "none", num_levels: int = 5,
                 in_channels: int | None = None) -> None:
        super().__init__()
        ins = [in_channels or channels] + [channels] * (depth - 1)
        self.channels = channels
        self.convs = nn.ModuleList(nn.Conv2d(i, channels, 3, padding=1, bias=norm == "none")
                                   for i in ins[:depth])
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


def predictor_conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    """A head's output convolution (3x3 unless said): weights N(0, 0.01), bias zero."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class Head(nn.Module):
    """Base of every head: an optional tower, then a 3x3 predictor conv with ``a * D`` outputs.

    ``own_terms``: loss terms that train parameters of this head's own only (`own_parameters`),
    which no other term reaches: they enter no balancing statistic
    (`detect.balancing.own_terms_gradient_only`), their gradients are clipped apart, and they
    learn at ``own_lr_scale`` times the learning rate (`detect.engine.optim`)."""

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
        features = features if self.tower is None else self.tower(features)
        return flatten_levels([self.predictor(f) for f in features], self.outputs_per_anchor)

    def extra_map(self, features: list[Tensor], levels: list[Tensor]) -> Tensor | None:
        """A map this head keeps besides its dense prediction, from the FPN ``features`` or the
        backbone's ``levels`` (C2, C3, C4, C5), for its loss and decoding (`HeadOutputs.maps`,
        exported graphs too); None (the default): none."""
        return None

    def loss(self, pred: Tensor, matches: Matches, extra: Tensor | None = None
             ) -> dict[str, Tensor]:
        """Its ``loss_*`` terms (unweighted) from ``pred`` [B, A, D], the shared ``matches`` and
        its `extra_map` (None without one)."""
        raise NotImplementedError

    def evaluate(self, gt: dict, predictions: list[dict], backend: str,
                 class_names: dict[int, str]) -> dict[str, dict]:
        """Its evaluation on COCO ground truth ``gt`` and COCO result records: table row ->
        stats (`detect.evaluation.format_table`); none by default."""
        return {}


class ScoreHead(Head):
    """The head whose per-anchor class probabilities select the candidates (one per model)."""

    def decode(self, pred: Tensor, anchors: Tensor) -> Tensor:
        """pred [B, A, D], anchors [A, 4] -> [B, A, C] probabilities."""
        raise NotImplementedError


class BoxRegressionHead(Head):
    """The head whose per-anchor boxes the detections take (one per model)."""

    def decode(self, pred: Tensor, anchors: Tensor) -> Tensor:
        """pred [..., D], anchors [..., 4] -> [..., 4] xyxy boxes in input pixels."""
        raise NotImplementedError


@dataclass
class Selected:
    """The final detections of a batch, for the heads that decode only those
    (`InstanceHead.decode_detections`). N is the same for every image (padded in exported
    graphs: their rows are zeroed afterwards).

    Attributes:
        anchor_index: [B, N] int64 index into A of each detection's anchor.
        anchors: [B, N, 4] those anchors, xyxy.
        boxes: [B, N, 4] the detections' decoded boxes, xyxy input pixels (in exported graphs
            clipped to the input, which is the letterboxed image; in eager `detect()` not clipped:
            a padded batch may be larger than the image).
        labels: [B, N] int64 contiguous labels.
        feature_sizes: (H_l, W_l) of each FPN level.
        strides: each level's stride in input pixels.
        num_anchors_per_level: A_l per level.
    """

    anchor_index: Tensor
    anchors: Tensor
    boxes: Tensor
    labels: Tensor
    feature_sizes: list[tuple[int, int]]
    strides: list[int]
    num_anchors_per_level: list[int]


class InstanceHead(Head):
    """A head that adds one field to each final detection (``Detections.fields[name]``).

    It says how the field is decoded (`decode_detections`), how it maps to original pixels
    (``geometry``, `detect.structures.field_to_original`: the exported runtime does the same from
    the export's metadata), which classes have it (`set_classes`: the others' rows are zeros and
    are written and drawn nowhere), and how it is evaluated (`Head.evaluate`). COCO results and
    video records carry it under its name (`detect.records`); points are drawn (`detect.vis`).
    """

    geometry: Geometry = "value"
    stride: int = 1  # a mask field's input pixels per value (`detect.structures.Geometry`)

    def __init__(self, in_channels: int, num_anchors: int, outputs_per_anchor: int,
                 tower: Tower | None) -> None:
        super().__init__(in_channels, num_anchors, outputs_per_anchor, tower)
        # [C] bool: the classes whose detections carry the field (`set_classes`; default all)
        self.register_buffer("classes", torch.ones(0, dtype=torch.bool), persistent=False)

    def decode_detections(self, pred: Tensor, extra: Tensor | None, sel: Selected) -> Tensor:
        """pred [B, A, D] (every anchor), its `extra_map` and the detections -> [B, N, ...]."""
        raise NotImplementedError

    def set_classes(self, mask: Tensor) -> None:
        """Only detections of classes with ``mask`` [C] True carry the field."""
        self.classes = mask.to(device=self.classes.device, dtype=torch.bool)

    def present(self, labels: Tensor) -> Tensor:
        """[...] bool: whether detections of contiguous ``labels`` [...] carry the field."""
        if self.classes.numel() == 0:
            return torch.ones_like(labels, dtype=torch.bool)
        return self.classes[labels.clamp(min=0)]

    def mask_detections(self, values: Tensor, labels: Tensor) -> Tensor:
        """values [..., *F] of detections with ``labels`` [...] -> zeros where not `present`."""
        keep = self.present(labels).to(values.dtype)
        return values * keep.view(*keep.shape, *([1] * (values.dim() - labels.dim())))

    def class_ids(self, category_ids: list[int]) -> list[int]:
        """The original category ids that carry the field ([]: every class), for exports."""
        if self.classes.numel() == 0:
            return []
        return [c for c, on in zip(category_ids, np.asarray(self.classes.cpu())) if on]
