"""The mean-pose floor of keypoint evaluation.

A keypoint head can score well above zero without looking at the image: the training set's mean
pose (each keypoint's mean position, normalised to the box) placed in each detected box is
already a pose. `with_mean_pose` rewrites the keypoints of a set of COCO result records that way,
so the same detections can be evaluated twice (model keypoints and mean pose) and the margin read
as what the keypoint head learned from the pixels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detect.evaluation.backends import Backend
from detect.evaluation.coco_eval import keypoint_categories, keypoint_metrics


@dataclass(frozen=True)
class MeanPose:
    """xy [K, 2]: mean keypoint position in box units (0..1 from the box's left/top edge);
    score [K]: share of objects that label the keypoint (the placed keypoints' scores)."""

    xy: np.ndarray
    score: np.ndarray


def mean_pose(gt: dict) -> MeanPose:
    """The mean pose of the keypoint categories' annotations in a COCO dict.

    Only labelled keypoints (v > 0) of non-crowd annotations with a positive-size box count;
    a keypoint never labelled sits at the box centre with score 0.

    Raises:
        ValueError: the dict has no keypoint category or no labelled keypoint.
    """
    cats = keypoint_categories(gt)
    if not cats:
        raise ValueError("no category lists keypoints")
    k = max(cats.values())
    total, count, objects = np.zeros((k, 2)), np.zeros(k), 0
    for ann in gt["annotations"]:
        kpts = ann.get("keypoints")
        x, y, w, h = ann.get("bbox", (0, 0, 0, 0))
        if ann["category_id"] not in cats or ann.get("iscrowd", 0) or not kpts or w <= 0 or h <= 0:
            continue
        pts = np.asarray(kpts, np.float64).reshape(-1, 3)[:k]  # [K, 3]
        seen = pts[:, 2] > 0
        total[seen] += (pts[seen, :2] - (x, y)) / (w, h)
        count += seen
        objects += 1
    if not count.any():
        raise ValueError("no labelled keypoint in the annotations")
    xy = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], 0.5)
    return MeanPose(xy, count / max(objects, 1))


def place_mean_pose(pose: MeanPose, bbox: list[float]) -> list[float]:
    """Flat COCO keypoints [x, y, score] * K of ``pose`` placed in an xywh ``bbox``."""
    x, y, w, h = bbox
    xy = pose.xy * (w, h) + (x, y)  # [K, 2]
    return np.concatenate([xy, pose.score[:, None]], 1).round(2).ravel().tolist()


def with_mean_pose(predictions: list[dict], pose: MeanPose, keypoint_ids: set[int]) -> list[dict]:
    """Copies of the records; those of ``keypoint_ids`` categories get the mean pose in their
    box as keypoints (boxes, scores and categories unchanged)."""
    return [{**p, "keypoints": place_mean_pose(pose, p["bbox"])}
            if p["category_id"] in keypoint_ids else dict(p) for p in predictions]


def mean_pose_metrics(gt: dict, predictions: list[dict], pose: MeanPose, backend: Backend = "faster",
                      kpt_sigmas: Sequence[float] | None = None) -> dict:
    """COCO keypoint stats of ``predictions`` with the mean pose in place of their keypoints."""
    placed = with_mean_pose(predictions, pose, set(keypoint_categories(gt)))
    return keypoint_metrics(gt, placed, backend, kpt_sigmas)


def add_mean_pose(metrics: dict, gt: dict, predictions: list[dict], pose: MeanPose,
                  backend: Backend = "faster", kpt_sigmas: Sequence[float] | None = None) -> dict:
    """``metrics`` (from `detect.evaluation.evaluate`) with ``keypoints_mean_pose`` (the same
    detections with the mean pose) and ``keypoint_margin`` (keypoint AP minus mean-pose AP, and
    the same for AP50 and AP75) added; unchanged when it has no ``keypoints``."""
    if "keypoints" not in metrics:
        return metrics
    floor = mean_pose_metrics(gt, predictions, pose, backend, kpt_sigmas)
    ours = metrics["keypoints"]
    margin = {s: ours[s] - floor[s] for s in ("AP", "AP50", "AP75")}
    return {**metrics, "keypoints_mean_pose": floor, "keypoint_margin": margin}
