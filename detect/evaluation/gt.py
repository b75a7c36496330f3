"""Merge COCO annotation files (instances + person_keypoints) into one ground-truth dict.

COCO gives a person the same annotation ``id`` in ``instances_*.json`` and in
``person_keypoints_*.json``. Merging by id yields boxes for all categories and keypoints for
persons in one annotation list:

* images: union by id (conflicting width/height is an error);
* categories: union by id, fields merged, so the person category keeps ``keypoints`` and
  ``skeleton`` from the keypoints file (conflicting name is an error);
* annotations: union by id, fields merged, so ``keypoints``/``num_keypoints`` come from the
  file that has them; a conflicting ``bbox``, ``image_id``, ``category_id`` or ``keypoints``
  for the same id is an error naming both files and the id;
* other top-level keys (``info``, ``licenses``): from the first file that has them.

Self-contained (no detect imports) so it can move to ``detect/data/``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

KINDS = {"images": "image", "categories": "category", "annotations": "annotation"}
CONFLICT_KEYS = {
    "image": ("width", "height"),
    "category": ("name",),
    "annotation": ("image_id", "category_id", "bbox", "keypoints"),
}


def merge_annotation_files(paths: Sequence[str | os.PathLike]) -> dict:
    """Merge COCO JSON files by image, category and annotation id (rules above).

    Raises:
        OSError: a file cannot be read.
        ValueError: one line ``<file>: <problem>`` for bad JSON, bad structure or a conflict.
    """
    if not paths:
        raise ValueError("no annotation files given")
    merged: dict[str, Any] = {}
    tables: dict[str, dict[Any, dict]] = {key: {} for key in KINDS}  # list key -> id -> record
    origin: dict[tuple[str, Any], str] = {}  # (kind, id) -> file that first had the record
    for path in paths:
        data = read_coco_json(path)
        for key, value in data.items():
            if key not in KINDS:
                merged.setdefault(key, value)
        for key, kind in KINDS.items():
            _merge_records(tables[key], data.get(key, []), kind, str(path), origin)
    for key, table in tables.items():
        merged[key] = list(table.values())
    return merged


def read_coco_json(path: str | os.PathLike) -> dict:
    """Load one COCO annotation file and check its top-level structure."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations')")
    for key in KINDS:
        if not isinstance(data.get(key, []), list):
            raise ValueError(f"{path}: '{key}' must be a list")
    return data


def _merge_records(
    table: dict[Any, dict], records: list, kind: str, path: str, origin: dict[tuple[str, Any], str]
) -> None:
    for index, record in enumerate(records):
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{path}: {kind} record {index} has no 'id'")
        record_id = record["id"]
        if record_id not in table:
            table[record_id] = dict(record)
            origin[kind, record_id] = path
            continue
        _check_conflicts(table[record_id], record, kind, path, origin[kind, record_id])
        table[record_id].update(record)


def _check_conflicts(old: dict, new: dict, kind: str, path: str, old_path: str) -> None:
    for key in CONFLICT_KEYS[kind]:
        if key in old and key in new and not _same(old[key], new[key]):
            raise ValueError(
                f"{path}: {kind} id {new['id']}: {key} {new[key]!r} conflicts with "
                f"{old[key]!r} in {old_path}"
            )


def _same(a: Any, b: Any) -> bool:
    """Equality, with a 1e-6 tolerance for numbers and lists of numbers (JSON round trips)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=0.0, abs_tol=1e-6)
    return a == b
