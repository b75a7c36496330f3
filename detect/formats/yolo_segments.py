"""YOLO segmentation lines <-> COCO segmentations.

Ultralytics' segmentation labels are one polygon per line, ``class x1 y1 x2 y2 ... xn yn``, with
the points normalised by the image width/height (``x = x1 * W`` in COCO's continuous pixel
coordinates). A box line ``class cx cy w h`` has 4 values after the class; a polygon an even
number of at least 6. Ultralytics decides per file: a file with one polygon line has all its lines
read as polygons (a box line then becomes a two-point polygon, a wrong box).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from detect.data.notes import NoteLog
from detect.data.segmentation import (SegmentationError, decode, mask_polygon, polygon_area,
                                      segmentation_kind, to_rle)

ODD_COORDINATES = ("odd number of values after the class: neither a box 'class cx cy w h' nor a "
                   "polygon 'class x1 y1 ... xn yn' (YOLO pose lines are not read)")
TOO_FEW_POINTS = "polygon with fewer than 3 points"


def line_problem(n_values: int) -> str | None:
    """Why a line with ``n_values`` after the class is neither a box (4) nor a polygon (even,
    >= 6); None when it is one of them."""
    if n_values == 4:
        return None
    if n_values % 2:
        return ODD_COORDINATES
    return TOO_FEW_POINTS if n_values < 6 else None


def read_polygon(coords: list[float], width: int,
                 height: int) -> tuple[list[float] | None, str, bool]:
    """(flat absolute polygon, "", clipped) of a line's normalised points, or (None, reason, False).

    Points outside [0, 1] are clipped to it (``clipped`` says so), as Ultralytics clips them.
    """
    if not all(math.isfinite(v) for v in coords):
        return None, "non-finite polygon coordinate", False
    xy = np.asarray(coords, np.float64).reshape(-1, 2)  # [n, 2] normalised
    clipped = bool(((xy < 0) | (xy > 1)).any())
    xy = xy.clip(0.0, 1.0) * np.array([width, height], np.float64)  # [n, 2] pixels
    return xy.ravel().tolist(), "", clipped


def polygon_to_write(seg: Any, width: int, height: int, notes: NoteLog,
                     where: str) -> np.ndarray | None:
    """[P, 2] absolute polygon to write for a COCO segmentation; None: write the box line.

    Several polygons: the largest (by area). An RLE: the outline of its largest part along the
    pixel edges (`mask_polygon`; holes filled).
    A malformed segmentation is noted and gets the box line.
    """
    try:
        kind = segmentation_kind(seg)
        rle = to_rle(seg, height, width) if kind is not None else None
    except SegmentationError as e:
        notes.add("malformed segmentation (its box line written)", f"{where}: {e}")
        return None
    if kind is None:
        return None
    if kind == "polygon":
        if len(seg) > 1:
            notes.add("object(s) with several polygons: the largest written, the other parts "
                      "dropped", where)
        return np.asarray(max(seg, key=polygon_area), np.float64).reshape(-1, 2)
    xy = mask_polygon(decode(rle))
    if xy is None:
        notes.add("empty RLE mask(s) (their box line written)", where)
        return None
    notes.add("RLE mask(s) written as the outline of their largest part (along the pixel edges; "
              "holes filled, other parts dropped)", where)
    return xy


def polygon_line(label: int, xy: np.ndarray, width: int, height: int) -> tuple[str, bool]:
    """(``class x1 y1 ... xn yn`` normalised, whether points outside the image were clipped)."""
    norm = xy / np.array([width, height], np.float64)  # [P, 2]
    clipped = bool(((norm < 0) | (norm > 1)).any())
    values = norm.clip(0.0, 1.0).ravel()
    return f"{label} " + " ".join(f"{v:.10g}" for v in values), clipped
