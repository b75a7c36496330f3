"""Run COCOeval (pycocotools or faster_coco_eval) on in-memory COCO dicts.

Both libraries write into the annotation dicts they are given (``ignore``, ``area``, ``id``,
``segmentation``), so every call works on shallow copies and the caller's data stays untouched.
Their progress prints are swallowed; use :func:`detect.evaluation.format_table` for output.

Parity: faster_coco_eval computes precision as ``tp / (tp + fp)`` where pycocotools uses
``tp / (tp + fp + np.spacing(1))``. The two differ only when ``tp + fp == 1`` (1.0 against
0.9999999999999998), so stats agree to ~1e-16, not always bit for bit.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Backend = Literal["faster", "pycocotools"]
IouType = Literal["bbox", "segm", "keypoints"]
BACKENDS: tuple[str, ...] = ("faster", "pycocotools")


@dataclass(frozen=True)
class CocoEvalResult:
    """What the heads need from one COCOeval run.

    Attributes:
        stats: COCOeval ``stats`` in ``summarize()`` order: [12] for bbox and segm, [10] for
            keypoints.
        precision: COCOeval ``eval["precision"]``, [T, R, K, A, M] (IoU thresholds, recall
            thresholds, categories, area ranges, max detections); -1 where there is no GT.
        cat_ids: category id of each index along K.
    """

    stats: np.ndarray
    precision: np.ndarray
    cat_ids: list[int]


def run_cocoeval(
    gt: dict,
    results: list[dict],
    iou_type: IouType,
    backend: Backend,
    kpt_sigmas: np.ndarray | None = None,
) -> CocoEvalResult:
    """Evaluate ``results`` against ``gt`` with COCOeval; an empty ``results`` is allowed.

    Args:
        gt: COCO ground-truth dict (``images``, ``categories``, ``annotations``).
        results: COCO result dicts (``image_id``, ``category_id``, ``bbox``, ``score``, ...).
        iou_type: "bbox", "segm" (results carry RLE ``segmentation``) or "keypoints".
        backend: "faster" (faster_coco_eval) or "pycocotools".
        kpt_sigmas: [K] OKS sigmas; None keeps the library default (COCO's 17 person sigmas).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _make_coco(_copy_dataset(gt), backend)
        coco_dt = _load_results(coco_gt, gt, results, backend)
        evaluator = _make_evaluator(coco_gt, coco_dt, iou_type, backend)
        if kpt_sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(kpt_sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    num_stats = 10 if iou_type == "keypoints" else 12
    return CocoEvalResult(
        stats=np.asarray(evaluator.stats[:num_stats], dtype=np.float64),
        precision=np.asarray(evaluator.eval["precision"]),
        cat_ids=[int(c) for c in evaluator.params.catIds],
    )


def _copy_dataset(gt: dict) -> dict:
    return {**gt, "annotations": [dict(ann) for ann in gt["annotations"]]}


def _make_coco(dataset: dict, backend: Backend) -> Any:
    if backend == "faster":
        from faster_coco_eval import COCO

        return COCO(dataset)
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _load_results(coco_gt: Any, gt: dict, results: list[dict], backend: Backend) -> Any:
    # pycocotools' loadRes raises on an empty list: build the empty result set directly.
    if not results:
        empty = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
        return _make_coco(empty, backend)
    return coco_gt.loadRes([dict(r) for r in results])


def _make_evaluator(coco_gt: Any, coco_dt: Any, iou_type: IouType, backend: Backend) -> Any:
    if backend == "faster":
        from faster_coco_eval import COCOeval_faster

        return COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=_silent)
    from pycocotools.cocoeval import COCOeval

    return COCOeval(coco_gt, coco_dt, iou_type)


def _silent(*args: Any, **kwargs: Any) -> None:
    """print_function for faster_coco_eval: its progress lines are not wanted."""
