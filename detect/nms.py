"""Post-processing: per-anchor decoded outputs -> per-image `Detections` (RetinaNet's recipe).

Per image and per FPN level: flatten the (anchor, class) scores, keep those above a threshold,
take the top-k of them; then class-aware NMS over all levels together and keep the best
``max_detections``. Gaussian soft-NMS can replace hard NMS.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from detect.boxes import box_iou, clip_boxes
from detect.kernels import nms
from detect.structures import Detections

_PREFIX = 4  # the first NMS run of `nms_keep` takes this many times ``limit`` candidates


def nms_keep(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou: float,
    class_agnostic: bool = False,
    limit: int | None = None,
) -> Tensor:
    """Hard NMS.

    Args:
        boxes: [N, 4] xyxy.
        scores: [N].
        labels: [N] int64; boxes of different labels never suppress each other unless
            ``class_agnostic``.
        iou: a box is suppressed by a higher-scoring one when their IoU is above this.
        limit: only the first ``limit`` kept boxes are wanted (None: all).
    Returns:
        [M] int64 indices of the kept boxes, by decreasing score (M <= ``limit``).
    """
    if not class_agnostic and boxes.numel():
        # one NMS over boxes moved apart per class, as torchvision's `batched_nms` does below
        # 1000 boxes (above, it loops over the classes: 1.4 ms of 4.5 for 4000 candidates)
        boxes = boxes + (labels.to(boxes) * (boxes.max() + 1))[:, None]
    if limit is None or len(scores) <= _PREFIX * limit:
        return nms(boxes, scores, iou)[:limit]
    # Greedy NMS decides a box from the higher-scoring ones alone, so NMS of the best n
    # candidates keeps exactly the start of what NMS of all keeps: grow n until it keeps
    # ``limit`` (one short run instead of a quadratic one over thousands of candidates).
    order = scores.argsort(descending=True, stable=True)
    n = _PREFIX * limit
    while True:
        best = order[:n]
        keep = nms(boxes[best], scores[best], iou)
        if len(keep) >= limit or n >= len(order):
            return best[keep[:limit]]
        n *= _PREFIX


def soft_nms_keep(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    sigma: float,
    score_thresh: float,
    max_detections: int,
    class_agnostic: bool = False,
) -> tuple[Tensor, Tensor]:
    """Gaussian soft-NMS (Bodla et al. 2017).

    Repeatedly takes the highest-scoring remaining box and multiplies the scores of the others
    (same label unless ``class_agnostic``) by ``exp(-iou^2 / sigma)``; boxes whose score falls to
    ``score_thresh`` or below are dropped. Stops after ``max_detections`` boxes, which are exactly
    the first ones a full run would select, since scores only decrease.

    Args:
        boxes: [N, 4] xyxy.
        scores: [N].
        labels: [N] int64.
    Returns:
        keep: [M] int64 indices, by decreasing decayed score.
        kept_scores: [M] the decayed scores of those boxes.
    """
    scores = scores.clone()
    alive = scores > score_thresh  # [N]
    keep: list[Tensor] = []
    while len(keep) < max_detections and bool(alive.any()):
        best = torch.where(alive, scores, scores.new_tensor(float("-inf"))).argmax()
        keep.append(best)
        alive[best] = False
        overlap = box_iou(boxes[best, None], boxes)[0]  # [N]
        if not class_agnostic:
            overlap = overlap * (labels == labels[best])
        decayed = scores * torch.exp(-overlap.pow(2) / sigma)
        scores = torch.where(alive, decayed, scores)
        alive &= scores > score_thresh
    keep_t = torch.stack(keep) if keep else torch.zeros(0, dtype=torch.int64, device=boxes.device)
    return keep_t, scores[keep_t]


def _top_candidates(
    scores: Tensor, num_anchors_per_level: list[int], score_thresh: float, topk_per_level: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per level, the top-k (anchor, class) pairs of every image; those not above the threshold
    get score -inf (the caller drops them).

    Args:
        scores: [B, A, C] probabilities.
    Returns:
        values, anchors, labels: [B, L*k] each (k = ``topk_per_level``, or fewer on a small level):
        scores, anchor indices into A and classes of the candidates. Within a level candidates
        stay in (anchor, class) order, so that ties in NMS break exactly as when NMS is run on
        the flattened scores directly.
    """
    num_images, _, num_classes = scores.shape
    values, anchors, labels = [], [], []
    start = 0
    for num_anchors in num_anchors_per_level:
        level = scores[:, start : start + num_anchors].flatten(1)  # [B, A_l*C]
        # no more than the most candidates above the threshold of any image: the same pairs
        # survive, and a small top-k is several times cheaper than one of 1000
        above = int((level > score_thresh).sum(1).max()) if level.numel() else 0
        k = min(topk_per_level, level.shape[1], above)
        top, flat = level.topk(k, dim=1)  # [B, k]
        flat, order = flat.sort(dim=1)
        top = top.gather(1, order)
        values.append(torch.where(top > score_thresh, top, top.new_tensor(float("-inf"))))
        anchors.append(flat // num_classes + start)
        labels.append(flat % num_classes)
        start += num_anchors
    if not values:  # no levels at all
        empty = scores.new_zeros(num_images, 0)
        return empty, empty.long(), empty.long()
    return torch.cat(values, 1), torch.cat(anchors, 1), torch.cat(labels, 1)  # [B, L*k] each


PerImage = Callable[[int, Tensor], Tensor]
"""``(b, anchor_indices [M]) -> [M, ...]``: image b's decoded outputs at those anchors only."""
FieldsOf = Callable[[int, Tensor, Detections], dict[str, Tensor]]
"""``(b, anchor_indices [N], detections) -> {name: [N, ...]}``: per-detection fields of image
b's final detections (whose anchors those are)."""


def postprocess(
    scores: Tensor,
    boxes: Tensor,
    num_anchors_per_level: list[int],
    fields: dict[str, Tensor] | None = None,
    image_sizes: list[tuple[int, int]] | None = None,
    score_thresh: float = 0.05,
    topk_per_level: int = 1000,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    class_agnostic: bool = False,
    soft_nms_sigma: float | None = None,
) -> list[Detections]:
    """Turn decoded per-anchor outputs into detections, one `Detections` per image.

    Args:
        scores: [B, A, C] class probabilities (after sigmoid).
        boxes: [B, A, 4] decoded xyxy boxes.
        num_anchors_per_level: anchors of each level, level-major; sums to A.
        fields: per-anchor values [B, A, ...] by name (e.g. decoded keypoints [B, A, K, 3]);
            each detection takes its anchor's row unchanged (not clipped, scores untouched).
        image_sizes: (height, width) per image to clip boxes to, or None for no clipping.
        score_thresh: candidates must score strictly above this.
        topk_per_level: candidates kept per level and image before NMS.
        nms_iou: IoU above which hard NMS suppresses a box.
        max_detections: detections kept per image, best first.
        class_agnostic: suppress across classes too.
        soft_nms_sigma: use Gaussian soft-NMS with this sigma instead of hard NMS.
    Returns:
        B `Detections`, sorted by decreasing score; boxes [N, 4], scores [N], labels [N] int64,
        fields {name: [N, ...]}.
    """
    fields_of = None if not fields else (
        lambda b, anchors, _: {n: v[b, anchors] for n, v in fields.items()})
    return postprocess_lazy(
        scores, lambda b, anchors: boxes[b, anchors], num_anchors_per_level, fields_of,
        image_sizes, score_thresh, topk_per_level, nms_iou, max_detections, class_agnostic,
        soft_nms_sigma)


def postprocess_lazy(
    scores: Tensor,
    boxes_of: PerImage,
    num_anchors_per_level: list[int],
    fields_of: FieldsOf | None = None,
    image_sizes: list[tuple[int, int]] | None = None,
    score_thresh: float = 0.05,
    topk_per_level: int = 1000,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    class_agnostic: bool = False,
    soft_nms_sigma: float | None = None,
) -> list[Detections]:
    """`postprocess` that decodes only what it keeps: boxes of the pre-NMS candidates
    (``boxes_of(b, anchors) -> [M, 4]``) and the fields of the final detections
    (``fields_of(b, anchors, detections) -> {name: [N, ...]}``) instead of every anchor. Same
    arguments and results as `postprocess` otherwise."""
    if sum(num_anchors_per_level) != scores.shape[1]:
        raise ValueError(f"num_anchors_per_level sums to {sum(num_anchors_per_level)}, "
                         f"but scores have {scores.shape[1]} anchors")
    values, anchors, labels = _top_candidates(scores, num_anchors_per_level, score_thresh,
                                              topk_per_level)  # [B, L*k] each
    results = []
    for b in range(scores.shape[0]):
        valid = values[b] > score_thresh  # [L*k]
        size = None if image_sizes is None else image_sizes[b]
        cand_anchors = anchors[b][valid]  # [M]
        det, keep = _select(values[b][valid], labels[b][valid], boxes_of(b, cand_anchors), size,
                            nms_iou, max_detections, class_agnostic, soft_nms_sigma, score_thresh)
        if fields_of is not None:
            det = replace(det, fields=fields_of(b, cand_anchors[keep], det))
        results.append(det)
    return results


def _select(
    cand_scores: Tensor,
    cand_labels: Tensor,
    cand_boxes: Tensor,
    image_size: tuple[int, int] | None,
    nms_iou: float,
    max_detections: int,
    class_agnostic: bool,
    soft_nms_sigma: float | None,
    score_thresh: float,
) -> tuple[Detections, Tensor]:
    """NMS over one image's candidates ([M] scores, [M] labels, [M, 4] boxes): the detections
    (without fields) and the indices [N] of the kept candidates."""
    if image_size is not None:
        cand_boxes = clip_boxes(cand_boxes, image_size)
    if soft_nms_sigma is None:
        keep = nms_keep(cand_boxes, cand_scores, cand_labels, nms_iou, class_agnostic,
                        max_detections)
        kept_scores = cand_scores[keep]
    else:
        keep, kept_scores = soft_nms_keep(cand_boxes, cand_scores, cand_labels, soft_nms_sigma,
                                          score_thresh, max_detections, class_agnostic)
    return Detections(cand_boxes[keep], kept_scores, cand_labels[keep]), keep
