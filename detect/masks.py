"""Instance masks from the network's resolution to the original image's.

A mask field (geometry ``mask``) holds, per detection, probabilities [h, w] at ``stride`` input
pixels per value (mask pixel j covers input pixels ``[j * stride, (j + 1) * stride)``) from the
input's top-left corner. `masks_to_original` resamples each one's logits inside its detection's
box in original pixels (bilinear, on the pixel centres of ``transformed = original * scale +
offset``: what the loss reads) and keeps the pixels above probability `THRESHOLD`: [N, H, W]
bool of the original image, False outside the box.
Memory: ``N * H * W`` bytes (100 detections of a 640x480 image: 31 MB).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

THRESHOLD = 0.5  # a pixel belongs to the object when its resampled logit is above this one's
LOGIT_THRESHOLD = float(np.log(THRESHOLD / (1 - THRESHOLD)))
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before they become logits


def masks_to_original(probs: np.ndarray, boxes: np.ndarray, stride: int, scale: float,
                      offset: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """probs [N, h, w] float at ``stride``; boxes [N, 4] xyxy in original pixels; size (H, W)
    of the original image -> [N, H, W] bool (module docstring)."""
    height, width = size
    out = np.zeros((len(probs), height, width), bool)
    a = scale / stride  # mask pixels per original pixel
    # original pixel x (centre x + 0.5) -> input (x + 0.5) * scale + ox -> mask u = input / s - 0.5
    bx = (0.5 * scale + offset[0]) / stride - 0.5
    by = (0.5 * scale + offset[1]) / stride - 0.5
    p = np.clip(np.asarray(probs, np.float32), EPS, 1 - EPS)
    logits = np.log(p) - np.log1p(-p)  # resampled as logits, as the loss reads them
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        c1, r1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
        if c1 <= c0 or r1 <= r0:
            continue
        m = np.array([[a, 0.0, a * c0 + bx], [0.0, a, a * r0 + by]])
        crop = cv2.warpAffine(logits[i], m, (c1 - c0, r1 - r0),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        out[i, r0:r1, c0:c1] = crop > LOGIT_THRESHOLD
    return out
