"""Typed containers that flow between the data pipeline, the model, matching and post-processing.

Conventions used everywhere in `detect`:

* Boxes are absolute ``xyxy`` pixels (float32). COCO ``xywh`` exists only at the edges
  (reading annotation files, writing results files).
* ``B`` is the batch size, ``A`` the number of anchors of all levels together
  (``sum(H_l * W_l * anchors_per_location)``), ``C`` the number of classes, ``K`` the number of
  keypoints, ``N`` the number of objects of one image.
* A keypoint is ``(x, y, v)``; ``v`` is COCO visibility (0 not labelled, 1 labelled but hidden,
  2 visible) in targets and a score in ``[0, 1]`` in detections.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor


@dataclass
class Target:
    """Ground truth of one image, in pixels of the *transformed* image.

    Attributes:
        boxes: [N, 4] float32 xyxy.
        labels: [N] int64 contiguous labels ``0..C-1``.
        keypoints: [N, K, 3] float32 ``(x, y, visibility)``, or None when the dataset has no
            keypoints. Objects whose category has no keypoints carry visibility 0 everywhere.
        ignore_boxes: [M, 4] float32 xyxy crowd regions: anchors mostly inside them are neither
            positive nor negative.
        areas: [N] float32 object area in transformed pixels (COCO ``area`` * scale**2); the
            OKS loss scale. Defaults to the box area.
        image_id: COCO image id.
        orig_size: (height, width) of the original image.
        scale: transformed = original * scale + offset.
        offset: (x, y) offset of that mapping, in transformed pixels.
        masks: [N, H, W] uint8 0/1 instance masks of the transformed image (unpadded), or None
            when the dataset has no segmentations.
        has_mask: [N] bool, with ``masks``: whether the object has a mask (False: it trains its
            box only).
    """

    boxes: Tensor
    labels: Tensor
    keypoints: Tensor | None = None
    ignore_boxes: Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    areas: Tensor | None = None
    image_id: int = -1
    orig_size: tuple[int, int] = (0, 0)
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)
    masks: Tensor | None = None
    has_mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.areas is None:
            wh = (self.boxes[:, 2:] - self.boxes[:, :2]).clamp(min=0)
            self.areas = wh[:, 0] * wh[:, 1]

    def to(self, device: torch.device | str) -> "Target":
        return replace(
            self,
            boxes=self.boxes.to(device),
            labels=self.labels.to(device),
            keypoints=None if self.keypoints is None else self.keypoints.to(device),
            ignore_boxes=self.ignore_boxes.to(device),
            areas=self.areas.to(device) if self.areas is not None else None,
            masks=None if self.masks is None else self.masks.to(device),
            has_mask=None if self.has_mask is None else self.has_mask.to(device),
        )

    def to_original(self, boxes: Tensor) -> Tensor:
        """Map [..., 4] xyxy boxes from transformed to original pixels."""
        return map_to_original(boxes, self.scale, self.offset)


def partner_index(num_keypoints: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Per keypoint, the index of its left/right partner in ``pairs`` (its own when unpaired):
    indexing keypoints with it swaps every pair (a mirrored image, a mirrored person)."""
    order = list(range(num_keypoints))
    for left, right in pairs:
        order[left], order[right] = right, left
    return order


def map_to_original(xy: Tensor, scale: float, offset: tuple[float, float]) -> Tensor:
    """Invert ``transformed = original * scale + offset`` for [..., 2k] interleaved x, y values."""
    off = torch.tensor(offset, dtype=xy.dtype, device=xy.device).repeat(xy.shape[-1] // 2)
    return (xy - off) / scale


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        images: [B, 3, H, W] uint8 RGB; H and W are multiples of the largest stride. The model
            converts to float and normalises (so exported graphs hold normalisation too).
        targets: one `Target` per image.
        image_sizes: (height, width) of each image before padding.
        skipped: "path: reason" of images that could not be read and were left out.
    """

    images: Tensor
    targets: list[Target]
    image_sizes: list[tuple[int, int]]
    skipped: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.images.to(device, non_blocking=True), [t.to(device) for t in self.targets],
                     self.image_sizes, self.skipped)


@dataclass
class Matches:
    """The result of matching anchors to ground truth for a batch, shared by every head.

    Heads take what they need beyond boxes and labels from ``targets`` through `gather` (the
    keypoint head its keypoints): matching knows no head.

    Attributes:
        anchors: [A, 4] xyxy anchors of all levels, level-major order.
        matched: [B, A] int64 index of the matched ground-truth object, or
            ``BACKGROUND`` (-1) or ``IGNORED`` (-2).
        boxes: [B, A, 4] matched ground-truth boxes (zeros where not positive).
        labels: [B, A] matched labels (-1 where not positive).
        areas: [B, A] matched object areas in transformed pixels (1 where not positive).
        num_positive: scalar float, the loss normaliser of the classification and box heads: the
            number of positives in the batch, at least 1. `match_batch` sets it; under DDP it
            is the count over every rank's batch divided by the number of ranks
            (`detect.distributed.loss_normalizers`).
        num_anchors_per_level: anchors of each level (the first ``A_0`` rows are the finest).
        targets: the ground truth matched, per image.
    """

    BACKGROUND = -1
    IGNORED = -2

    anchors: Tensor
    matched: Tensor
    boxes: Tensor
    labels: Tensor
    areas: Tensor
    num_positive: Tensor | None = None  # set by `match_batch`
    num_anchors_per_level: tuple[int, ...] = ()  # A_l, summing to A
    targets: list[Target] = field(default_factory=list)  # the batch's ground truth, per image

    @property
    def positive(self) -> Tensor:
        """[B, A] bool."""
        return self.matched >= 0

    @property
    def valid(self) -> Tensor:
        """[B, A] bool: positive or background (anchors that take part in classification)."""
        return self.matched != self.IGNORED

    def gather(self, values: Sequence[Tensor], fill: float) -> Tensor:
        """Per-object values of each image (``values[b]`` [N_b, ...]) -> [B, A, ...] at every
        anchor: its matched object's row where it is positive, else ``fill``."""
        out = []
        for v, m in zip(values, self.matched):
            row = v.new_full((m.shape[0], *v.shape[1:]), fill)  # [A, ...]
            pos = m >= 0
            row[pos] = v[m[pos]]
            out.append(row)
        return torch.stack(out)


Geometry = Literal["value", "points", "mask"]
"""How a per-detection field maps from the network's input pixels to the original image's
(`field_to_original`): ``value`` not at all (a number of the object), ``points`` [..., D >= 2]
whose first two values are (x, y) pixels (keypoints), ``mask`` [h, w] probabilities at the
head's stride, resampled in the detection's box and thresholded (`detect.masks`)."""


def field_to_original(values: Any, geometry: Geometry, scale: float,
                      offset: tuple[float, float], size: tuple[int, int] | None = None,
                      stride: int = 1, boxes: Any = None) -> Any:
    """A field's values (a tensor or a numpy array) in original-image pixels: the inverse of
    ``transformed = original * scale + offset`` on the coordinates its geometry has. Masks
    need the original ``size`` (H, W), the field's ``stride`` and the detections' ``boxes``
    [N, 4] in original pixels, and become bool [N, H, W] (`detect.masks.masks_to_original`)."""
    if geometry == "points":
        out = values * 1  # a copy, in the input's type
        out[..., 0] = (values[..., 0] - offset[0]) / scale
        out[..., 1] = (values[..., 1] - offset[1]) / scale
        return out
    if geometry == "mask":
        from detect.masks import masks_to_original

        if size is None or boxes is None:
            raise ValueError("a mask field needs the original size and the boxes")
        tensor = isinstance(values, torch.Tensor)
        probs = values.detach().float().cpu().numpy() if tensor else np.asarray(values)
        box_array = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else boxes
        out = masks_to_original(probs, box_array, stride, scale, offset, size)
        return torch.from_numpy(out).to(values.device) if tensor else out
    return values


@dataclass
class Detections:
    """Final detections of one image.

    Attributes:
        boxes: [N, 4] xyxy.
        scores: [N].
        labels: [N] int64 contiguous labels.
        fields: per head that decodes the final detections (`detect.heads.base.InstanceHead`),
            its values [N, ...] by the head's name, e.g. ``keypoints`` [N, K, 3]
            ``(x, y, score)``, ``masks`` [N, h, w] probabilities (bool [N, H, W] in original
            pixels); zeros for detections of classes the head does not serve.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    fields: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])
