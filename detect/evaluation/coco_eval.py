"""Per-head COCO evaluation of a list of COCO result records, independent of the model.

Input: a merged COCO ground-truth dict (instances + person_keypoints joined by annotation id,
see :func:`detect.data.annotations.merge_coco`) and COCO result records
(``image_id``, ``category_id``, ``bbox`` xywh, ``score``, optionally flat ``keypoints`` and an
RLE ``segmentation``).

Output of :func:`evaluate` (COCO scale, 0..1; -1 where COCO has no ground truth, e.g. APs
on a set without small objects):

* ``bbox``: COCOeval "bbox" AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, and
  ``per_class`` {name: AP}: AP@[.5:.95] of each category from ``eval["precision"]`` with -1
  entries excluded (as detectron2). Categories without ground truth have no AP and are
  **omitted** (keeps the JSON free of NaN).
* ``keypoints``: COCOeval "keypoints" AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl, only
  when some prediction carries ``keypoints`` (or there are no predictions at all) and the ground
  truth has keypoint annotations. Evaluated on the keypoint categories only (categories that
  list ``keypoints`` names); their GT without keypoints, or with num_keypoints == 0, are ignored
  regions, as in COCO. Sigmas: COCO's 17 by default, required for any other K.
* ``segm``: COCOeval "segm" AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ``per_class``,
  ``pr_curve``, and ``mIoU`` (mean mask IoU of the detections that found their object by box)
  with ``num_tp``, only when some prediction carries ``segmentation`` and some mask category
  remains (:mod:`detect.evaluation.segm`: the mask categories, ground truth without masks,
  detections without masks and the definition of mIoU).
* ``box_class_agnostic``: COCO bbox AP, AP50 after mapping every GT and prediction to one
  category (crowd flags and areas kept). It measures box quality regardless of class; no
  class-agnostic NMS is applied, so duplicate boxes of different classes count as false
  positives, and maxDets=100 is per image over all classes.
* ``classification``: ``accuracy_on_matched`` and ``num_matched``, defined in
  :mod:`detect.evaluation.classification` (greedy class-agnostic matching at IoU >= 0.5).

Empty predictions give 0 for every defined stat. Backends: "faster" (faster_coco_eval) and
"pycocotools"; see :mod:`detect.evaluation.backends` on their ~1e-16 parity.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detect.evaluation.backends import BACKENDS, Backend, run_cocoeval
from detect.evaluation.classification import accuracy_on_matched
from detect.evaluation.predictions import check_predictions
from detect.evaluation.segm import mask_categories, segm_metrics
from detect.evaluation.stats import named_stats, per_class_ap, pr_curve

BBOX_STATS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
KEYPOINT_STATS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"
)
AGNOSTIC_STATS: tuple[str, ...] = ("AP", "AP50")
COCO_PERSON_NUM_KEYPOINTS = 17


def evaluate(
    gt: dict,
    predictions: list[dict],
    backend: Backend = "faster",
    kpt_sigmas: Sequence[float] | None = None,
    class_names: dict[int, str] | None = None,
    keypoints: bool | None = None,
    segm: bool | None = None,
) -> dict:
    """Evaluate every head; see the module docstring for the metrics and their definitions.

    Args:
        gt: merged COCO ground-truth dict; not modified.
        predictions: COCO result records; not modified.
        backend: "faster" or "pycocotools".
        kpt_sigmas: [K] OKS sigmas; needed when K != 17.
        class_names: category id -> name for ``per_class``; default: the GT category names.
        keypoints: evaluate keypoints; None decides from the data (see module docstring).
        segm: evaluate masks; None decides from the data (see module docstring).

    Raises:
        ValueError: unknown backend, a malformed prediction, or a prediction whose image id or
            category id is not in the ground truth, or a segmentation of another size than
            its image (one line naming the prediction index).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}, expected one of {BACKENDS}")
    check_predictions(predictions)
    check_ids(gt, predictions)
    names = class_names or {c["id"]: c["name"] for c in gt["categories"]}
    metrics: dict = {"bbox": bbox_metrics(gt, predictions, backend, names)}
    if keypoints if keypoints is not None else _wants_keypoints(gt, predictions):
        metrics["keypoints"] = keypoint_metrics(gt, predictions, backend, kpt_sigmas)
    if segm if segm is not None else _wants_segm(gt, predictions):
        metrics["segm"] = segm_metrics(gt, predictions, backend, class_names=names)
    metrics["box_class_agnostic"] = class_agnostic_metrics(gt, predictions, backend)
    metrics["classification"] = accuracy_on_matched(gt, predictions)
    return metrics


def check_ids(gt: dict, predictions: list[dict]) -> None:
    """Raise ValueError for the first prediction whose image or category is not in ``gt``."""
    image_ids = {img["id"] for img in gt["images"]}
    cat_ids = {cat["id"] for cat in gt["categories"]}
    for index, pred in enumerate(predictions):
        for key, known in (("image_id", image_ids), ("category_id", cat_ids)):
            if pred[key] not in known:
                raise ValueError(
                    f"prediction {index}: {key} {pred[key]} is not in the ground truth"
                )


def bbox_metrics(
    gt: dict, predictions: list[dict], backend: Backend, names: dict[int, str]
) -> dict:
    """COCO bbox stats plus per-class AP@[.5:.95] (categories without GT omitted)."""
    result = run_cocoeval(gt, predictions, "bbox", backend)
    metrics = named_stats(BBOX_STATS, result.stats)
    metrics["per_class"] = per_class_ap(result.precision, result.cat_ids, names)
    metrics["pr_curve"] = pr_curve(result.precision)
    return metrics


def keypoint_metrics(
    gt: dict, predictions: list[dict], backend: Backend, kpt_sigmas: Sequence[float] | None
) -> dict:
    """COCO keypoint stats on the keypoint categories only."""
    num_keypoints = keypoint_categories(gt)
    cat_ids = set(num_keypoints)
    k = _single_k(num_keypoints)
    sigmas = resolve_sigmas(k, kpt_sigmas)
    results = [p for p in predictions if p["category_id"] in cat_ids]
    _check_keypoint_lengths(predictions, cat_ids, k)
    result = run_cocoeval(_keypoint_gt(gt, cat_ids, k), results, "keypoints", backend, sigmas)
    metrics = named_stats(KEYPOINT_STATS, result.stats)
    metrics["pr_curve"] = pr_curve(result.precision)
    return metrics


def class_agnostic_metrics(gt: dict, predictions: list[dict], backend: Backend) -> dict:
    """COCO bbox AP and AP50 with every GT and prediction mapped to one category."""
    one = {"id": 1, "name": "object"}
    agnostic_gt = {
        **gt,
        "categories": [one],
        "annotations": [{**ann, "category_id": one["id"]} for ann in gt["annotations"]],
    }
    results = [{**p, "category_id": one["id"]} for p in predictions]
    result = run_cocoeval(agnostic_gt, results, "bbox", backend)
    return named_stats(AGNOSTIC_STATS, result.stats)


def keypoint_categories(gt: dict) -> dict[int, int]:
    """Category id -> K for categories that list keypoint names (COCO: person -> 17)."""
    return {c["id"]: len(c["keypoints"]) for c in gt["categories"] if c.get("keypoints")}


def resolve_sigmas(k: int, kpt_sigmas: Sequence[float] | None) -> np.ndarray | None:
    """[K] sigmas as float64, or None to keep the library's own COCO 17 (bit-identical stats)."""
    if kpt_sigmas is None:
        if k != COCO_PERSON_NUM_KEYPOINTS:
            raise ValueError(f"kpt_sigmas are required for {k} keypoints (defaults exist for 17)")
        return None
    sigmas = np.asarray(kpt_sigmas, dtype=np.float64)
    if sigmas.shape != (k,):
        raise ValueError(f"kpt_sigmas has {sigmas.size} values for {k} keypoints")
    return sigmas


def _wants_keypoints(gt: dict, predictions: list[dict]) -> bool:
    cat_ids = set(keypoint_categories(gt))
    gt_has_keypoints = any(
        ann.get("num_keypoints", 0) > 0
        for ann in gt["annotations"]
        if ann["category_id"] in cat_ids
    )
    predicts_keypoints = not predictions or any("keypoints" in p for p in predictions)
    return gt_has_keypoints and predicts_keypoints


def _wants_segm(gt: dict, predictions: list[dict]) -> bool:
    """Unlike keypoints, not for empty predictions: COCO instances files have masks for every
    category, so a box-only model would get a segm row of zeros."""
    predicts_masks = any("segmentation" in p for p in predictions)
    return predicts_masks and bool(mask_categories(gt, predictions))


def _single_k(num_keypoints: dict[int, int]) -> int:
    counts = set(num_keypoints.values())
    if len(counts) != 1:
        raise ValueError(f"keypoint categories have different keypoint counts: {num_keypoints}")
    return counts.pop()


def _check_keypoint_lengths(predictions: list[dict], cat_ids: set[int], k: int) -> None:
    for index, pred in enumerate(predictions):
        if pred["category_id"] in cat_ids and len(pred.get("keypoints", ())) != 3 * k:
            raise ValueError(
                f"prediction {index}: category {pred['category_id']} needs 'keypoints' with "
                f"{3 * k} values, got {len(pred.get('keypoints', ()))}"
            )


def _keypoint_gt(gt: dict, cat_ids: set[int], k: int) -> dict:
    """GT restricted to the keypoint categories; annotations without keypoints become ignored."""
    annotations = []
    for ann in gt["annotations"]:
        if ann["category_id"] not in cat_ids:
            continue
        keypoints = ann.get("keypoints") or [0] * (3 * k)
        if len(keypoints) != 3 * k:
            raise ValueError(f"ground-truth annotation {ann['id']}: needs {3 * k} keypoint values")
        num_labelled = ann.get("num_keypoints", 0)
        annotations.append({**ann, "keypoints": keypoints, "num_keypoints": num_labelled})
    categories = [c for c in gt["categories"] if c["id"] in cat_ids]
    return {**gt, "categories": categories, "annotations": annotations}
