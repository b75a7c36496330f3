"""Bar charts and histograms drawn with OpenCV (no plotting library needed), saved as PNG."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from detect.io import atomic_write_bytes

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BLACK, _GREY, _BAR = (0, 0, 0), (215, 215, 215), (180, 120, 40)
_PLOT_H, _TOP, _LEFT, _RIGHT = 300, 44, 64, 20


def bar_chart(labels: list[str], values: list[float], title: str,
              x_label: str = "") -> np.ndarray:
    """A white BGR image [H, W, 3]: one bar per value, its value above it (when there is room)
    and its label below it, written upwards."""
    n = max(len(values), 1)
    slot = int(np.clip(900 // n, 8, 60))
    label_h = max((_text_size(t, 0.4)[0] for t in labels), default=0) + 8
    width = max(_LEFT + n * slot + _RIGHT, _text_size(title, 0.55)[0] + 2 * _LEFT)
    height = _TOP + _PLOT_H + label_h + (24 if x_label else 6)
    img = np.full((height, width, 3), 255, np.uint8)
    top = max(float(max(values, default=0)), 1.0)
    base = _TOP + _PLOT_H  # y of the zero line
    for i in range(5):  # grid lines with their values
        v = top * i / 4
        y = int(base - _PLOT_H * i / 4)
        cv2.line(img, (_LEFT, y), (width - _RIGHT, y), _GREY, 1)
        cv2.putText(img, f"{v:.4g}", (4, y + 4), _FONT, 0.35, _BLACK, 1, cv2.LINE_AA)
    for i, (label, v) in enumerate(zip(labels, values)):
        x0 = _LEFT + i * slot + 2
        y0 = int(round(base - _PLOT_H * float(v) / top))
        cv2.rectangle(img, (x0, y0), (x0 + slot - 4, base), _BAR, -1)
        if slot >= 24:
            cv2.putText(img, f"{v:g}", (x0, y0 - 4), _FONT, 0.35, _BLACK, 1, cv2.LINE_AA)
        _paste_upright_text(img, label, x0 + (slot - 4) // 2, base + 4)
    cv2.line(img, (_LEFT, base), (width - _RIGHT, base), _BLACK, 1)
    cv2.putText(img, title, (_LEFT, 28), _FONT, 0.55, _BLACK, 1, cv2.LINE_AA)
    if x_label:
        cv2.putText(img, x_label, (_LEFT, height - 8), _FONT, 0.45, _BLACK, 1, cv2.LINE_AA)
    return img


def histogram(values: list[float] | np.ndarray, edges: np.ndarray, title: str,
              x_label: str = "") -> np.ndarray:
    """`bar_chart` of ``values`` counted in the bins ``edges`` [B + 1], labelled by lower edge."""
    counts, _ = np.histogram(np.asarray(values, np.float64), bins=edges)
    labels = [f"{e:g}" for e in edges[:-1]]
    return bar_chart(labels, counts.tolist(), title, x_label)


def write_png(path: str | Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, lambda f: f.write(buf.tobytes()))


def _text_size(text: str, scale: float) -> tuple[int, int]:
    (w, h), baseline = cv2.getTextSize(text, _FONT, scale, 1)
    return w, h + baseline


def _paste_upright_text(img: np.ndarray, text: str, cx: int, y: int) -> None:
    """Text rotated 90° (read bottom to top), centred on column ``cx``, starting at row ``y``."""
    w, h = _text_size(text, 0.4)
    if not text or w == 0:
        return
    patch = np.full((h + 2, w + 2, 3), 255, np.uint8)
    cv2.putText(patch, text, (1, h - 2), _FONT, 0.4, _BLACK, 1, cv2.LINE_AA)
    patch = np.ascontiguousarray(np.rot90(patch))  # [w + 2, h + 2, 3]
    x0 = max(cx - patch.shape[1] // 2, 0)
    rows = min(patch.shape[0], img.shape[0] - y)
    cols = min(patch.shape[1], img.shape[1] - x0)
    img[y:y + rows, x0:x0 + cols] = np.minimum(img[y:y + rows, x0:x0 + cols], patch[:rows, :cols])
