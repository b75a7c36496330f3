"""``eval`` suite: our bbox evaluation (faster-coco-eval backend, plus per-class AP) against
pycocotools' COCOeval on the same in-memory ground truth and predictions; the stats must agree."""
from __future__ import annotations

import contextlib
import io

import numpy as np

from detect.benchmark.common import Options, Row, setup, speed_row, time_interleaved
from detect.evaluation.coco_eval import BBOX_STATS, bbox_metrics

NUM_CATEGORIES = 20
STATS_TOLERANCE = 1e-12


def synthetic_coco(num_images: int, preds_per_image: int = 20, seed: int = 0) -> tuple[dict, list[dict]]:
    """COCO ground truth (2-12 objects per image, small to large, 1 in 50 crowd) and predictions:
    a jittered copy of most objects plus random false positives, ``preds_per_image`` per image."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c + 1, "name": f"class{c}"} for c in range(NUM_CATEGORIES)]
    images, annotations, predictions = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        boxes = _random_boxes(rng, int(rng.integers(2, 13)))
        for box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.integers(1, NUM_CATEGORIES + 1)),
                                "bbox": box, "area": box[2] * box[3],
                                "iscrowd": int(rng.random() < 0.02)})
        gt_here = annotations[-len(boxes):]
        for i in range(preds_per_image):
            if i < len(gt_here) and rng.random() < 0.8:  # a detection of a real object
                ann = gt_here[i]
                x, y, w, h = ann["bbox"]
                box = [x + rng.normal(0, 0.1 * w), y + rng.normal(0, 0.1 * h),
                       w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)]
                cat = ann["category_id"] if rng.random() < 0.8 else int(rng.integers(1, NUM_CATEGORIES + 1))
            else:
                box, cat = _random_boxes(rng, 1)[0], int(rng.integers(1, NUM_CATEGORIES + 1))
            predictions.append({"image_id": image_id, "category_id": cat,
                                "bbox": [round(v, 2) for v in box],
                                "score": round(float(rng.random()), 5)})
    return {"images": images, "categories": categories, "annotations": annotations}, predictions


def _random_boxes(rng: np.random.Generator, n: int) -> list[list[float]]:
    """n xywh boxes inside 640x480, sides log-uniform in 8..300 px (small, medium and large)."""
    wh = np.exp(rng.uniform(np.log(8), np.log(300), (n, 2)))
    xy = rng.uniform(0, 1, (n, 2)) * (np.array([640, 480]) - wh).clip(min=1)
    return [[float(x), float(y), float(w), float(h)] for (x, y), (w, h) in zip(xy, wh)]


def pycocotools_stats(gt: dict, predictions: list[dict]) -> np.ndarray:
    """Plain pycocotools: COCO, loadRes, COCOeval bbox evaluate/accumulate/summarize -> stats[:9]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes([dict(p) for p in predictions]), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:len(BBOX_STATS)], dtype=np.float64)


def ours_stats(gt: dict, predictions: list[dict]) -> np.ndarray:
    names = {c["id"]: c["name"] for c in gt["categories"]}
    metrics = bbox_metrics(gt, predictions, "faster", names)
    return np.array([metrics[k] for k in BBOX_STATS], dtype=np.float64)


def evaluation(opts: Options, num_images: int | None = None) -> list[Row]:
    """Ours (faster backend, with per-class AP) vs pycocotools on 1000 images x 20 predictions."""
    setup(opts)
    n = num_images or (100 if opts.quick else 1000)
    gt, predictions = synthetic_coco(n)
    diff = float(np.abs(ours_stats(gt, predictions) - pycocotools_stats(gt, predictions)).max())
    if not diff <= STATS_TOLERANCE:
        raise AssertionError(f"ours and pycocotools disagree: max |stat difference| = {diff:.3g}")
    times = time_interleaved({"ours": lambda: ours_stats(gt, predictions),
                              "peer": lambda: pycocotools_stats(gt, predictions)},
                             opts.rounds(5, 2))
    row = speed_row("eval", f"bbox {n} images x 20 preds", times, 4.0,
                    f"stats identical to pycocotools (max |diff| {diff:.1e}); "
                    f"{len(gt['annotations'])} GT, {len(predictions)} predictions")
    row.extra["max_stat_diff"] = diff
    return [row]
