"""The multi-head detector: backbone -> FPN -> dict of heads.

`MultiHeadDetector.forward` is pure: images in, `HeadOutputs` out, the same in training and
evaluation. `losses` matches anchors once for the whole batch and asks every head for its losses;
`detect` decodes the heads and runs post-processing. It knows heads only by their roles
(`detect.heads.base`): the `ScoreHead` picks the candidates, the `BoxRegressionHead` gives their
boxes, and every `InstanceHead` adds its field to the final detections.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

import torch
from torch import Tensor, nn

from detect.anchors import AnchorGenerator
from detect.config import PostprocessConfig
from detect.heads.base import BoxRegressionHead, Head, InstanceHead, ScoreHead, Selected
from detect.matching import Matcher, match_batch
from detect.nms import postprocess_lazy
from detect.prediction import Field, Prediction, masked_field
from detect.structures import Detections, Target, field_to_original, map_to_original

if TYPE_CHECKING:
    from detect.data.annotations import CategoryMap


FPN_INPUTS = slice(1, None)  # of the backbone's [C2, C3, C4, C5], the FPN reads C3-C5


@dataclass
class HeadOutputs:
    """preds: head name -> [B, A, D]; feature_sizes: (H_l, W_l) per FPN level; maps: head name
    -> the map it keeps besides its prediction (`Head.extra_map`; only heads that have one)."""

    preds: dict[str, Tensor]
    feature_sizes: list[tuple[int, int]]
    maps: dict[str, Tensor] = field(default_factory=dict)


def _one(heads: dict[str, Head], role: type) -> str:
    found = [n for n, h in heads.items() if isinstance(h, role)]
    if len(found) != 1:
        raise ValueError(f"a detector needs exactly one {role.__name__}, got {found}")
    return found[0]


class MultiHeadDetector(nn.Module):
    def __init__(self, backbone: nn.Module, neck: nn.Module, heads: dict[str, Head],
                 anchor_generator: AnchorGenerator, matcher: Matcher,
                 pixel_mean: tuple[float, float, float], pixel_std: tuple[float, float, float],
                 channels_last: bool = True) -> None:
        super().__init__()
        self.backbone, self.neck = backbone, neck
        self.heads = nn.ModuleDict(heads)
        self.score_head, self.box_head = _one(heads, ScoreHead), _one(heads, BoxRegressionHead)
        self.anchor_generator, self.matcher = anchor_generator, matcher
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.set_memory_format(channels_last)

    def set_memory_format(self, channels_last: bool) -> "MultiHeadDetector":
        """Weights and inputs in channels_last (NHWC) or contiguous (NCHW) memory, in place.
        Outputs are the same either way; speed is not (docs/BENCHMARKS.md, "Speed levers")."""
        self.channels_last = channels_last
        return self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def normalize(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] uint8 (or float 0-255) RGB -> normalised float, in the model's memory
        format (`set_memory_format`)."""
        x = (images.float() - self.pixel_mean) / self.pixel_std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def features(self, images: Tensor) -> list[Tensor]:
        """Backbone + FPN: per level [B, F, H_l, W_l]."""
        return self.neck(self.backbone(self.normalize(images))[FPN_INPUTS])

    def forward(self, images: Tensor) -> HeadOutputs:
        levels = self.backbone(self.normalize(images))  # C2, C3, C4, C5
        feats = self.neck(levels[FPN_INPUTS])
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]
        preds = {name: head(feats) for name, head in self.heads.items()}
        maps = {name: m for name, head in self.heads.items()
                if (m := head.extra_map(feats, levels)) is not None}
        return HeadOutputs(preds, sizes, maps)

    def instance_heads(self) -> dict[str, InstanceHead]:
        """The heads that add a field to each final detection, by name."""
        return {n: h for n, h in self.heads.items() if isinstance(h, InstanceHead)}

    def anchors(self, feature_sizes: list[tuple[int, int]], device: torch.device) -> Tensor:
        return self.anchor_generator(feature_sizes, device=device)  # [A, 4]

    def losses(self, out: HeadOutputs, targets: list[Target],
               heads: tuple[str, ...] | None = None) -> dict[str, dict[str, Tensor]]:
        """Per head, its ``loss_*`` terms (unweighted). Matching is done once here."""
        device = next(iter(out.preds.values())).device
        anchors = self.anchors(out.feature_sizes, device)
        per_level = self.anchor_generator.num_anchors_per_level(out.feature_sizes)
        matches = match_batch(self.matcher, anchors, per_level, targets)
        names = heads if heads is not None else tuple(self.heads)
        return {n: self.heads[n].loss(out.preds[n], matches, out.maps.get(n))
                for n in names if n in self.heads}

    @torch.no_grad()
    def detect(self, out: HeadOutputs, image_sizes: list[tuple[int, int]] | None,
               params: PostprocessConfig = PostprocessConfig()) -> list[Detections]:
        """Decode the heads and post-process into per-image detections (transformed pixels).

        Scores are decoded everywhere (the top-k needs them); boxes only for the pre-NMS
        candidates and the instance heads' fields only for the final detections (zeros for
        classes a head does not serve, `InstanceHead.set_classes`).
        """
        device = out.preds[self.score_head].device
        anchors = self.anchors(out.feature_sizes, device)  # [A, 4]
        scores = self.heads[self.score_head].decode(out.preds[self.score_head], anchors)  # [B, A, C]
        box_head, box_pred = self.heads[self.box_head], out.preds[self.box_head]
        per_level = self.anchor_generator.num_anchors_per_level(out.feature_sizes)
        instance = self.instance_heads()

        def boxes_of(b: int, idx: Tensor) -> Tensor:
            return box_head.decode(box_pred[b, idx], anchors[idx])  # [M, 4]

        def fields_of(b: int, idx: Tensor, det: Detections) -> dict[str, Tensor]:
            # the decoded boxes, not clipped to the image (a padded batch is larger than it)
            sel = Selected(idx[None], anchors[idx][None], boxes_of(b, idx)[None], det.labels[None],
                           out.feature_sizes, list(self.anchor_generator.strides), per_level)
            return {n: h.decode_detections(out.preds[n][b:b + 1], _image(out.maps.get(n), b),
                                           sel)[0]
                    for n, h in instance.items()}  # [N, ...] each

        return postprocess_lazy(
            scores, boxes_of, per_level, fields_of if instance else None, image_sizes,
            score_thresh=params.score_thresh, topk_per_level=params.topk_per_level,
            nms_iou=params.nms_iou, max_detections=params.max_detections,
            class_agnostic=params.class_agnostic, soft_nms_sigma=params.soft_nms_sigma)

    def to_original(self, det: Detections, scale: float, offset: tuple[float, float],
                    size: tuple[int, int] | None = None) -> Detections:
        """Detections in original-image pixels (boxes clipped to ``size`` (H, W) when given),
        every field mapped by its head's geometry."""
        boxes = map_to_original(det.boxes, scale, offset)
        if size is not None:
            h, w = size
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        heads = self.instance_heads()
        fields = {n: field_to_original(v, heads[n].geometry, scale, offset, size,
                                       heads[n].stride, boxes)
                  for n, v in det.fields.items()}
        return Detections(boxes, det.scores, det.labels, fields)

    def prediction(self, det: Detections, categories: "CategoryMap") -> Prediction:
        """``det`` (original pixels) as a numpy `Prediction`: original category ids, names and
        `numpy_fields`."""
        labels = det.labels.cpu().numpy()
        return Prediction(boxes=det.boxes.cpu().numpy(), scores=det.scores.cpu().numpy(),
                          labels=np.array([categories.category_id(int(i)) for i in labels],
                                          np.int64),
                          names=[categories.names[int(i)] for i in labels],
                          fields=self.numpy_fields(det))

    def numpy_fields(self, det: Detections) -> dict[str, Field]:
        """Each field of ``det`` as a numpy `Field` (`detect.prediction`), the rows of classes
        its head does not serve zeroed."""
        heads = self.instance_heads()
        return {n: masked_field(v.cpu().numpy(), heads[n].present(det.labels).cpu().numpy(),
                                heads[n].geometry) for n, v in det.fields.items()}


def _image(x: Tensor | None, b: int) -> Tensor | None:
    return None if x is None else x[b:b + 1]
