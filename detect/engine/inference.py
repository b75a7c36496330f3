"""Running a detector over a data loader: detections in original pixels, COCO results, metrics."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detect.config import PostprocessConfig
from detect.data.annotations import CategoryMap
from detect.evaluation.backends import BACKENDS
from detect.evaluation.coco_eval import check_ids
from detect.evaluation.predictions import check_predictions
from detect.models.detector import MultiHeadDetector
from detect.prediction import Prediction
from detect.records import detection_records
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
            d = model.to_original(d, t.scale, t.offset, t.orig_size)
            yield t, Detections(d.boxes.cpu(), d.scores.cpu(), d.labels.cpu(),
                                {n: v.cpu() for n, v in d.fields.items()})
    bar.close()


def coco_records(pred: Prediction, image_id: int) -> list[dict]:
    """COCO results records of one image's prediction (`detect.records.detection_records`:
    bbox xywh, original category ids, each field where the detection has it)."""
    return [{"image_id": int(image_id), **r} for r in detection_records(pred)]


def predict_coco(model: MultiHeadDetector, loader: DataLoader, params: PostprocessConfig,
                 categories: CategoryMap, device: torch.device,
                 skipped: list[str] | None = None, progress: bool = False) -> list[dict]:
    """COCO results for every readable image of ``loader`` (unreadable ones go to ``skipped``)."""
    results: list[dict] = []
    for t, det in predict_batches(model, loader, params, device, skipped, progress):
        results += coco_records(model.prediction(det, categories), t.image_id)
    return results


def evaluate_heads(model: MultiHeadDetector, gt: dict, predictions: list[dict],
                   class_names: dict[int, str], backend: str = "faster",
                   heads: tuple[str, ...] | None = None) -> dict:
    """Every head's evaluation (`Head.evaluate`) of COCO result records, table row -> stats;
    ``heads``: only these (default: all). Raises ValueError for an unknown backend, a malformed
    prediction or one whose image or category is not in ``gt``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}, expected one of {BACKENDS}")
    check_predictions(predictions)
    check_ids(gt, predictions)
    metrics: dict = {}
    for name, head in model.heads.items():
        if heads is None or name in heads:
            metrics |= head.evaluate(gt, predictions, backend, class_names)
    return metrics


def evaluate_model(model: MultiHeadDetector, loader: DataLoader, gt: dict, categories: CategoryMap,
                   params: PostprocessConfig, device: torch.device, backend: str = "faster",
                   skipped: list[str] | None = None, progress: bool = False,
                   heads: tuple[str, ...] | None = None) -> tuple[dict, list[dict]]:
    """Per-head metrics of ``model`` on ``loader`` (and the predictions); ``heads``: evaluate
    only these; unreadable images are appended to ``skipped``; ``progress``: a bar on stderr."""
    preds = predict_coco(model, loader, params, categories, device, skipped, progress)
    names = dict(zip(categories.ids, categories.names))
    return evaluate_heads(model, gt, preds, names, backend, heads), preds


@torch.inference_mode()
def drawn_predictions(model: MultiHeadDetector, dataset, params: PostprocessConfig,
                      device: torch.device, size_divisor: int,
                      skeleton: tuple[tuple[int, int], ...] = (), count: int = 4,
                      min_score: float = 0.3) -> list[np.ndarray]:
    """The first ``count`` readable images of ``dataset`` (letterboxed, as evaluated) with the
    model's detections drawn (`detect.vis.draw_prediction`: boxes and every field), BGR uint8."""
    from detect.data.collate import Collate
    from detect.data.dataset import BadImage
    from detect.prediction import Prediction
    from detect.vis import draw_prediction

    samples = [s for s in (dataset[i] for i in range(min(count, len(dataset))))
               if not isinstance(s, BadImage)]
    if not samples:
        return []
    batch = Collate(size_divisor)(samples)
    was_training = model.training
    model.eval()
    dets = model.detect(model(batch.images.to(device)), batch.image_sizes, params)
    model.train(was_training)
    names = dataset.ann.categories.names
    drawn = []
    for sample, d in zip(samples, dets):
        d = model.to_original(d, 1.0, (0.0, 0.0), sample.image.shape[:2])  # the sample's pixels
        pred = Prediction(d.boxes.cpu().numpy(), d.scores.cpu().numpy(), d.labels.cpu().numpy(),
                          [names[int(i)] for i in d.labels], model.numpy_fields(d))
        drawn.append(draw_prediction(np.ascontiguousarray(sample.image[..., ::-1]), pred,
                                     skeleton, min_score))
    return drawn
