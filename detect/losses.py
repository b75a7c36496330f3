"""Loss functions as pure tensor functions; heads choose, weight and normalise them.

``P`` is the number of (positive) anchors a loss is computed on, ``C`` the number of classes and
``K`` the number of keypoints. Keypoints follow COCO: ``(x, y, v)`` with ``v`` 0 not labelled,
1 labelled but hidden, 2 visible. torchvision's losses are imported when first used: a predictor,
which builds the heads but computes no loss, does not pay torchvision's import (`detect.kernels`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

COCO_PERSON_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

# Per-keypoint OKS sigmas of COCO persons, in the order of COCO_PERSON_KEYPOINTS.
COCO_PERSON_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip

# The 19 limbs of the COCO person category (its ``skeleton`` field), 0-based keypoint indices.
COCO_PERSON_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip

_MIN_AREA = 1e-6  # keeps OKS finite for degenerate (zero-area) objects


def focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), summed.

    Args:
        logits: [P, C] classification logits.
        targets: [P, C] float one-hot targets (all zeros for background).
    Returns:
        Scalar: the sum over anchors and classes; the caller divides by the number of positives.
    """
    from torchvision.ops import sigmoid_focal_loss

    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="sum")


def quality_focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0) -> Tensor:
    """Focal loss with soft targets (Li et al., "Generalized Focal Loss", 2020): BCE weighted by
    ``|sigmoid(logit) - target| ** gamma``, so easy cells, near 0 or near their target, fade.

    Args:
        logits, targets: same shape; targets in [0, 1].
    Returns:
        Elementwise loss, not reduced.
    """
    weight = (logits.sigmoid() - targets).abs().pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight


def giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - GIoU`` between paired boxes.

    Args:
        pred, target: [P, 4] xyxy boxes, paired row by row.
    Returns:
        [P] per-box loss, not reduced.
    """
    from torchvision.ops import generalized_box_iou_loss

    return generalized_box_iou_loss(pred, target, reduction="none")


def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = 1.0 / 9) -> Tensor:
    """Smooth L1 (Huber divided by ``beta``) on box deltas; elementwise, same shape as ``pred``."""
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="none")


def oks(pred_xy: Tensor, gt: Tensor, areas: Tensor, sigmas: Tensor | Sequence[float]) -> Tensor:
    """Object keypoint similarity of paired predictions and ground truth (COCO's definition).

    ``OKS = sum_i exp(-d_i^2 / (2 s^2 k_i^2)) [v_i > 0] / sum_i [v_i > 0]``, ``s^2`` = area,
    ``k_i = 2 sigma_i``.

    Args:
        pred_xy: [P, K, 2] predicted keypoint positions.
        gt: [P, K, 3] ground-truth ``(x, y, v)``.
        areas: [P] object areas (the squared scale ``s^2``).
        sigmas: [K] per-keypoint sigmas (tensor or sequence, e.g. `COCO_PERSON_SIGMAS`).
    Returns:
        [P] OKS in [0, 1]; 0 for objects without any labelled keypoint.
    """
    labelled = (gt[..., 2] > 0).to(pred_xy.dtype)  # [P, K]
    d2 = (pred_xy - gt[..., :2]).pow(2).sum(dim=-1)  # [P, K]
    k2 = (2 * torch.as_tensor(sigmas, dtype=pred_xy.dtype, device=pred_xy.device)).pow(2)  # [K]
    s2 = areas.to(pred_xy).clamp(min=_MIN_AREA)[:, None]  # [P, 1]
    similarity = torch.exp(-d2 / (2 * s2 * k2))  # [P, K]
    return (similarity * labelled).sum(dim=-1) / labelled.sum(dim=-1).clamp(min=1)


def oks_loss(
    pred_xy: Tensor, gt: Tensor, areas: Tensor, sigmas: Tensor | Sequence[float]
) -> Tensor:
    """``1 - OKS`` per object (shapes as in `oks`); 0 for a perfect prediction.

    Objects without labelled keypoints get loss 1 with zero gradient: the caller masks them out.

    Returns:
        [P] per-object loss, not reduced.
    """
    return 1.0 - oks(pred_xy, gt, areas, sigmas)


def keypoint_l1(pred_xy: Tensor, gt: Tensor, areas: Tensor) -> Tensor:
    """Sum over objects of the mean L1 distance of labelled keypoints, divided by sqrt(area).

    Args:
        pred_xy: [P, K, 2]; gt: [P, K, 3]; areas: [P].
    Returns:
        scalar; objects without labelled keypoints contribute 0.
    """
    labelled = (gt[..., 2] > 0).to(pred_xy.dtype)  # [P, K]
    scale = areas.to(pred_xy).clamp(min=_MIN_AREA).sqrt()[:, None]  # [P, 1]
    dist = (pred_xy - gt[..., :2]).abs().sum(-1) / scale  # [P, K]
    return ((dist * labelled).sum(-1) / labelled.sum(-1).clamp(min=1)).sum()


def visibility_loss(logits: Tensor, gt_vis: Tensor) -> Tensor:
    """BCE-with-logits for "is this keypoint present", target ``v > 0``.

    A labelled but hidden keypoint (``v == 1``) counts as present: COCO evaluates its position,
    so the predicted score should be high for it. Only meaningful for objects with at least one
    labelled keypoint; the caller masks the others.

    Args:
        logits: [P, K] presence logits.
        gt_vis: [P, K] COCO visibility (0, 1, 2).
    Returns:
        [P, K] elementwise loss, not reduced.
    """
    target = (gt_vis > 0).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
