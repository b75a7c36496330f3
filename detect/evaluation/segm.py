"""COCO mask AP ("segm") of COCO result records, and ``mIoU``: how good the masks of the
detections that found their object are, apart from finding it.

Categories: only the mask categories are evaluated (``category_ids``). By default
(`mask_categories`): the categories with at least one ground-truth segmentation, less those that
the predictions have detections of but never a ``segmentation`` (a mask head that serves only
some classes).

Ground truth (on a copy): polygons, compressed RLE (``counts`` str) and uncompressed RLE
(``counts`` list) as COCO reads them; crowds are ignored regions as in COCO (a detection on one
is neither a true nor a false positive). An object of a mask category without a segmentation
(absent or empty) becomes such an ignored region too: ``iscrowd`` 1 with its box as the mask.

Predictions: ``segmentation`` is an RLE of its image's size (``height``, ``width`` in the ground
truth); another size is a ValueError (pycocotools would score it IoU -1 without a word). A
detection of a mask category without ``segmentation`` scores as an empty mask: a false positive
at its score, and the object it covers stays missed. The records' ``bbox`` is not given to
COCOeval, so areas (APs, APm, APl) are mask areas, as in detectron2 (pycocotools takes the box's
area from a record that has one).

Stats: COCOeval "segm" AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ``per_class`` and
``pr_curve`` as for bbox (`detect.evaluation.stats`), and

* ``num_tp``: the detections that found their object by box. Per image and mask category, the
  (at most 100) detections by descending score (stable) each take the not yet taken non-crowd
  object with the highest box IoU, if that IoU >= 0.5 (`greedy_match`): the true positives of
  COCOeval's bbox run at IoU 0.5, area "all", 100 detections (up to ties between equal IoUs).
* ``mIoU``: the mean mask IoU of those pairs, 0.0 when there are none (an empty mask counts 0).

Worked example: objects A and B; detection a on A (box IoU 0.9, mask IoU 0.6), b on B (box IoU
0.7, mask IoU 0.8), c on nothing: num_tp 2, mIoU 0.7.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from pycocotools import mask as mask_utils

from detect.data.segmentation import rle_json
from detect.evaluation.backends import Backend, run_cocoeval
from detect.evaluation.classification import greedy_match
from detect.evaluation.stats import named_stats, per_class_ap, pr_curve

SEGM_STATS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
MATCH_IOU = 0.5  # box IoU at which a detection has found its object (for mIoU)
MAX_DETS = 100  # per image and category, as COCOeval's last maxDets


def segm_metrics(gt: dict, predictions: list[dict], backend: Backend,
                 category_ids: Iterable[int] | None = None,
                 class_names: dict[int, str] | None = None) -> dict:
    """COCO mask stats, ``mIoU`` and ``num_tp`` (module docstring) on the mask categories.

    Args:
        gt: merged COCO ground-truth dict; not modified.
        predictions: COCO result records (checked by `check_predictions`); not modified.
        backend: "faster" or "pycocotools".
        category_ids: the categories with masks; default `mask_categories`.
        class_names: category id -> name for ``per_class``; default the GT category names.

    Raises:
        ValueError: no mask category, or a prediction whose RLE size is not its image's.
    """
    cat_ids = set(mask_categories(gt, predictions) if category_ids is None else category_ids)
    cat_ids &= {c["id"] for c in gt["categories"]}
    if not cat_ids:
        raise ValueError("no category to evaluate masks of: no ground-truth segmentation")
    segm_gt = segm_ground_truth(gt, cat_ids)
    results = segm_results(gt, predictions, cat_ids)
    result = run_cocoeval(segm_gt, [_without_bbox(r) for r in results], "segm", backend)
    names = class_names or {c["id"]: c["name"] for c in gt["categories"]}
    metrics: dict = named_stats(SEGM_STATS, result.stats)
    metrics |= matched_mask_iou(segm_gt, results)
    metrics["per_class"] = per_class_ap(result.precision, result.cat_ids, names)
    metrics["pr_curve"] = pr_curve(result.precision)
    return metrics


def mask_categories(gt: dict, predictions: list[dict] | None = None) -> set[int]:
    """Categories with a ground-truth segmentation, less those of which ``predictions`` have
    detections but none with a ``segmentation``."""
    cat_ids = {a["category_id"] for a in gt["annotations"] if has_segmentation(a)}
    detected = {p["category_id"] for p in predictions or ()}
    segmented = {p["category_id"] for p in predictions or () if "segmentation" in p}
    return cat_ids - (detected - segmented)


def has_segmentation(ann: dict) -> bool:
    """Whether a ground-truth annotation has a (non-empty) segmentation."""
    return bool(ann.get("segmentation"))


def segm_ground_truth(gt: dict, cat_ids: set[int]) -> dict:
    """``gt`` restricted to ``cat_ids``; objects without a segmentation become crowds (ignored
    regions) whose mask is their box. The annotation dicts are shared, changed ones copied."""
    sizes = image_sizes(gt)
    annotations = []
    for ann in gt["annotations"]:
        if ann["category_id"] not in cat_ids:
            continue
        if not has_segmentation(ann):
            h, w = sizes[ann["image_id"]]
            ann = {**ann, "iscrowd": 1, "segmentation": box_rle(ann["bbox"], h, w)}
        annotations.append(ann)
    categories = [c for c in gt["categories"] if c["id"] in cat_ids]
    return {**gt, "categories": categories, "annotations": annotations}


def segm_results(gt: dict, predictions: list[dict], cat_ids: set[int]) -> list[dict]:
    """Copies of the records of ``cat_ids``, each with a compressed RLE ``segmentation`` (an
    empty one where it had none).

    Raises:
        ValueError: a prediction's RLE ``size`` is not its image's [height, width] (one line).
    """
    sizes = image_sizes(gt)
    results = []
    for index, pred in enumerate(predictions):
        if pred["category_id"] not in cat_ids:
            continue
        if pred["image_id"] not in sizes:
            raise ValueError(f"prediction {index}: image_id {pred['image_id']} is not in the "
                             "ground truth")
        h, w = sizes[pred["image_id"]]
        segm = pred.get("segmentation")
        if segm is None:
            segm = {"size": [h, w], "counts": [h * w]}
        elif [int(v) for v in segm["size"]] != [h, w]:
            raise ValueError(
                f"prediction {index}: segmentation size {list(segm['size'])} is not the size "
                f"[height, width] {[h, w]} of image {pred['image_id']}")
        results.append({**pred, "segmentation": rle_json(segm, h, w)})
    return results


def matched_mask_iou(segm_gt: dict, results: list[dict]) -> dict:
    """``{"mIoU": float, "num_tp": int}`` of results with compressed RLEs (module docstring)."""
    sizes = image_sizes(segm_gt)
    objects: dict[tuple, list[dict]] = defaultdict(list)
    for ann in segm_gt["annotations"]:
        if not ann.get("iscrowd", 0):
            objects[ann["image_id"], ann["category_id"]].append(ann)
    detections: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        detections[r["image_id"], r["category_id"]].append(r)
    ious = []
    for key, dets in detections.items():
        h, w = sizes[key[0]]
        for det, obj in box_matches(dets, objects.get(key, [])):
            ious.append(mask_iou(det["segmentation"], rle_json(obj["segmentation"], h, w)))
    return {"mIoU": float(np.mean(ious)) if ious else 0.0, "num_tp": len(ious)}


def box_matches(dets: list[dict], objects: list[dict]) -> list[tuple[dict, dict]]:
    """(detection, object) pairs of one image and category: the ``MAX_DETS`` best scoring
    detections matched greedily to non-crowd objects at box IoU >= ``MATCH_IOU``."""
    scores = np.array([d["score"] for d in dets], dtype=np.float64)
    top = np.argsort(-scores, kind="mergesort")[:MAX_DETS]
    boxes = np.array([dets[i]["bbox"] for i in top], dtype=np.float64).reshape(-1, 4)  # [P, 4]
    gt_boxes = np.array([o["bbox"] for o in objects], dtype=np.float64).reshape(-1, 4)  # [G, 4]
    pairs = greedy_match(boxes, scores[top], gt_boxes, MATCH_IOU)
    return [(dets[top[p]], objects[g]) for p, g in pairs]


def mask_iou(a: dict, b: dict) -> float:
    """IoU of two compressed RLEs of the same size."""
    return float(mask_utils.iou([a], [b], [0])[0, 0])


def box_rle(bbox: list[float], height: int, width: int) -> dict:
    """Compressed RLE of an xywh box, rasterised as the polygon of its corners (as pycocotools
    rasterises boxes)."""
    x, y, w, h = (float(v) for v in bbox)
    rle = mask_utils.frPyObjects([[x, y, x, y + h, x + w, y + h, x + w, y]], height, width)[0]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def image_sizes(gt: dict) -> dict[int, tuple[int, int]]:
    """Image id -> (height, width)."""
    return {img["id"]: (int(img["height"]), int(img["width"])) for img in gt["images"]}


def _without_bbox(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "bbox"}
