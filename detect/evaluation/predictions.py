"""COCO result records: structural checks and loading from a JSON file.

A record is ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}``
plus, for keypoint heads, ``"keypoints": [x1, y1, s1, ..., xK, yK, sK]`` (s = keypoint score),
and for mask heads ``"segmentation": {"size": [h, w], "counts": ...}``, COCO's RLE: ``counts`` a
string (compressed) or a list of run lengths that sum to h * w (uncompressed).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any


def record_problem(record: Any) -> str | None:
    """Return why ``record`` is not a valid COCO result record, or None when it is."""
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    for key in ("image_id", "category_id"):
        if not _is_int(record.get(key)):
            return f"'{key}' must be an integer, got {record.get(key)!r}"
    if not _is_number_list(record.get("bbox")) or len(record["bbox"]) != 4:
        return f"'bbox' must be 4 numbers [x, y, w, h], got {record.get('bbox')!r}"
    if record["bbox"][2] < 0 or record["bbox"][3] < 0:
        return f"'bbox' width and height must be >= 0, got {record['bbox']!r}"
    if not _is_number(record.get("score")):
        return f"'score' must be a finite number, got {record.get('score')!r}"
    if "keypoints" in record:
        kpts = record["keypoints"]
        if not _is_number_list(kpts) or len(kpts) == 0 or len(kpts) % 3 != 0:
            return "'keypoints' must be a non-empty flat list [x, y, score] * K of finite numbers"
    if "segmentation" in record:
        return rle_problem(record["segmentation"])
    return None


def rle_problem(segm: Any) -> str | None:
    """Why ``segm`` is not a COCO RLE ``{"size": [h, w], "counts": str | list[int]}``, or None."""
    if not isinstance(segm, dict) or not {"size", "counts"} <= set(segm):
        return "'segmentation' must be an RLE object with 'size' [h, w] and 'counts'"
    size, counts = segm["size"], segm["counts"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(_is_int(v) and v >= 0 for v in size)):
        return f"'segmentation' 'size' must be 2 integers [h, w] >= 0, got {size!r}"
    if isinstance(counts, str):
        return None if counts.isascii() else "'segmentation' 'counts' must be an ASCII string"
    if not isinstance(counts, list) or not all(_is_int(v) and v >= 0 for v in counts):
        return "'segmentation' 'counts' must be a string or a list of integers >= 0"
    if sum(counts) != size[0] * size[1]:
        return (f"'segmentation' 'counts' sum to {sum(counts)}, expected h * w = "
                f"{size[0] * size[1]}")
    return None


def check_predictions(predictions: list[dict]) -> None:
    """Raise ValueError naming the first malformed prediction (index) and the problem."""
    for index, record in enumerate(predictions):
        problem = record_problem(record)
        if problem is not None:
            raise ValueError(f"prediction {index}: {problem}")


def load_predictions(path: str | os.PathLike) -> list[dict]:
    """Read a COCO results JSON file (a list of result records) and check its structure.

    Raises:
        OSError: the file cannot be read.
        ValueError: one line ``<path>: <problem>``, naming the record index where one is at fault.
    """
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(data, list):
        kind = type(data).__name__
        raise ValueError(f"{path}: expected a JSON list of result records, got {kind}")
    for index, record in enumerate(data):
        problem = record_problem(record)
        if problem is not None:
            raise ValueError(f"{path}: record {index}: {problem}")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_number_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
