"""What a detector returns for one image (`Prediction`, numpy, original pixels), shared by the
PyTorch `detect.api.Detector`, the exported-graph `detect.export.runtime.ExportedDetector` and
everything that writes or draws predictions."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detect.data.annotations import KeypointMeta


@dataclass
class Prediction:
    """Detections of one image in original pixels.

    boxes [N, 4] xyxy, scores [N], labels [N] original category ids, names [N] class names,
    keypoints [N, K, 3] (x, y, score) or None (a model without a keypoint head).
    has_keypoints [N] bool (None without a keypoint head): whether the detection's category has
    keypoints. Keypoints belong to the categories that have them (``person`` in COCO): the rows
    of the other detections are masked, all zeros, and written nowhere (COCO results, drawings,
    video records).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: list[str]
    keypoints: np.ndarray | None = None
    has_keypoints: np.ndarray | None = None


def mask_keypoints(keypoints: np.ndarray | None, labels: np.ndarray,
                   kmeta: KeypointMeta | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(keypoints [N, K, 3] with zero rows for categories without keypoints, has_keypoints [N])
    for detections of original category ids ``labels`` [N]; (None, None) without keypoints."""
    if keypoints is None:
        return None, None
    has = np.array([kmeta is None or kmeta.has_keypoints(int(c)) for c in labels], bool)
    return np.where(has[:, None, None], keypoints, 0).astype(np.float32), has
