"""JSON records of predictions: COCO results for an image file, one record per video frame.

Both come from `detection_records`, the one place where a `Prediction` becomes JSON.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from detect.prediction import Prediction


def detection_records(pred: "Prediction") -> list[dict]:
    """One dict per detection: ``category_id``, ``bbox`` [x, y, w, h] in original pixels,
    ``score``, and ``keypoints`` [x, y, score] * K where the prediction has keypoints for that
    detection (`_keypoints_of`)."""
    recs = []
    for i in range(len(pred.scores)):
        x0, y0, x1, y1 = (float(v) for v in pred.boxes[i])
        r = {"category_id": int(pred.labels[i]),
             "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
             "score": round(float(pred.scores[i]), 5)}
        kpts = _keypoints_of(pred, i)
        if kpts is not None:
            r["keypoints"] = [round(float(v), 2) for v in kpts.reshape(-1)]
        recs.append(r)
    return recs


def _keypoints_of(pred: "Prediction", i: int) -> np.ndarray | None:
    """Detection i's keypoints [K, 3], or None where the prediction has none for it: no
    keypoint head, a category without keypoints (`Prediction.has_keypoints`), or a row that is
    missing or not finite."""
    if pred.keypoints is None or i >= len(pred.keypoints):
        return None
    if pred.has_keypoints is not None and not pred.has_keypoints[i]:
        return None
    k = np.asarray(pred.keypoints[i])
    return k if k.size and np.isfinite(k).all() else None


def image_records(pred: "Prediction", image_name: str) -> list[dict]:
    """COCO results records; ``image_id`` is the file name (no annotation file to take ids from),
    unless the stem is an integer (COCO file names), which is then used."""
    stem = Path(image_name).stem
    image_id: int | str = int(stem) if stem.isdigit() else image_name
    return [{"image_id": image_id, "file_name": image_name, **r} for r in detection_records(pred)]


def frame_record(index: int, time_s: float, pred: "Prediction") -> dict:
    """One line of a video's ``.jsonl``: ``frame`` (index in the source), ``time_s`` and the
    frame's ``detections`` (`detection_records`)."""
    return {"frame": int(index), "time_s": round(float(time_s), 4),
            "detections": detection_records(pred)}
