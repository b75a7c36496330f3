"""Instance segmentations of COCO annotations: checked, repaired, decoded (pycocotools).

An annotation's ``segmentation`` is a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` in
pixels, or a run-length encoding ``{"size": [h, w], "counts": str | list[int]}`` (compressed or
not). `clean_segmentation` returns what can be trusted of it, and why anything was changed:

* a polygon with NaN or infinite values, an odd number of values or fewer than 3 points is
  dropped (the object keeps its other polygons; with none left it has no mask);
* points outside the image are clipped to it;
* an RLE whose ``size`` is not the image's (height, width) is dropped: decoding it at another
  size would be a silently wrong mask;
* a segmentation of any other type is dropped.

An object left without a mask trains its box only; its category still has masks when others do.
Every change is counted by reason with the first annotation it happened to
(`SegmentationLog`). Masks are uint8 0/1 arrays ``[H, W]`` of the original image.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

Segmentation = list | dict  # polygons (list of flat lists) or an RLE dict


@dataclass
class SegmentationLog:
    """Repairs and drops by reason, with the first place each happened ("file: annotation id")."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        self.examples.setdefault(reason, where)

    def lines(self) -> list[str]:
        """One line per reason: count, reason and the first annotation."""
        return [f"{n} {reason} (first: {self.examples[reason]})"
                for reason, n in sorted(self.counts.items())]


def clean_segmentation(seg: Any, width: int, height: int, where: str,
                       log: SegmentationLog) -> Segmentation | None:
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
                   log: SegmentationLog) -> list[float] | None:
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
               log: SegmentationLog) -> dict | None:
    size, counts = rle.get("size"), rle.get("counts")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        log.add("RLE without an integer size [h, w] dropped", where)
        return None
    if list(size) != [height, width]:
        log.add("RLE whose size is not the image's dropped", where)
        return None
    if isinstance(counts, list) and all(isinstance(v, int) and v >= 0 for v in counts):
        if sum(counts) != height * width:
            log.add("uncompressed RLE whose counts do not cover the image dropped", where)
            return None
        return {"size": [height, width], "counts": counts}
    if isinstance(counts, str):
        try:
            area = mask_utils.area({"size": [height, width], "counts": counts.encode()})
        except Exception:  # pycocotools raises bare errors on corrupt strings
            area = -1
        if area < 0:
            log.add("RLE with unreadable counts dropped", where)
            return None
        return {"size": [height, width], "counts": counts}
    log.add("RLE whose counts are neither a string nor a list of counts dropped", where)
    return None


def to_rle(seg: Segmentation, height: int, width: int) -> dict:
    """Compressed RLE ``{"size", "counts": str}`` of a COCO segmentation (polygons, uncompressed
    or compressed RLE), read the way pycocotools' ``annToRLE`` reads it."""
    if isinstance(seg, list):  # polygons: one object may have several parts
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        return seg
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_masks(segmentations: list[Segmentation | None], width: int, height: int) -> np.ndarray:
    """[N, H, W] uint8 0/1 masks of clean segmentations (zeros where None)."""
    out = np.zeros((len(segmentations), height, width), np.uint8)
    for i, seg in enumerate(segmentations):
        if seg is not None:
            out[i] = mask_utils.decode(to_rle(seg, height, width))
    return out


def encode_mask(mask: np.ndarray) -> dict:
    """[H, W] bool or 0/1 mask -> COCO RLE with ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
