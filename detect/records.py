"""JSON records of predictions: COCO results for an image file, one record per video frame.

Both come from `detection_records`, the one place where a `Prediction` becomes JSON: each
detection's box and score, and each instance head's field under the head's name (COCO's
``keypoints`` for the keypoint head) where the detection has it. A field of geometry "mask"
(bool [N, H, W]) is written as COCO's ``segmentation`` instead: compressed RLE
``{"size": [h, w], "counts": str}`` (pycocotools' encoding, exact, not rounded).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from detect.data.segmentation import encode_mask

if TYPE_CHECKING:
    from detect.prediction import Field, Prediction


def detection_records(pred: "Prediction") -> list[dict]:
    """One dict per detection: ``category_id``, ``bbox`` [x, y, w, h] in original pixels,
    ``score``, and per field its values flattened (``keypoints`` [x, y, score] * K) where the
    detection has it (`_values_of`); a mask field as ``segmentation`` (`detect.data.segmentation.encode_mask`) where
    ``present``."""
    recs = []
    for i in range(len(pred.scores)):
        x0, y0, x1, y1 = (float(v) for v in pred.boxes[i])
        r = {"category_id": int(pred.labels[i]),
             "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
             "score": round(float(pred.scores[i]), 5)}
        for name, f in pred.fields.items():
            if f.geometry == "mask":
                if i < len(f.values) and f.present[i]:
                    r["segmentation"] = encode_mask(f.values[i])
                continue
            values = _values_of(f, i)
            if values is not None:
                r[name] = [round(float(v), 2) for v in values.reshape(-1)]
        recs.append(r)
    return recs


def _values_of(f: "Field", i: int) -> np.ndarray | None:
    """Detection i's values of field ``f``, or None where it has none: a category without the
    field (`Field.present`), or a row that is missing or not finite."""
    if i >= len(f.values) or not f.present[i]:
        return None
    v = np.asarray(f.values[i])
    return v if v.size and np.isfinite(v).all() else None


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
