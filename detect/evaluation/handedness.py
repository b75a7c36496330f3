"""How much of the keypoint error is left/right: an oracle for handedness.

A pose can be right joint by joint and still score low when its left/right pairs are exchanged
(a person taken to face away from the camera when it faces it). `with_oracle_handedness` gives
each predicted pose the side that fits its ground truth best, so the same detections can be
evaluated twice and the gap read as what the handedness decision costs: an upper bound of what
better handedness can gain, not a score of the model.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_convert, box_iou

from detect.data.annotations import flip_pairs_from_names
from detect.evaluation.backends import Backend
from detect.evaluation.coco_eval import keypoint_metrics, resolve_sigmas
from detect.losses import COCO_PERSON_SIGMAS, oks
from detect.structures import partner_index

MATCH_IOU = 0.5  # a prediction is given its ground truth's side only if their boxes overlap this much


def with_oracle_handedness(gt: dict, predictions: list[dict],
                           kpt_sigmas: Sequence[float] | None) -> tuple[list[dict], int]:
    """Copies of the records, and how many were swapped. A record of a keypoint category whose
    box overlaps an object of its category in its image with labelled keypoints (IoU >=
    ``MATCH_IOU``; the most overlapping one) gets its left/right pairs (by keypoint name, as
    `flip_pairs_from_names`) exchanged where that raises its OKS with that object
    (``kpt_sigmas``: None for COCO's 17).

    Raises:
        ValueError: no sigmas for a category with other than 17 keypoints.
    """
    cats = [c for c in gt["categories"] if c.get("keypoints")]
    swaps = {c["id"]: partner_index(len(c["keypoints"]), flip_pairs_from_names(c["keypoints"]))
             for c in cats}
    sigmas = {c["id"]: _sigmas(len(c["keypoints"]), kpt_sigmas) for c in cats}
    objects: dict[tuple[int, int], list[dict]] = {}
    for a in gt["annotations"]:
        if a["category_id"] in swaps and not a.get("iscrowd", 0) and a.get("num_keypoints", 1) > 0:
            objects.setdefault((a["image_id"], a["category_id"]), []).append(a)
    out, swapped = [], 0
    for p in predictions:
        p = dict(p)
        out.append(p)
        cands = objects.get((p.get("image_id"), p["category_id"]), [])
        if "keypoints" not in p or not cands:
            continue
        boxes = box_convert(torch.tensor([a["bbox"] for a in cands], dtype=torch.float64), "xywh",
                            "xyxy")  # [N, 4]
        mine = box_convert(torch.tensor([p["bbox"]], dtype=torch.float64), "xywh", "xyxy")
        iou, best = box_iou(mine, boxes)[0].max(0)
        if iou < MATCH_IOU:
            continue
        obj = cands[int(best)]
        pred = torch.tensor(p["keypoints"], dtype=torch.float64).view(-1, 3)  # [K, 3]
        both = torch.stack([pred, pred[swaps[p["category_id"]]]])  # [2, K, 3]: as is, swapped
        target = torch.tensor(obj["keypoints"], dtype=torch.float64).view(1, -1, 3).expand(2, -1, -1)
        area = torch.tensor([float(obj["area"])] * 2, dtype=torch.float64)
        score = oks(both[..., :2], target, area, sigmas[p["category_id"]])  # [2]
        if score[1] > score[0]:
            p["keypoints"] = both[1].round(decimals=2).flatten().tolist()
            swapped += 1
    return out, swapped


def _sigmas(k: int, kpt_sigmas: Sequence[float] | None) -> torch.Tensor:
    resolved = resolve_sigmas(k, kpt_sigmas)  # None: COCO's 17
    return torch.tensor(COCO_PERSON_SIGMAS if resolved is None else resolved, dtype=torch.float64)


def add_oracle_handedness(metrics: dict, gt: dict, predictions: list[dict],
                          backend: Backend = "faster",
                          kpt_sigmas: Sequence[float] | None = None) -> dict:
    """``metrics`` with ``keypoints_oracle`` (the same detections, each pose on the side that
    fits its ground truth) and ``handedness_gap`` (its AP, AP50, AP75 minus the model's) added;
    unchanged when it has no ``keypoints``."""
    if "keypoints" not in metrics:
        return metrics
    fixed, _ = with_oracle_handedness(gt, predictions, kpt_sigmas)
    oracle = keypoint_metrics(gt, fixed, backend, kpt_sigmas)
    gap = {s: oracle[s] - metrics["keypoints"][s] for s in ("AP", "AP50", "AP75")}
    return {**metrics, "keypoints_oracle": oracle, "handedness_gap": gap}
