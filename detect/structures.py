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

    Attributes:
        anchors: [A, 4] xyxy anchors of all levels, level-major order.
        matched: [B, A] int64 index of the matched ground-truth object, or
            ``BACKGROUND`` (-1) or ``IGNORED`` (-2).
        boxes: [B, A, 4] matched ground-truth boxes (zeros where not positive).
        labels: [B, A] matched labels (-1 where not positive).
        keypoints: [B, A, K, 3] matched keypoints, or None when the batch has none.
        areas: [B, A] matched object areas in transformed pixels (for OKS; 1 where not positive).
        num_positive: scalar float, the loss normaliser of the classification and box heads: the
            number of positives in the batch, at least 1. `match_batch` sets it; under DDP it
            is the count over every rank's batch divided by the number of ranks
            (`detect.distributed.loss_normalizers`).
        num_keypoint_positive: the same for `keypoint_positive` (the keypoint head's normaliser).
        num_labelled_keypoints: the same for the labelled keypoints (v > 0) of the batch's
            ground truth (the keypoint heatmaps' normaliser).
        num_anchors_per_level: anchors of each level (the first ``A_0`` rows are the finest).
        targets: the ground truth matched, for heads whose targets are dense maps rather than
            per-anchor values (keypoint heatmaps).
    """

    BACKGROUND = -1
    IGNORED = -2

    anchors: Tensor
    matched: Tensor
    boxes: Tensor
    labels: Tensor
    keypoints: Tensor | None
    areas: Tensor
    num_positive: Tensor | None = None  # set by `match_batch`
    num_keypoint_positive: Tensor | None = None  # set by `match_batch`
    num_labelled_keypoints: Tensor | None = None  # set by `match_batch`
    num_anchors_per_level: tuple[int, ...] = ()  # A_l, summing to A
    targets: list[Target] = field(default_factory=list)  # the batch's ground truth, per image

    @property
    def positive(self) -> Tensor:
        """[B, A] bool."""
        return self.matched >= 0

    @property
    def keypoint_positive(self) -> Tensor:
        """[B, A] bool: positives whose object has at least one labelled keypoint."""
        if self.keypoints is None:
            return torch.zeros_like(self.positive)
        return self.positive & (self.keypoints[..., 2] > 0).any(-1)

    @property
    def valid(self) -> Tensor:
        """[B, A] bool: positive or background (anchors that take part in classification)."""
        return self.matched != self.IGNORED


@dataclass
class Detections:
    """Final detections of one image.

    Attributes:
        boxes: [N, 4] xyxy.
        scores: [N].
        labels: [N] int64 contiguous labels.
        keypoints: [N, K, 3] ``(x, y, score)``, or None when the model has no keypoint head.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    keypoints: Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def map_to_original(self, scale: float, offset: tuple[float, float]) -> "Detections":
        """Detections in original-image pixels."""
        kpts = self.keypoints
        if kpts is not None:
            kpts = torch.cat([map_to_original(kpts[..., :2], scale, offset), kpts[..., 2:]], dim=-1)
        return Detections(map_to_original(self.boxes, scale, offset), self.scores, self.labels, kpts)
