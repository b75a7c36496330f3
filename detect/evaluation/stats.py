"""The COCOeval numbers every head reports in the same way: named stats, per-class AP and the
precision-recall curve, all read from COCOeval's ``stats`` and ``eval["precision"]``."""
from __future__ import annotations

import numpy as np


def named_stats(names: tuple[str, ...], stats: np.ndarray) -> dict[str, float]:
    """Name the leading COCOeval stats; ``names`` follow summarize()'s order."""
    return {name: float(value) for name, value in zip(names, stats)}


def pr_curve(precision: np.ndarray) -> dict[str, list[float]]:
    """Precision at COCO's 101 recall points, IoU (or OKS) 0.5, all areas, the last maxDets,
    averaged over categories that have ground truth: ``{"recall": [...], "precision": [...]}``."""
    p = precision[0, :, :, 0, -1]  # [R, K]
    valid = (p > -1).any(axis=0)  # categories with ground truth
    mean = p[:, valid].clip(min=0).mean(axis=1) if valid.any() else np.zeros(p.shape[0])
    recall = np.linspace(0.0, 1.0, p.shape[0])
    return {"recall": [round(float(r), 4) for r in recall],
            "precision": [round(float(v), 6) for v in mean]}


def per_class_ap(
    precision: np.ndarray, cat_ids: list[int], names: dict[int, str]
) -> dict[str, float]:
    """AP@[.5:.95] per category from COCOeval precision [T, R, K, A, M] (area all, last maxDets)."""
    per_class = {}
    for k, cat_id in enumerate(cat_ids):
        values = precision[:, :, k, 0, -1]  # [T, R]
        values = values[values > -1]
        if values.size:
            per_class[names.get(cat_id, str(cat_id))] = float(np.mean(values))
    return per_class
