"""Classification accuracy on matched detections: is the class right where the box is right?

Definition (``accuracy_on_matched``):

1. Per image, take every non-crowd ground-truth box (any category) and every prediction
   (any category, no score threshold, no per-image cap).
2. Match greedily and class-agnostically, as COCO does for one category: visit predictions by
   descending score (stable sort); each takes the still-unmatched GT with the highest IoU,
   provided that IoU >= 0.5; otherwise it stays unmatched. Crowd GT take part in nothing.
3. ``accuracy_on_matched`` = (matched pairs whose predicted category equals the GT category)
   / (matched pairs); 0.0 when nothing is matched. ``num_matched`` is the number of pairs.

Worked example: GT boxes A (cat 1), B (cat 2); predictions p1 on A (cat 1, score 0.9),
p2 on B (cat 1, score 0.8), p3 on A (cat 2, score 0.7). p1-A and p2-B are matched, p3 finds A
taken; accuracy = 1 / 2.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils


def accuracy_on_matched(gt: dict, predictions: list[dict], iou_threshold: float = 0.5) -> dict:
    """Return ``{"accuracy_on_matched": float, "num_matched": int}`` (definition above)."""
    gt_by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            gt_by_image[ann["image_id"]].append(ann)
    preds_by_image: dict[int, list[dict]] = defaultdict(list)
    for pred in predictions:
        preds_by_image[pred["image_id"]].append(pred)

    num_matched = num_correct = 0
    for image_id, preds in preds_by_image.items():
        gts = gt_by_image.get(image_id, [])
        pairs = greedy_match(
            np.array([p["bbox"] for p in preds], dtype=np.float64).reshape(-1, 4),
            np.array([p["score"] for p in preds], dtype=np.float64),
            np.array([g["bbox"] for g in gts], dtype=np.float64).reshape(-1, 4),
            iou_threshold,
        )
        num_matched += len(pairs)
        num_correct += sum(preds[p]["category_id"] == gts[g]["category_id"] for p, g in pairs)
    accuracy = num_correct / num_matched if num_matched else 0.0
    return {"accuracy_on_matched": accuracy, "num_matched": num_matched}


def greedy_match(
    pred_boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float
) -> list[tuple[int, int]]:
    """COCO-style greedy matching of one image, ignoring classes.

    Args:
        pred_boxes: [P, 4] xywh.
        scores: [P].
        gt_boxes: [G, 4] xywh, non-crowd.
        iou_threshold: minimum IoU of a match.

    Returns:
        (prediction index, GT index) pairs, in order of descending prediction score.
    """
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return []
    order = np.argsort(-scores, kind="mergesort")
    ious = np.asarray(mask_utils.iou(pred_boxes[order], gt_boxes, [0] * len(gt_boxes)))  # [P, G]
    taken = np.zeros(len(gt_boxes), dtype=bool)
    pairs = []
    for pred_index, row in zip(order, ious):
        candidates = np.where(taken, -1.0, row)
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_threshold:
            taken[best] = True
            pairs.append((int(pred_index), best))
    return pairs
