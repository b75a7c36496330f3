"""What a detector returns for one image (`Prediction`, numpy, original pixels), shared by the
PyTorch `detect.api.Detector`, the exported-graph `detect.export.runtime.ExportedDetector` and
everything that writes or draws predictions."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detect.structures import Geometry


@dataclass
class Field:
    """One instance head's output for the detections of an image.

    values [N, ...] in original pixels (keypoints [N, K, 3] (x, y, score); masks [N, H, W] bool
    at the image's resolution, geometry "mask"); present [N] bool:
    whether the detection's category has the field (``person`` for COCO keypoints): the rows of
    the others are zeros and are written nowhere (COCO results, drawings, video records);
    geometry: how the values relate to the image (`detect.structures.Geometry`).
    """

    values: np.ndarray
    present: np.ndarray
    geometry: Geometry


@dataclass
class Prediction:
    """Detections of one image in original pixels.

    boxes [N, 4] xyxy, scores [N], labels [N] original category ids, names [N] class names,
    fields: each instance head's `Field` by the head's name (``keypoints`` with a keypoint head).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: list[str]
    fields: dict[str, Field] = field(default_factory=dict)


def masked_field(values: np.ndarray, present: np.ndarray, geometry: Geometry) -> Field:
    """A `Field` whose rows where not ``present`` are zeros: bool values (masks [N, H, W]) stay
    bool (False there), any other dtype becomes float32."""
    if values.dtype == np.bool_ and not values[~present].any():
        return Field(values, present, geometry)  # already False there: no copy of the masks
    shape = (-1,) + (1,) * (values.ndim - 1)
    kept = np.where(present.reshape(shape), values, np.zeros((), values.dtype))
    return Field(kept if values.dtype == np.bool_ else kept.astype(np.float32), present, geometry)
