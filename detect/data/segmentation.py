"""COCO ``segmentation`` fields: their kind, validation, pixel area, and masks <-> RLE / polygon.

A segmentation is a list of polygons ``[[x1, y1, ..., xn, yn], ...]`` in continuous pixel
coordinates (pixel ``i`` covers ``[i, i + 1)``, as the boxes), or a run-length encoding
``{"size": [h, w], "counts": ...}``: compressed (``counts`` a str, pycocotools' encoding) or
uncompressed (``counts`` a list of run lengths over the column-major mask, starting with
background). Absent, ``None`` or ``[]`` means no mask.

pycocotools trusts its input: a malformed RLE string is read past its end and run lengths that
overflow the mask are written past the buffer, and a polygon of 4 numbers is taken for a box.
`to_rle` checks everything first and raises `SegmentationError` (a one-line reason) instead.

Training data goes through `clean_segmentation`, which keeps what can be trusted and says why
anything was changed (`NoteLog`: counted by reason, with the first annotation):

* a polygon with NaN or infinite values, an odd number of values or fewer than 3 points is
  dropped (the object keeps its other polygons; with none left it has no mask);
* points outside the image are clipped to it;
* an RLE whose ``size`` is not the image's (height, width), or whose counts cannot be read or do
  not cover the image, is dropped: decoding it would be a silently wrong mask;
* a segmentation of any other type is dropped.

An object left without a mask trains its box only; its category still has masks when others do.
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from detect.data.notes import NoteLog

# A polygon point farther than this many image sides outside the image is an error: pycocotools
# walks every polygon edge pixel by pixel, so a huge coordinate costs memory without bound.
MAX_OUTSIDE = 1.0


class SegmentationError(ValueError):
    """A malformed ``segmentation``; the message is the reason, without the record's name."""


def segmentation_kind(seg: Any) -> str | None:
    """``"polygon"``, ``"rle"`` or None (no mask); anything else is a `SegmentationError`."""
    if seg is None or (isinstance(seg, list) and not seg):
        return None
    if isinstance(seg, list):
        return "polygon"
    if isinstance(seg, dict):
        return "rle"
    raise SegmentationError(f"must be a list of polygons or an RLE dict, got {type(seg).__name__}")


def to_rle(seg: Any, height: int, width: int) -> dict | None:
    """The compressed RLE of a segmentation on an image of ``height x width``; None without one.

    Raises:
        SegmentationError: malformed polygons or RLE, or an RLE of another size than the image.
    """
    kind = segmentation_kind(seg)
    if kind is None:
        return None
    if kind == "polygon":
        polygons = [_checked_polygon(p, i, height, width) for i, p in enumerate(seg)]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    size = seg.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise SegmentationError(f"RLE 'size' must be [height, width], got {size!r}")
    if list(size) != [height, width]:
        raise SegmentationError(f"RLE size {list(size)} differs from the image's "
                                f"[{height}, {width}]")
    counts = seg.get("counts")
    if isinstance(counts, str):
        _check_runs(_string_counts(counts), height * width)
        return {"size": [height, width], "counts": counts.encode("ascii")}
    if isinstance(counts, list) and all(_is_int(c) for c in counts):
        _check_runs(counts, height * width)
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    raise SegmentationError("RLE 'counts' must be a str or a list of integers")


def rle_json(seg: Any, height: int, width: int) -> dict | None:
    """`to_rle` with ``counts`` as str (a JSON-ready COCO result or annotation)."""
    rle = to_rle(seg, height, width)
    if rle is None:
        return None
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_masks(segmentations: list[Any], width: int, height: int) -> np.ndarray:
    """[N, H, W] uint8 0/1 masks of segmentations (zeros where there is none)."""
    out = np.zeros((len(segmentations), height, width), np.uint8)
    for i, seg in enumerate(segmentations):
        rle = to_rle(seg, height, width)
        if rle is not None:
            out[i] = mask_utils.decode(rle)
    return out


def mask_area(seg: Any, height: int, width: int) -> int | None:
    """Pixels of the decoded mask (pycocotools' area); None without a mask."""
    rle = to_rle(seg, height, width)
    return None if rle is None else int(mask_utils.area(rle))


def encode_mask(mask: np.ndarray) -> dict:
    """[H, W] bool mask -> compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """A compressed RLE (from `to_rle` or `encode_mask`) -> [H, W] bool mask."""
    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """[P, 2] float polygon (x, y) of a mask's largest outer outline; None when it is empty.

    The outline runs along the pixel edges: cv2.findContours traces it at twice the resolution,
    where its points lie a quarter pixel inside the edges, and they round to the pixel corners.
    So pycocotools rasterises the polygon back to exactly the mask's pixels, its tight box is the
    mask's and its area the pixel count. Holes are filled and the mask's other parts dropped.
    """
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    crop = mask[y0:int(ys.max()) + 1, x0:int(xs.max()) + 1].astype(np.uint8)
    up = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)  # [2h, 2w]
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2)  # [P, 2] upsampled pixel indices
    corners = np.round((largest + 0.5) / 2)  # 2k -> k + 0.25 -> k, 2k + 1 -> k + 0.75 -> k + 1
    corners = corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]  # [P', 2]
    return corners + np.array([x0, y0], np.float64)


def polygon_area(flat: list[float]) -> float:
    """Shoelace area of a flat ``[x1, y1, ..., xn, yn]`` polygon."""
    xy = np.asarray(flat, np.float64).reshape(-1, 2)  # [n, 2]
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _checked_polygon(p: Any, i: int, height: int, width: int) -> list[float]:
    if not isinstance(p, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          for v in p):
        raise SegmentationError(f"polygon {i} must be a list of numbers")
    if len(p) % 2 or len(p) < 6:
        raise SegmentationError(f"polygon {i} has {len(p)} numbers (an even count >= 6 needed)")
    if not all(math.isfinite(v) for v in p):
        raise SegmentationError(f"polygon {i} has a non-finite coordinate")
    side = MAX_OUTSIDE * max(height, width)
    if min(p) < -side or max(p[0::2]) > width + side or max(p[1::2]) > height + side:
        raise SegmentationError(f"polygon {i} has a point far outside the image")
    return [float(v) for v in p]


def _string_counts(s: str) -> list[int]:
    """Run lengths of a compressed RLE string (pycocotools' ``rleFrString``, with checks)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p == len(s):
                raise SegmentationError("RLE 'counts' string ends inside a number")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise SegmentationError(f"RLE 'counts' has an invalid character {s[p]!r}")
            x |= (c & 0x1F) << 5 * k
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _check_runs(counts: list[int], pixels: int) -> None:
    if any(c < 0 for c in counts):
        raise SegmentationError("RLE has a negative run length")
    if sum(counts) != pixels:
        raise SegmentationError(f"RLE runs cover {sum(counts)} pixels, the image has {pixels}")


def clean_segmentation(seg: Any, width: int, height: int, where: str,
                       log: NoteLog) -> list | dict | None:
    """The usable part of ``seg`` (module docstring), or None when nothing is left or there was
    none (absent, ``[]``)."""
    if seg is None or (isinstance(seg, list) and not seg):
        return None
    if isinstance(seg, dict):
        return _clean_rle(seg, width, height, where, log)
    if not isinstance(seg, list):
        log.add(f"segmentation of type {type(seg).__name__} dropped", where)
        return None
    if all(_is_number(v) for v in seg):  # one polygon given flat, as some tools write it
        seg = [seg]
    polygons = [p for poly in seg if (p := _clean_polygon(poly, width, height, where, log))]
    return polygons or None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _clean_polygon(poly: Any, width: int, height: int, where: str,
                   log: NoteLog) -> list[float] | None:
    if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
        log.add("polygon that is not a list of numbers dropped", where)
        return None
    if not all(math.isfinite(v) for v in poly):
        log.add("polygon with NaN or infinite values dropped", where)
        return None
    if len(poly) % 2:
        log.add("polygon with an odd number of coordinates dropped", where)
        return None
    if len(poly) < 6:
        log.add("polygon with fewer than 3 points dropped", where)
        return None
    xy = np.asarray(poly, np.float64).reshape(-1, 2)  # [P, 2]
    clipped = np.clip(xy, 0, (width, height))
    if (clipped != xy).any():
        log.add("polygon points outside the image clipped", where)
    return [float(v) for v in clipped.reshape(-1)]


def _clean_rle(rle: dict, width: int, height: int, where: str,
               log: NoteLog) -> dict | None:
    size = rle.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size)):
        log.add("RLE without an integer size [h, w] dropped", where)
        return None
    if list(size) != [height, width]:
        log.add("RLE whose size is not the image's dropped", where)
        return None
    try:
        to_rle(rle, height, width)
    except SegmentationError:
        log.add("RLE whose counts cannot be read or do not cover the image dropped", where)
        return None
    return {"size": [height, width], "counts": rle["counts"]}
