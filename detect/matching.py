"""Matching anchors to ground truth, once per batch, shared by every head.

A matcher maps the anchors of one image to ``matched [A]`` int64: the index of the matched
ground-truth object (>= 0), ``Matches.BACKGROUND`` (-1) or ``Matches.IGNORED`` (-2).
`match_batch` runs a matcher on every image and gathers the matched boxes, labels and
areas per anchor into a `Matches`.

Both matchers treat crowd / ignore regions the same way: a background anchor whose area lies at
least ``ignore_ioa`` inside an ignore box becomes ``IGNORED``; positives stay positive.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from detect.boxes import box_centers, box_ioa, box_iou, centers_inside
from detect.distributed import loss_normalizers
from detect.structures import Matches, Target


class Matcher(Protocol):
    """What `match_batch` needs from a matcher."""

    def __call__(
        self, anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor, ignore_boxes: Tensor
    ) -> Tensor:
        """[A, 4] anchors, [N, 4] gt boxes, [M, 4] ignore boxes (all xyxy) -> matched [A] int64."""
        ...


def _all_background(anchors: Tensor) -> Tensor:
    """[A] int64 filled with BACKGROUND."""
    return torch.full((anchors.shape[0],), Matches.BACKGROUND, dtype=torch.int64, device=anchors.device)


def apply_ignore(matched: Tensor, anchors: Tensor, ignore_boxes: Tensor, ignore_ioa: float) -> Tensor:
    """Turn background anchors mostly inside an ignore box into IGNORED.

    Args:
        matched: [A] int64 match result.
        anchors: [A, 4] xyxy.
        ignore_boxes: [M, 4] xyxy crowd regions (M may be 0).
        ignore_ioa: minimum fraction of the anchor's area inside one ignore box.

    Returns:
        [A] int64, a new tensor.
    """
    if ignore_boxes.numel() == 0:
        return matched
    ioa = box_ioa(anchors, ignore_boxes.to(anchors)).amax(dim=1)  # [A]
    ignore = (matched == Matches.BACKGROUND) & (ioa >= ignore_ioa)
    return torch.where(ignore, Matches.IGNORED, matched)


class IoUMatcher:
    """RetinaNet matching on IoU thresholds, with optional low-quality matches.

    Per anchor, take the ground truth with the highest IoU: IoU >= ``fg_iou`` -> that ground
    truth; IoU < ``bg_iou`` -> background; in between -> ignored. With ``allow_low_quality``,
    for each ground truth every anchor that ties for its highest IoU becomes positive *for that
    ground truth* (when that IoU is > 0), so that every box that overlaps some anchor gets one.

    Worked example (``fg_iou=0.5``, ``bg_iou=0.4``), ``iou`` is [N=3 gt, A=4 anchors]::

                 a0    a1    a2    a3
        gt0   [0.90, 0.45, 0.00, 0.00]
        gt1   [0.10, 0.20, 0.30, 0.30]
        gt2   [0.00, 0.00, 0.00, 0.00]

    * a0: best is gt0 with 0.90 >= 0.5 -> 0.
    * a1: best is gt0 with 0.45, in [0.4, 0.5) -> IGNORED (-2).
    * a2, a3: best is gt1 with 0.30 < 0.4 -> BACKGROUND (-1) ...
    * ... but 0.30 is gt1's highest IoU and a2, a3 tie for it, so both become low-quality
      positives of gt1 -> 1.
    * gt2 overlaps no anchor (highest IoU 0), so it gets no low-quality match. (torchvision's
      Matcher would make all four anchors "positive" here, since they all tie at 0.)

    Result: ``[0, -2, 1, 1]``; without low-quality matches ``[0, -2, -1, -1]``.

    When an anchor is the best anchor of several ground truths it goes to the one with the highest
    IoU. Unlike torchvision (which keeps the anchor's own arg-max ground truth), a low-quality
    match is always given to the ground truth it is best for, so that ground truth is not left out.
    """

    def __init__(
        self, fg_iou: float = 0.5, bg_iou: float = 0.4, allow_low_quality: bool = True, ignore_ioa: float = 0.5
    ) -> None:
        if bg_iou > fg_iou:
            raise ValueError(f"bg_iou ({bg_iou}) must not exceed fg_iou ({fg_iou})")
        self.fg_iou = fg_iou
        self.bg_iou = bg_iou
        self.allow_low_quality = allow_low_quality
        self.ignore_ioa = ignore_ioa

    def match_iou(self, iou: Tensor) -> Tensor:
        """Match on an IoU matrix: ``iou`` [N, A] (gt x anchor) -> matched [A] int64."""
        num_gt, num_anchors = iou.shape
        if num_gt == 0:
            return torch.full((num_anchors,), Matches.BACKGROUND, dtype=torch.int64, device=iou.device)
        max_iou, matched = iou.max(dim=0)  # [A], [A]
        matched = torch.where(max_iou < self.fg_iou, Matches.IGNORED, matched)
        matched = torch.where(max_iou < self.bg_iou, Matches.BACKGROUND, matched)
        if self.allow_low_quality:
            matched = self._add_low_quality(iou, matched)
        return matched

    @staticmethod
    def _add_low_quality(iou: Tensor, matched: Tensor) -> Tensor:
        """For each gt, its best anchors (ties included, IoU > 0) become its positives."""
        best_per_gt = iou.amax(dim=1, keepdim=True)  # [N, 1]
        is_best = (iou == best_per_gt) & (best_per_gt > 0)  # [N, A]
        best_iou = torch.where(is_best, iou, -1.0)  # [N, A]
        gt_for_anchor = best_iou.argmax(dim=0)  # [A]: among the gts it is best for, highest IoU
        return torch.where(is_best.any(dim=0), gt_for_anchor, matched)

    def __call__(
        self, anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor, ignore_boxes: Tensor
    ) -> Tensor:
        """[A, 4] anchors, [N, 4] gt boxes, [M, 4] ignore boxes (xyxy) -> matched [A] int64.

        ``num_anchors_per_level`` is unused (IoU matching does not look at levels); it is accepted
        so that every matcher has the same call.
        """
        if gt_boxes.shape[0] == 0:
            matched = _all_background(anchors)
        else:
            matched = self.match_iou(box_iou(gt_boxes.to(anchors), anchors))  # [A]
        return apply_ignore(matched, anchors, ignore_boxes, self.ignore_ioa)


class ATSSMatcher:
    """Adaptive Training Sample Selection (Zhang et al., CVPR 2020).

    For each ground truth: on every level take the ``topk`` anchors whose centres are closest (L2)
    to the box centre; threshold = mean + std (unbiased) of their IoUs with the box; positives are
    candidates with IoU >= threshold whose centre lies strictly inside the box (by more than
    ``inside_eps`` pixels, 0.01 as in the reference code). An anchor claimed by several ground
    truths goes to the one with the highest IoU. Everything else is background.
    """

    def __init__(self, topk: int = 9, ignore_ioa: float = 0.5, inside_eps: float = 0.01) -> None:
        self.topk = topk
        self.ignore_ioa = ignore_ioa
        self.inside_eps = inside_eps

    def candidates(self, anchor_centers: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor) -> Tensor:
        """Indices [N, C] of each gt's candidate anchors, C = sum_l min(topk, A_l).

        Args:
            anchor_centers: [A, 2] (x, y).
            num_anchors_per_level: A_l per level, summing to A.
            gt_boxes: [N, 4] xyxy.
        """
        dist = torch.cdist(box_centers(gt_boxes), anchor_centers)  # [N, A]
        per_level = []
        starts = [0, *itertools.accumulate(num_anchors_per_level)][:-1]
        for level_dist, start in zip(dist.split(list(num_anchors_per_level), dim=1), starts):
            k = min(self.topk, level_dist.shape[1])
            per_level.append(level_dist.topk(k, dim=1, largest=False).indices + start)  # [N, k]
        return torch.cat(per_level, dim=1)  # [N, C]

    def positive_mask(self, anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor) -> Tensor:
        """[N, A] bool: anchor a is a positive candidate of gt n (before resolving conflicts)."""
        centers = box_centers(anchors)  # [A, 2]
        iou = box_iou(gt_boxes, anchors)  # [N, A]
        cand = self.candidates(centers, num_anchors_per_level, gt_boxes)  # [N, C]
        cand_iou = iou.gather(1, cand)  # [N, C]
        threshold = cand_iou.mean(dim=1)  # [N]
        if cand.shape[1] > 1:  # the unbiased std of a single candidate is NaN: use 0 then
            threshold = threshold + cand_iou.std(dim=1)
        inside = centers_inside(centers, gt_boxes, eps=self.inside_eps).gather(1, cand)  # [N, C]
        is_pos = (cand_iou >= threshold[:, None]) & inside  # [N, C]
        mask = torch.zeros_like(iou, dtype=torch.bool)  # [N, A]
        return mask.scatter_(1, cand, is_pos)

    def __call__(
        self, anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor, ignore_boxes: Tensor
    ) -> Tensor:
        """[A, 4] anchors, [N, 4] gt boxes, [M, 4] ignore boxes (xyxy) -> matched [A] int64.

        ``num_anchors_per_level`` (summing to A, level-major like the anchors) drives the per-level
        candidate selection.
        """
        if sum(num_anchors_per_level) != anchors.shape[0]:
            raise ValueError(f"num_anchors_per_level sums to {sum(num_anchors_per_level)}, not {anchors.shape[0]}")
        if gt_boxes.shape[0] == 0:
            return apply_ignore(_all_background(anchors), anchors, ignore_boxes, self.ignore_ioa)
        gt_boxes = gt_boxes.to(anchors)
        mask = self.positive_mask(anchors, num_anchors_per_level, gt_boxes)  # [N, A]
        iou = torch.where(mask, box_iou(gt_boxes, anchors), -1.0)  # [N, A]
        matched = torch.where(mask.any(dim=0), iou.argmax(dim=0), Matches.BACKGROUND)  # [A]
        return apply_ignore(matched, anchors, ignore_boxes, self.ignore_ioa)


def _gather(values: Tensor, matched: Tensor, fill: float) -> Tensor:
    """values [N, ...] -> [A, ...]: row matched[a] where matched[a] >= 0, else ``fill``.

    Safe when N == 0 (then every anchor is filled).
    """
    out = values.new_full((matched.shape[0], *values.shape[1:]), fill)  # [A, ...]
    pos = matched >= 0
    out[pos] = values[matched[pos]]
    return out


def match_batch(
    matcher: Matcher, anchors: Tensor, num_anchors_per_level: Sequence[int], targets: list[Target]
) -> Matches:
    """Match every image of a batch and gather the per-anchor targets.

    Args:
        matcher: an `IoUMatcher`, `ATSSMatcher` or anything with the same call.
        anchors: [A, 4] xyxy, level-major.
        num_anchors_per_level: A_l per level, summing to A.
        targets: B targets; images with no objects are allowed.

    Returns:
        `Matches` with matched [B, A], boxes [B, A, 4] (0 where not positive), labels [B, A]
        (-1 where not positive), areas [B, A] (1 where not positive), and the loss normaliser
        (the number of positives; under DDP summed over the ranks, see `detect.distributed`:
        every rank must call this per batch). Heads gather any other target themselves
        (`Matches.gather`).
    """
    dev = anchors.device
    matched = torch.stack(
        [matcher(anchors, num_anchors_per_level, t.boxes.to(dev), t.ignore_boxes.to(dev)) for t in targets]
    )  # [B, A]
    boxes = torch.stack([_gather(t.boxes.to(anchors), m, 0.0) for t, m in zip(targets, matched)])  # [B, A, 4]
    labels = torch.stack([_gather(t.labels.to(dev, torch.int64), m, -1) for t, m in zip(targets, matched)])  # [B, A]
    areas = torch.stack([_gather(_areas(t).to(anchors), m, 1.0) for t, m in zip(targets, matched)])  # [B, A]
    m = Matches(anchors, matched, boxes, labels, areas,
                num_anchors_per_level=tuple(num_anchors_per_level), targets=list(targets))
    m.num_positive = loss_normalizers(m.positive.sum()[None])[0]  # over DDP ranks
    return m


def _areas(target: Target) -> Tensor:
    """[N] object areas of a target (the box areas if it has none)."""
    if target.areas is not None:
        return target.areas
    wh = (target.boxes[:, 2:] - target.boxes[:, :2]).clamp(min=0)  # [N, 2]
    return wh[:, 0] * wh[:, 1]
