"""Handedness of each person from its crop: which side is its left, read from the whole person.

The keypoint head regresses every left/right pair in image order (`detect.heads.keypoints`) and
needs one bit per person: do its left keypoints lie on the image's right (it faces the camera)?
Predicted per anchor by a convolution, that bit has to be found in the shared features, and
bending them towards it costs the boxes (docs/KEYPOINTS.md). The cue is in the image already: a
linear probe on an ImageNet backbone's stride-16 features, RoI-pooled over the person's box,
tells a figure facing the camera from one seen from behind for 93-97 % of the sample set's val
persons after 50 steps. So `CropHandedness` reads the backbone's middle map (C4) *detached*, in
each person's box (`torchvision.ops.roi_align`, 7 x 7), and classifies it with a 1x1 convolution
(applied to the map before cropping: the same function, cheaper), a ReLU and a linear layer: it
trains nothing but itself, so it cannot cost another head anything.

Training crops the ground-truth boxes of persons whose handedness is known (`handedness`), each
jittered by up to ``jitter`` of its size (a detected box is a few pixels off; the jitter is drawn
from a seed of the sample, `sample_seed`, so DDP and resumed runs train as one process does);
inference crops the detected boxes. Both clamp the boxes to the map's extent, so the eager model
and the exported graph (which clips boxes to the input) read the same crops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.distributed import loss_normalizers
from detect.kernels import roi_align
from detect.structures import Target


def handedness(gt: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
    """Per object, whether its left keypoints lie on the image's right of their right partners.

    Args:
        gt: [P, K, 3] keypoints ``(x, y, v)``.
        pairs: [Q, 2] (left, right) keypoint indices.
    Returns:
        (mirrored [P] bool: sum over pairs labelled on both sides of ``x_left - x_right`` > 0,
        known [P] bool: that sum is not 0, i.e. some pair decides it).
    """
    left, right = gt[:, pairs[:, 0]], gt[:, pairs[:, 1]]  # [P, Q, 3]
    both = (left[..., 2] > 0) & (right[..., 2] > 0)  # [P, Q]
    spread = ((left[..., 0] - right[..., 0]) * both).sum(-1)  # [P]
    return spread > 0, spread != 0


def sample_seed(image_id: int, boxes: Tensor) -> int:
    """A seed that is a function of the training sample alone, its image id and its (augmented)
    boxes: it changes when the augmentation does, and is the same in one process or several
    (DDP) and after a resume."""
    values = (boxes.detach().cpu() * 100).round().long().flatten().tolist()
    return hash((image_id, *values)) & ((1 << 63) - 1)  # ints hash the same in every process


def jitter_boxes(boxes: Tensor, amount: float, generator: torch.Generator | None = None) -> Tensor:
    """[N, 4] xyxy with each edge moved by up to ``amount`` of the box's width (x) or height (y),
    uniformly at random (``generator``: a CPU generator); edges never cross (at least a tenth of
    the size is kept)."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # [N, 4]: w, h, w, h
    noise = torch.rand(boxes.shape, generator=generator).to(boxes.device) * 2 - 1
    out = boxes + noise * amount * size
    lo, hi = out[:, :2], torch.maximum(out[:, 2:], out[:, :2] + 0.1 * size[:, :2])
    return torch.cat([lo, hi], 1)


class CropHandedness(nn.Module):
    """A person's handedness logit from its crop of a backbone map.

    Args:
        in_channels: channels of the map it reads (the backbone's C4).
        stride: that map's stride in input pixels.
        hidden: channels of the 1x1 convolution on the crop.
        size: the crop's side in cells (RoIAlign output).
        jitter: training boxes' edges move by up to this fraction of their size.
        lr_scale: its learning rate as a multiple of the training's (a classifier learned from
            scratch on features that are already there; docs/KEYPOINTS.md).
    """

    def __init__(self, in_channels: int, stride: int, hidden: int = 32, size: int = 7,
                 jitter: float = 0.1, lr_scale: float = 1.0) -> None:
        super().__init__()
        self.stride, self.size, self.jitter, self.lr_scale = stride, size, jitter, lr_scale
        self.reduce = nn.Conv2d(in_channels, hidden, 1)
        self.classify = nn.Linear(hidden * size * size, 1)

    def forward(self, features: Tensor, boxes: Tensor) -> Tensor:
        """features [B, C, H, W] (read detached), boxes [B, N, 4] xyxy in input pixels ->
        logits [B, N] of "its left keypoints lie on the image's right"."""
        b, n = boxes.shape[:2]
        index = torch.arange(b, device=boxes.device, dtype=boxes.dtype)[:, None, None]
        rois = torch.cat([index.expand(b, n, 1), boxes], -1).reshape(b * n, 5)  # [B N, 5]
        return self._classify(features, rois).view(b, n)

    def _classify(self, features: Tensor, rois: Tensor) -> Tensor:
        """rois [P, 5] (image index, x1, y1, x2, y2), clamped to the map's extent -> [P]."""
        h, w = features.shape[-2:]
        rois = rois.float()
        limit = rois.new_tensor([w, h, w, h]) * self.stride
        boxes = torch.minimum(rois[:, 1:].clamp(min=0), limit)
        # the 1x1 convolution first, on the whole map: it commutes with RoIAlign's bilinear
        # sampling (weights summing to 1 inside the clamped boxes), and RoIAlign on the CPU costs
        # per channel (100 crops of 112 channels: 20 ms; of 32: a third of it)
        reduced = self.reduce(features.detach().float())  # [B, hidden, H, W]
        crops = roi_align(reduced, torch.cat([rois[:, :1], boxes], 1), self.size,
                          1.0 / self.stride, sampling_ratio=2, aligned=True)  # [P, hidden, S, S]
        return self.classify(F.relu(crops).flatten(1))[:, 0]

    def loss(self, features: Tensor, targets: list[Target], pairs: Tensor) -> Tensor:
        """Mean BCE over the batch's persons whose handedness is known (the count summed over DDP
        ranks like the other normalisers), on their ground-truth boxes (jittered in training);
        zero, still connected to the graph, without any."""
        rows, labels = [], []
        for b, t in enumerate(targets):
            if t.keypoints is None or len(t.boxes) == 0:
                continue
            mirrored, known = handedness(t.keypoints.to(features.device), pairs)
            boxes = t.boxes.to(features.device, torch.float32)[known]
            if self.training:  # the same jitter for the same sample, however it is run
                seed = sample_seed(t.image_id, boxes)
                boxes = jitter_boxes(boxes, self.jitter, torch.Generator().manual_seed(seed))
            rows.append(torch.cat([boxes.new_full((len(boxes), 1), b), boxes], 1))
            labels.append(mirrored[known].float())
        total = sum(len(r) for r in rows)
        count = loss_normalizers(features.new_tensor([float(total)]))[0]
        if total == 0:
            return sum(p.sum() for p in self.parameters()) * 0.0
        logits = self._classify(features, torch.cat(rows))  # [P]
        bce = F.binary_cross_entropy_with_logits(logits, torch.cat(labels), reduction="sum")
        return bce / count
