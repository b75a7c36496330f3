"""Reading, merging and validating COCO annotation files.

Several files are merged as COCO lays them out: images and categories are joined by id, and an
annotation that appears in two files with the same ``id`` (a person in ``instances_*.json`` and in
``person_keypoints_*.json``) becomes one object carrying the box and the keypoints.

Structural problems (missing fields, unknown ids, duplicate ids in one file, keypoint lists of the
wrong length, file names escaping the image folder) raise `DatasetError` with one line naming the
file and the record. Degenerate boxes (NaN, non-positive size, empty, fully outside the image) are
dropped and counted in `CocoAnnotations.dropped`. Segmentations are checked and repaired by
`detect.data.segmentation` (counted in `CocoAnnotations.mask_log`).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detect.data.notes import NoteLog
from detect.data.segmentation import clean_segmentation


class DatasetError(ValueError):
    """A user error in a dataset; the message is one line naming the file and the record."""


@dataclass(frozen=True)
class CategoryMap:
    """Original COCO category ids <-> contiguous labels ``0..C-1`` (sorted by id)."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.ids)

    def label(self, category_id: int) -> int:
        return self.ids.index(category_id)

    def category_id(self, label: int) -> int:
        return self.ids[label]

    def to_dict(self) -> dict[str, list]:
        return {"ids": list(self.ids), "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> "CategoryMap":
        return cls(tuple(int(i) for i in d["ids"]), tuple(str(n) for n in d["names"]))


@dataclass(frozen=True)
class KeypointMeta:
    """Keypoint names, skeleton (0-based pairs) and left/right flip pairs of the dataset, and the
    original ids of the categories that have keypoints (``()``: every category)."""

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    flip_pairs: tuple[tuple[int, int], ...] = ()
    category_ids: tuple[int, ...] = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def has_keypoints(self, category_id: int) -> bool:
        """Whether objects of this category carry keypoints."""
        return not self.category_ids or category_id in self.category_ids

    def label_mask(self, categories: CategoryMap) -> np.ndarray:
        """[C] bool over contiguous labels: which classes carry keypoints."""
        return np.array([self.has_keypoints(i) for i in categories.ids], bool)


@dataclass
class ImageRecord:
    """One image and its objects, in original pixels (boxes clipped to the image).

    boxes [N, 4] xyxy float32, labels [N] int64, keypoints [N, K, 3] float32 or None,
    ignore_boxes [M, 4] xyxy float32 (crowd regions), segmentations: per object its clean
    segmentation (`detect.data.segmentation`) or None (no mask: it trains its box only); None
    when the dataset has no segmentations at all.
    """

    id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    keypoints: np.ndarray | None
    ignore_boxes: np.ndarray
    segmentations: list[list | dict | None] | None = None


@dataclass
class CocoAnnotations:
    images: list[ImageRecord]
    categories: CategoryMap
    keypoints: KeypointMeta | None
    # the merged COCO dict for evaluation: boxes untouched, segmentations as cleaned (an
    # unusable one removed)
    gt: dict[str, Any]
    dropped: Counter = field(default_factory=Counter)  # reason -> number of boxes dropped
    # original ids of the categories with at least one (non-crowd) mask; None: the dataset has
    # no segmentations
    mask_category_ids: tuple[int, ...] | None = None
    mask_log: NoteLog = field(default_factory=NoteLog)
    # annotation id -> its segmentation as the file had it, where cleaning changed it (reports
    # and conversions say what the file holds)
    raw_segmentations: dict[int, Any] = field(default_factory=dict)

    def file_segmentation(self, ann: dict) -> Any:
        """An annotation's segmentation as its file had it (``gt`` holds the clean one)."""
        return self.raw_segmentations.get(ann["id"], ann.get("segmentation"))


def flip_pairs_from_names(names: tuple[str, ...] | list[str]) -> tuple[tuple[int, int], ...]:
    """Pairs (i, j) with names ``left_X`` / ``right_X``."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        if n.startswith("left_") and "right_" + n[5:] in index:
            pairs.append((i, index["right_" + n[5:]]))
    return tuple(pairs)


def read_json(path: str | Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level must be an object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DatasetError(f"{path}: '{key}' must be a list")
    return data


def merge_coco(paths: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Merge COCO files by image, category and annotation id (see module docstring)."""
    if not paths:
        raise DatasetError("no annotation files given")
    images: dict[int, dict] = {}
    cats: dict[int, dict] = {}
    anns: dict[int, dict] = {}
    ann_file: dict[int, str] = {}
    for path in paths:
        data = read_json(path)
        for i, img in enumerate(data.get("images", [])):
            _merge_image(images, img, path, i)
        for i, cat in enumerate(data.get("categories", [])):
            _merge_category(cats, cat, path, i)
        seen: set[int] = set()
        for i, ann in enumerate(data.get("annotations", [])):
            aid = _int_field(ann, "id", path, f"annotations[{i}]")
            if aid in seen:
                raise DatasetError(f"{path}: annotations[{i}]: duplicate annotation id {aid}")
            seen.add(aid)
            if aid in anns:
                _merge_annotation(anns[aid], ann, ann_file[aid], path, i)
            else:
                anns[aid] = dict(ann)
                ann_file[aid] = str(path)
    return {"images": list(images.values()), "categories": sorted(cats.values(), key=lambda c: c["id"]),
            "annotations": list(anns.values())}


def _int_field(rec: Any, key: str, path: str | Path, where: str) -> int:
    if not isinstance(rec, dict):
        raise DatasetError(f"{path}: {where}: must be an object")
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise DatasetError(f"{path}: {where}: '{key}' must be an integer, got {v!r}")
    return v


def _merge_image(images: dict[int, dict], img: Any, path: str | Path, i: int) -> None:
    where = f"images[{i}]"
    iid = _int_field(img, "id", path, where)
    name = img.get("file_name")
    if not isinstance(name, str) or not name:
        raise DatasetError(f"{path}: {where} (id {iid}): 'file_name' must be a non-empty string")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in Path(name).parts:
        raise DatasetError(f"{path}: {where} (id {iid}): file_name '{name}' escapes the image folder")
    for key in ("width", "height"):
        v = img.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise DatasetError(f"{path}: {where} (id {iid}): '{key}' must be a positive integer")
    if iid in images and images[iid]["file_name"] != name:
        raise DatasetError(f"{path}: {where}: image id {iid} is '{name}' here but "
                           f"'{images[iid]['file_name']}' in an earlier file")
    images.setdefault(iid, dict(img))


def _merge_category(cats: dict[int, dict], cat: Any, path: str | Path, i: int) -> None:
    cid = _int_field(cat, "id", path, f"categories[{i}]")
    if not isinstance(cat.get("name"), str):
        raise DatasetError(f"{path}: categories[{i}] (id {cid}): 'name' must be a string")
    merged = cats.setdefault(cid, {})
    for k, v in cat.items():
        if k in ("keypoints", "skeleton"):
            if v:
                merged[k] = v  # the keypoints file's person category carries these
        else:
            merged.setdefault(k, v)


def _merge_annotation(dst: dict, src: dict, first: str, path: str | Path, i: int) -> None:
    a, b = dst.get("bbox"), src.get("bbox")
    if a is not None and b is not None and a != b:
        try:
            same = len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-3 for x, y in zip(a, b))
        except (TypeError, ValueError):
            same = False
        if not same:
            raise DatasetError(f"{path}: annotations[{i}]: annotation id {src['id']} has bbox {b} "
                               f"here but {a} in {first}")
    for k, v in src.items():
        if k in ("keypoints", "num_keypoints") or k not in dst:
            dst[k] = v


def load_annotations(paths: list[str] | tuple[str, ...], keep_empty: bool = True,
                     flip_pairs: tuple[tuple[int, int], ...] | None = None) -> CocoAnnotations:
    """Merge, validate and convert COCO files into per-image records (original pixels)."""
    gt = merge_coco(paths)
    src = ", ".join(str(p) for p in paths)
    cat_map = CategoryMap(tuple(c["id"] for c in gt["categories"]),
                          tuple(c["name"] for c in gt["categories"]))
    if cat_map.num_classes == 0:
        raise DatasetError(f"{src}: no categories")
    kmeta = _keypoint_meta(gt["categories"], src, flip_pairs)
    kpt_cats = {c["id"] for c in gt["categories"] if c.get("keypoints")}
    by_image: dict[int, list[tuple[int, dict]]] = {img["id"]: [] for img in gt["images"]}
    for i, ann in enumerate(gt["annotations"]):
        iid = ann.get("image_id")
        if iid not in by_image:
            raise DatasetError(f"{src}: annotation id {ann['id']}: unknown image_id {iid!r}")
        if ann.get("category_id") not in cat_map.ids:
            raise DatasetError(f"{src}: annotation id {ann['id']}: unknown category_id "
                               f"{ann.get('category_id')!r}")
        by_image[iid].append((i, ann))
    dropped: Counter = Counter()
    masks = any(ann.get("segmentation") for ann in gt["annotations"])
    log, raw = NoteLog(), {}
    records = []
    for img in gt["images"]:
        rec = _image_record(img, by_image[img["id"]], cat_map, kmeta, kpt_cats, src, dropped,
                            (log, raw) if masks else None)
        if keep_empty or len(rec.labels) or len(rec.ignore_boxes):
            records.append(rec)
    mask_ids = _mask_categories(records, cat_map) if masks else None
    return CocoAnnotations(records, cat_map, kmeta, gt, dropped, mask_ids, log, raw)


def _mask_categories(records: list[ImageRecord], cat_map: CategoryMap) -> tuple[int, ...]:
    labels = {int(label) for r in records
              for label, seg in zip(r.labels, r.segmentations or []) if seg is not None}
    return tuple(cat_map.category_id(i) for i in sorted(labels))


def _keypoint_meta(categories: list[dict], src: str,
                   flip_pairs: tuple[tuple[int, int], ...] | None) -> KeypointMeta | None:
    with_kpts = [c for c in categories if c.get("keypoints")]
    if not with_kpts:
        return None
    names = tuple(str(n) for n in with_kpts[0]["keypoints"])
    for c in with_kpts[1:]:
        if tuple(c["keypoints"]) != names:
            raise DatasetError(f"{src}: category id {c['id']}: keypoint names differ from category "
                               f"id {with_kpts[0]['id']} (one keypoint layout per dataset)")
    skeleton = tuple((int(a) - 1, int(b) - 1) for a, b in with_kpts[0].get("skeleton", []))
    pairs = flip_pairs if flip_pairs is not None else flip_pairs_from_names(names)
    for a, b in pairs:
        if not (0 <= a < len(names) and 0 <= b < len(names)):
            raise DatasetError(f"flip pair ({a}, {b}) is out of range for {len(names)} keypoints")
    return KeypointMeta(names, skeleton, tuple(pairs), tuple(int(c["id"]) for c in with_kpts))


def _image_record(img: dict, anns: list[tuple[int, dict]], cat_map: CategoryMap,
                  kmeta: KeypointMeta | None, kpt_cats: set[int], src: str,
                  dropped: Counter, masks: tuple[NoteLog, dict] | None) -> ImageRecord:
    """The image's objects; with ``masks`` (the dataset has segmentations: the log and the raw
    segmentations changed) each annotation's segmentation is cleaned, in the merged ``gt`` too
    (module docstring)."""
    w, h = img["width"], img["height"]
    k = kmeta.num_keypoints if kmeta else 0
    boxes, labels, kpts, ignore, segs = [], [], [], [], []
    for _, ann in anns:
        where = f"{src}: annotation id {ann['id']} (image {img['file_name']})"
        if masks is not None:
            _clean_in_place(ann, w, h, where, *masks)
        box, reason = _clean_box(ann.get("bbox"), w, h, where)
        if box is None:
            dropped[reason] += 1
            continue
        if ann.get("iscrowd", 0):
            ignore.append(box)
            continue
        boxes.append(box)
        labels.append(cat_map.label(ann["category_id"]))
        segs.append(ann.get("segmentation"))
        if kmeta is not None:
            kpts.append(_clean_keypoints(ann, k, ann["category_id"] in kpt_cats, w, h, where))
    return ImageRecord(
        id=img["id"], file_name=img["file_name"], width=w, height=h,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        keypoints=np.asarray(kpts, np.float32).reshape(-1, k, 3) if kmeta else None,
        ignore_boxes=np.asarray(ignore, np.float32).reshape(-1, 4),
        segmentations=segs if masks is not None else None,
    )


def _clean_in_place(ann: dict, w: int, h: int, where: str, log: NoteLog,
                    raw: dict[int, Any]) -> None:
    """Replace ``ann``'s segmentation by its clean form, or remove it when none is left; keep
    the file's in ``raw`` when that changed it."""
    before = sum(log.counts.values())
    seg = clean_segmentation(ann.get("segmentation"), w, h, where, log)
    if sum(log.counts.values()) != before:
        raw[ann["id"]] = ann.get("segmentation")
    if seg is None:
        ann.pop("segmentation", None)
    else:
        ann["segmentation"] = seg


def _clean_box(bbox: Any, w: int, h: int, where: str) -> tuple[list[float] | None, str]:
    """xywh -> clipped xyxy, or (None, reason) for a degenerate box."""
    if bbox is None:
        raise DatasetError(f"{where}: missing 'bbox'")
    if not isinstance(bbox, (list, tuple)):
        raise DatasetError(f"{where}: 'bbox' must be a list [x, y, w, h], got {bbox!r}")
    if len(bbox) == 0:
        return None, "empty bbox"
    if len(bbox) != 4:
        raise DatasetError(f"{where}: 'bbox' must have 4 numbers, got {len(bbox)}")
    try:
        x, y, bw, bh = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: 'bbox' must hold numbers, got {bbox!r}") from None
    if not all(math.isfinite(v) for v in (x, y, bw, bh)):
        return None, "non-finite bbox"
    if bw <= 0 or bh <= 0:
        return None, "non-positive bbox width/height"
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, float(w)), min(y + bh, float(h))
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None, "bbox outside the image"
    return [x0, y0, x1, y1], ""


def _clean_keypoints(ann: dict, k: int, has_kpts: bool, w: int, h: int, where: str) -> np.ndarray:
    """[K, 3] keypoints; visibility 0 for other categories and for points outside the image."""
    raw = ann.get("keypoints")
    if not has_kpts or raw is None:
        return np.zeros((k, 3), np.float32)
    if not isinstance(raw, list) or len(raw) != 3 * k:
        n = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise DatasetError(f"{where}: 'keypoints' must have {3 * k} numbers (K={k}), got {n}")
    try:
        arr = np.asarray(raw, np.float32).reshape(k, 3)  # [K, 3]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: 'keypoints' must hold numbers") from None
    outside = (arr[:, 0] < 0) | (arr[:, 1] < 0) | (arr[:, 0] > w) | (arr[:, 1] > h)
    bad = ~np.isfinite(arr).all(axis=1) | outside
    arr[bad] = 0.0
    arr[:, 2] = np.clip(arr[:, 2], 0, 2)
    return arr
