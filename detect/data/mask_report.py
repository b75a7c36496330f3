"""What the masks of a COCO dataset hold, for `detect.data.report`.

Over the same objects as the report (non-crowd annotations whose box validation keeps):

* per category, the objects with a polygon mask, with an RLE mask, without a mask (no
  ``segmentation``, ``None`` or ``[]``) and with a malformed one;
* mask areas: the pixels of the decoded segmentation (pycocotools' area, on the image), their COCO
  size ranges, and their ratio to the annotation's ``area`` where that is a positive number (1 when
  ``area`` is the mask's own, as in COCO; below 1 when it is the box's);
* objects without a mask in categories that have masks: they will train boxes only;
* crowd regions with a mask, counted apart.

A malformed segmentation never stops the report: it is a problem ``malformed segmentation``
naming the annotation id, the image and the reason (see `detect.data.segmentation`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detect.data.annotations import CocoAnnotations, _clean_box
from detect.data.segmentation import SegmentationError, mask_area, segmentation_kind

SMALL, LARGE = 32.0**2, 96.0**2  # COCO area ranges
MAX_EXAMPLES = 5
KINDS = ("polygon", "rle", "none", "malformed")


@dataclass
class MaskStats:
    per_class: dict[str, dict[str, int]]  # name -> objects by kind (`KINDS`)
    areas: list[float] = field(default_factory=list)  # mask pixels, one per object with a mask
    area_ratios: list[float] = field(default_factory=list)  # mask area / annotation ``area``
    without_examples: dict[str, list[str]] = field(default_factory=dict)  # name -> first objects
    crowd_with_mask: int = 0

    def total(self, kind: str) -> int:
        return sum(counts[kind] for counts in self.per_class.values())

    @property
    def without_mask(self) -> dict[str, int]:
        """Objects without a mask in each category that has masks (they train boxes only)."""
        return {name: c["none"] for name, c in self.per_class.items()
                if c["polygon"] + c["rle"] and c["none"]}

    def area_summary(self) -> dict[str, Any]:
        a = np.asarray(self.areas, np.float64)
        r = np.asarray(self.area_ratios, np.float64)
        sizes = {"small": int((a < SMALL).sum()), "medium": int(((a >= SMALL) & (a < LARGE)).sum()),
                 "large": int((a >= LARGE).sum())}
        return {"sizes": sizes, "pixels": _quantiles(a), "ratio_to_area": _quantiles(r)}

    def to_dict(self) -> dict[str, Any]:
        return {"objects": {k: self.total(k) for k in KINDS}, "per_class": self.per_class,
                "areas": self.area_summary(), "without_mask": self.without_mask,
                "without_mask_examples": {n: self.without_examples[n] for n in self.without_mask},
                "crowd_regions_with_mask": self.crowd_with_mask}


def _quantiles(x: np.ndarray) -> dict[str, float] | None:
    if not len(x):
        return None
    p5, median, p95 = np.percentile(x, [5, 50, 95]).tolist()
    return {"min": float(x.min()), "p5": p5, "median": median, "mean": float(x.mean()),
            "p95": p95, "max": float(x.max())}


def mask_stats(ann: CocoAnnotations, add_problem: Callable[[str, str], None]) -> MaskStats:
    """Mask statistics of the loaded dataset; malformed segmentations go to ``add_problem``."""
    stats = MaskStats({name: dict.fromkeys(KINDS, 0) for name in ann.categories.names})
    images = {img["id"]: img for img in ann.gt["images"]}
    for a in ann.gt["annotations"]:
        img = images[a["image_id"]]
        if _clean_box(a["bbox"], img["width"], img["height"], "")[0] is None:
            continue  # dropped by validation: not an object of the report
        where = f"annotation id {a['id']} (image {img['file_name']})"
        seg = ann.file_segmentation(a)
        try:
            kind = segmentation_kind(seg)
            pixels = mask_area(seg, img["height"], img["width"])
        except SegmentationError as e:
            add_problem("malformed segmentation", f"{where}: {e}")
            kind, pixels = "malformed", None
        if a.get("iscrowd", 0):
            stats.crowd_with_mask += pixels is not None
            continue
        _count_object(stats, ann.categories.names[ann.categories.label(a["category_id"])], kind,
                      pixels, a.get("area"), where)
    return stats


def _count_object(stats: MaskStats, name: str, kind: str | None, pixels: int | None, area: Any,
                  where: str) -> None:
    stats.per_class[name]["none" if kind is None else kind] += 1
    if kind is None:
        examples = stats.without_examples.setdefault(name, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(where)
    if pixels is None:
        return
    stats.areas.append(float(pixels))
    ok = isinstance(area, (int, float)) and not isinstance(area, bool) and math.isfinite(area)
    if ok and area > 0:
        stats.area_ratios.append(pixels / float(area))


def format_masks(stats: MaskStats) -> list[str]:
    """The mask section of the text report."""
    if not stats.total("polygon") + stats.total("rle") + stats.total("malformed"):
        return ["masks: none"]
    lines = [f"masks: {stats.total('polygon')} polygon, {stats.total('rle')} RLE, "
             f"{stats.total('none')} objects without, {stats.total('malformed')} malformed "
             f"(+ {stats.crowd_with_mask} crowd regions with a mask)"]
    width = max(len(n) for n in stats.per_class)
    lines.append(f"  {'':<{width}}" + "".join(f"{k:>10}" for k in KINDS))
    for name, counts in stats.per_class.items():
        lines.append(f"  {name:<{width}}" + "".join(f"{counts[k]:>10}" for k in KINDS))
    s = stats.area_summary()
    if s["pixels"] is not None:
        p, sizes = s["pixels"], s["sizes"]
        lines.append(f"mask area (pixels): min {p['min']:g}, median {p['median']:g}, "
                     f"mean {p['mean']:.1f}, max {p['max']:g}; small {sizes['small']}, "
                     f"medium {sizes['medium']}, large {sizes['large']}")
    if s["ratio_to_area"] is not None:
        r = s["ratio_to_area"]
        lines.append(f"mask area / annotation area: min {r['min']:.3f}, p5 {r['p5']:.3f}, "
                     f"median {r['median']:.3f}, p95 {r['p95']:.3f}, max {r['max']:.3f}")
    for name, n in stats.without_mask.items():
        lines.append(f"  {n} {name} object(s) without a mask train boxes only "
                     f"(e.g. {'; '.join(stats.without_examples[name])})")
    return lines
