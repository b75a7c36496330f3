"""The multi-head detector: backbone -> FPN -> (optional shared tower) -> dict of heads.

`MultiHeadDetector.forward` is pure: images in, `HeadOutputs` out, the same in training and
evaluation. `losses` matches anchors once for the whole batch and asks every head for its losses;
`detect` decodes every head and runs post-processing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detect.anchors import AnchorGenerator
from detect.config import PostprocessConfig
from detect.heads.base import Head, Tower
from detect.matching import Matcher, match_batch
from detect.nms import postprocess_lazy
from detect.structures import Detections, Target


@dataclass
class HeadOutputs:
    """preds: head name -> [B, A, D]; feature_sizes: (H_l, W_l) per FPN level; crop_features:
    the backbone map [B, C, H, W] a keypoint head's crop handedness classifier reads
    (`detect.heads.keypoint_side`; None without one)."""

    preds: dict[str, Tensor]
    feature_sizes: list[tuple[int, int]]
    crop_features: Tensor | None = None


class MultiHeadDetector(nn.Module):
    def __init__(self, backbone: nn.Module, neck: nn.Module, heads: dict[str, Head],
                 anchor_generator: AnchorGenerator, matcher: Matcher,
                 pixel_mean: tuple[float, float, float], pixel_std: tuple[float, float, float],
                 shared_tower: Tower | None = None, channels_last: bool = True) -> None:
        super().__init__()
        self.backbone, self.neck = backbone, neck
        self.shared_tower = shared_tower
        self.heads = nn.ModuleDict(heads)
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
        return self.neck(self.backbone(self.normalize(images)))

    def forward(self, images: Tensor) -> HeadOutputs:
        levels = self.backbone(self.normalize(images))  # C3, C4, C5
        feats = self.neck(levels)
        sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]
        if self.shared_tower is not None:
            feats = self.shared_tower(feats)
        kpt = self.heads["keypoints"] if "keypoints" in self.heads else None
        # the keypoint head's crop handedness classifier reads C4 (detached, in its own module)
        crops = levels[1] if kpt is not None and kpt.side_crop is not None else None
        if kpt is None or not kpt.reads_side_features:
            return HeadOutputs({name: head(feats) for name, head in self.heads.items()}, sizes,
                               crops)
        # the keypoint head's handedness logit reads the classification tower: run it once
        cls_feats = self.heads["cls"].tower_features(feats)
        preds = {name: (head.predict(cls_feats) if name == "cls" else
                        head(feats, side_features=cls_feats) if name == "keypoints" else
                        head(feats))
                 for name, head in self.heads.items()}
        return HeadOutputs(preds, sizes, crops)

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
        return {n: (self.heads[n].loss(out.preds[n], matches, out.crop_features)
                    if n == "keypoints" else self.heads[n].loss(out.preds[n], matches))
                for n in names if n in self.heads}

    @torch.no_grad()
    def detect(self, out: HeadOutputs, image_sizes: list[tuple[int, int]] | None,
               params: PostprocessConfig = PostprocessConfig()) -> list[Detections]:
        """Decode every head and post-process into per-image detections (transformed pixels).

        Scores are decoded everywhere (the top-k needs them); boxes only for the pre-NMS
        candidates and keypoints only for the final detections (refined on the finest level's
        maps, and zeros for classes without keypoints, `KeypointHead.set_classes`).
        """
        device = out.preds["cls"].device
        anchors = self.anchors(out.feature_sizes, device)  # [A, 4]
        scores = self.heads["cls"].decode(out.preds["cls"], anchors)  # [B, A, C]
        box_head, box_pred = self.heads["box"], out.preds["box"]

        def boxes_of(b: int, idx: Tensor) -> Tensor:
            return box_head.decode(box_pred[b, idx], anchors[idx])  # [M, 4]

        keypoints_of = None
        if "keypoints" in self.heads:
            kpt_head, kpt_pred = self.heads["keypoints"], out.preds["keypoints"]
            finest = self.anchor_generator.num_anchors_per_level(out.feature_sizes)[0]
            maps = kpt_head.maps(kpt_pred, finest) if kpt_head.refines else None  # [B, H_0 W_0, .]
            stride = self.anchor_generator.strides[0]

            def keypoints_of(b: int, idx: Tensor, labels: Tensor) -> Tensor:
                if idx.numel() == 0:  # no detections: nothing to decode or refine
                    return anchors.new_zeros(0, kpt_head.num_keypoints, 3)
                crops = None if out.crop_features is None else out.crop_features[b:b + 1]
                sides = kpt_head.crop_sides(crops, boxes_of(b, idx)[None])  # [1, N] or None
                kpts = kpt_head.decode(kpt_pred[b, idx][None], anchors[idx][None],
                                       None if maps is None else maps[b:b + 1],
                                       out.feature_sizes[0], stride, sides)[0]  # [N, K, 3]
                return kpt_head.mask_detections(kpts, labels)

        return postprocess_lazy(
            scores, boxes_of, self.anchor_generator.num_anchors_per_level(out.feature_sizes),
            keypoints_of, image_sizes, score_thresh=params.score_thresh,
            topk_per_level=params.topk_per_level, nms_iou=params.nms_iou,
            max_detections=params.max_detections, class_agnostic=params.class_agnostic,
            soft_nms_sigma=params.soft_nms_sigma)
