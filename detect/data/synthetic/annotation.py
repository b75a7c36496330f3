"""A drawn object's COCO annotation: its tight box, its visible pixels as an RLE mask, and keypoints
with visibility."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detect.data.segmentation import encode_mask

MIN_KEYPOINT_AREA = 32.0**2  # COCO: small persons carry no keypoint labels


@dataclass
class Drawn:
    """An object as drawn: its pixels (before occlusion) and its keypoint pixels [K, 2] int."""

    category_id: int
    mask: np.ndarray
    keypoints: np.ndarray | None = None
    iscrowd: int = 0


def annotation(obj: Drawn, index: int, owner: np.ndarray) -> dict:
    """COCO fields of one drawn object (``id`` and ``image_id`` are added by the caller).

    ``owner`` [H, W] int: index of the object that drew each pixel last (-1: none). The box covers
    everything the object drew (``obj.mask``); the segmentation only the pixels it still shows,
    ``owner == index``.
    """
    ys, xs = np.nonzero(obj.mask)
    x0, y0 = int(xs.min()), int(ys.min())
    w, h = int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
    ann = {"category_id": obj.category_id, "bbox": [float(x0), float(y0), float(w), float(h)],
           "area": float(w * h), "iscrowd": obj.iscrowd,
           "segmentation": encode_mask(owner == index)}  # fmt: skip
    if obj.keypoints is not None:
        size = owner.shape[0]
        small = w * h < MIN_KEYPOINT_AREA
        flat: list[float | int] = []
        for x, y in obj.keypoints.tolist():
            if small or not (0 <= x < size and 0 <= y < size):
                flat += [0.0, 0.0, 0]
            else:
                flat += [x + 0.5, y + 0.5, 1 if owner[y, x] > index else 2]
        ann["keypoints"] = flat
        ann["num_keypoints"] = sum(v > 0 for v in flat[2::3])
    return ann
