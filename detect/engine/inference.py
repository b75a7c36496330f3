"""Running a detector over a data loader: detections in original pixels, COCO results, metrics."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detect.config import PostprocessConfig
from detect.data.annotations import CategoryMap
from detect.evaluation import evaluate
from detect.models.detector import MultiHeadDetector
from detect.structures import Detections, Target


@torch.inference_mode()
def predict_batches(model: MultiHeadDetector, loader: DataLoader, params: PostprocessConfig,
                    device: torch.device, skipped: list[str] | None = None,
                    progress: bool = False) -> Iterator[tuple[Target, Detections]]:
    """Yield (target, detections in original-image pixels) for every readable image of
    ``loader``; images it could not read are appended to ``skipped`` as "path: reason" (the
    caller reports them: their objects count as missed in any evaluation). ``progress``: a bar
    of images done on stderr."""
    model.eval()
    bar = tqdm(total=len(loader.dataset), unit="image", desc="eval", disable=not progress,
               leave=False, dynamic_ncols=True)
    for batch in loader:
        bar.update(len(batch.targets) + len(batch.skipped))
        if skipped is not None:
            skipped += batch.skipped
        if batch.images.shape[0] == 0:
            continue
        out = model(batch.images.to(device))
        dets = model.detect(out, batch.image_sizes, params)
        for t, d in zip(batch.targets, dets):
            d = d.map_to_original(t.scale, t.offset)
            h, w = t.orig_size
            d.boxes[:, 0::2] = d.boxes[:, 0::2].clamp(0, w)
            d.boxes[:, 1::2] = d.boxes[:, 1::2].clamp(0, h)
            yield t, Detections(d.boxes.cpu(), d.scores.cpu(), d.labels.cpu(),
                                None if d.keypoints is None else d.keypoints.cpu())
    bar.close()


def detections_to_coco(det: Detections, image_id: int, categories: CategoryMap,
                       keypoint_classes: list[bool] | None = None) -> list[dict]:
    """COCO results records: bbox xywh, original category ids, flat keypoints [x, y, s] * K for
    detections of classes with keypoints (``keypoint_classes`` [C]; None: every class)."""
    boxes = det.boxes.tolist()
    scores = det.scores.tolist()
    labels = det.labels.tolist()
    kpts = None if det.keypoints is None else det.keypoints.flatten(1).tolist()
    out = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        rec = {"image_id": int(image_id), "category_id": categories.category_id(labels[i]),
               "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
               "score": round(scores[i], 5)}
        if kpts is not None and (keypoint_classes is None or keypoint_classes[labels[i]]):
            rec["keypoints"] = [round(v, 2) for v in kpts[i]]
        out.append(rec)
    return out


def keypoint_classes(model: MultiHeadDetector) -> list[bool] | None:
    """[C]: which classes' detections carry keypoints (None: all, or no keypoint head)."""
    head = model.heads["keypoints"] if "keypoints" in model.heads else None
    return None if head is None or head.classes.numel() == 0 else head.classes.tolist()


def predict_coco(model: MultiHeadDetector, loader: DataLoader, params: PostprocessConfig,
                 categories: CategoryMap, device: torch.device,
                 skipped: list[str] | None = None, progress: bool = False) -> list[dict]:
    """COCO results for every readable image of ``loader`` (unreadable ones go to ``skipped``)."""
    results: list[dict] = []
    with_kpts = keypoint_classes(model)
    for t, det in predict_batches(model, loader, params, device, skipped, progress):
        results += detections_to_coco(det, t.image_id, categories, with_kpts)
    return results


def evaluate_model(model: MultiHeadDetector, loader: DataLoader, gt: dict, categories: CategoryMap,
                   params: PostprocessConfig, device: torch.device,
                   kpt_sigmas: tuple[float, ...] | None = None,
                   backend: str = "faster", skipped: list[str] | None = None,
                   progress: bool = False) -> tuple[dict, list[dict]]:
    """Per-head COCO metrics of ``model`` on ``loader`` (and the predictions); unreadable images
    are appended to ``skipped``; ``progress``: a bar on stderr."""
    preds = predict_coco(model, loader, params, categories, device, skipped, progress)
    has_kpts = "keypoints" in model.heads and any(c.get("keypoints") for c in gt["categories"])
    names = dict(zip(categories.ids, categories.names))
    metrics = evaluate(gt, preds, backend=backend, kpt_sigmas=(kpt_sigmas or None) if has_kpts else None,
                       class_names=names, keypoints=has_kpts)
    return metrics, preds
