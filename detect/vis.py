"""Drawing detections with OpenCV: boxes, class names, scores, and each field by its geometry
(points as dots joined by a skeleton, masks filled translucent under everything else)."""
from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from detect.prediction import Prediction

MASK_ALPHA = 0.45  # a mask's colour over the image: its texture still shows through


def _color(i: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(image_bgr: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    names: list[str], scores: np.ndarray | None = None,
                    keypoints: np.ndarray | None = None,
                    skeleton: tuple[tuple[int, int], ...] = (),
                    kpt_thresh: float = 0.5,
                    points: Sequence[tuple[np.ndarray, np.ndarray]] = (),
                    masks: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> np.ndarray:
    """A copy of ``image_bgr`` [H, W, 3] with boxes [N, 4] xyxy, ``names`` [N] (+ scores [N]) and
    keypoints [N, K, 3] (drawn where the third value > ``kpt_thresh``) joined by ``skeleton``;
    ``points``: more point sets, each (values [N, K, D >= 2], drawn [N] bool), drawn the same
    way (every point where D is 2). Each detection's points are drawn right after its box.
    ``masks``: mask sets, each (values [N, H, W] bool, drawn [N] bool), filled in the detection's
    colour at ``MASK_ALPHA`` before any box, so under every box, name and point."""
    img = np.ascontiguousarray(image_bgr).copy()
    num = len(np.asarray(boxes).reshape(-1, 4))
    for values, drawn in masks:
        fill_masks(img, values, drawn[:num], labels)
    thick = max(1, round(max(img.shape[:2]) / 400))
    sets = list(points) + ([(keypoints, np.ones(len(keypoints), bool))]
                           if keypoints is not None else [])
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes).reshape(-1, 4).astype(int)):
        c = _color(int(labels[i]))
        cv2.rectangle(img, (x0, y0), (x1, y1), c, thick)
        text = names[i] if scores is None else f"{names[i]} {float(scores[i]):.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(img, (x0, max(0, y0 - th - 4)), (x0 + tw + 2, y0), c, -1)
        cv2.putText(img, text, (x0 + 1, max(th, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for values, drawn in sets:
            if len(values) > i and drawn[i]:
                _draw_keypoints(img, values[i], skeleton, c, thick, kpt_thresh)
    return img


def draw_prediction(image_bgr: np.ndarray, pred: "Prediction",
                    skeleton: tuple[tuple[int, int], ...] = (),
                    min_score: float = 0.3) -> np.ndarray:
    """A copy of ``image_bgr`` with the detections of ``pred`` scoring at least ``min_score``;
    their ``points`` fields drawn where the detection has them, joined by ``skeleton`` (the
    edges within a field's number of points), and their ``mask`` fields filled where they have
    them."""
    keep = pred.scores >= min_score
    points = [(f.values[keep], f.present[keep]) for f in pred.fields.values()
              if f.geometry == "points"]
    masks = [f for f in pred.fields.values() if f.geometry == "mask"]
    if masks:  # filled here, from the rows drawn: a copy of the kept [N, H, W] costs seconds
        image_bgr = np.ascontiguousarray(image_bgr).copy()
        for f in masks:
            fill_masks(image_bgr, f.values, f.present & keep, pred.labels)
    return draw_detections(image_bgr, pred.boxes[keep], pred.labels[keep],
                           [n for n, k in zip(pred.names, keep) if k], pred.scores[keep],
                           points=points, skeleton=skeleton)


def fill_masks(img: np.ndarray, values: np.ndarray, drawn: np.ndarray,
               labels: np.ndarray) -> None:
    """Fill the masks ``values`` [N, H, W] bool where ``drawn`` [N] into ``img`` [H, W, 3] in
    place, each in the colour of its label ``labels`` [N]."""
    for i in np.flatnonzero(drawn):
        _fill_mask(img, values[i], _color(int(labels[i])))


def _fill_mask(img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> None:
    """Blend ``color`` into ``img`` [H, W, 3] where ``mask`` [H, W] is set, in place; only the
    mask's bounding rectangle is touched (a small object on a large image costs little)."""
    if mask.shape != img.shape[:2]:
        raise ValueError(f"a mask of size {list(mask.shape)} on an image of {list(img.shape[:2])}")
    mask = np.ascontiguousarray(mask, dtype=bool)  # no copy for the bool masks of a Field
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    if w == 0 or h == 0:
        return
    crop = img[y:y + h, x:x + w]  # a view: written through
    inside = mask[y:y + h, x:x + w]  # [h, w]
    blended = crop[inside] * (1 - MASK_ALPHA) + np.array(color, np.float64) * MASK_ALPHA  # [P, 3]
    crop[inside] = blended.round().astype(np.uint8)


def _draw_keypoints(img: np.ndarray, kpts: np.ndarray, skeleton: tuple[tuple[int, int], ...],
                    color: tuple[int, int, int], thick: int, thresh: float) -> None:
    ok = kpts[:, 2] > thresh if kpts.shape[1] > 2 else np.ones(len(kpts), bool)  # [K]
    if not ok.any():
        return
    pts = kpts[:, :2].round().astype(int)
    for a, b in skeleton:
        if a < len(pts) and b < len(pts) and ok[a] and ok[b]:
            cv2.line(img, tuple(pts[a]), tuple(pts[b]), color, thick, cv2.LINE_AA)
    for j in np.flatnonzero(ok):
        cv2.circle(img, tuple(pts[j]), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(img, tuple(pts[j]), thick + 1, color, 1, cv2.LINE_AA)
