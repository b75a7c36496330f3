"""What every conversion to COCO shares: the output builder, box clipping and the log of dropped
records (notes on converted ones: `detect.data.notes.NoteLog`).

Boxes enter as continuous-coordinate pixels ``x0, y0, x1, y1`` (pixel ``i`` covers ``[i, i+1)``,
as in COCO); each format converts its own convention to that before calling `CocoBuilder.add_box`.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from detect.data.annotations import DatasetError


@dataclass
class DropLog:
    """Records that did not make it into the output: reason -> count, plus the first few cases."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    def add(self, reason: str, where: str) -> None:
        """Count one record dropped for ``reason``; ``where`` names the file and the record."""
        self.counts[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{where}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        """A readable summary: the total, each reason with its count, then the first cases."""
        if not self.total:
            return []
        out = [f"dropped {self.total} record(s):"]
        out += [f"  {n} x {reason}" for reason, n in self.counts.most_common()]
        out += ["  e.g. " + e for e in self.examples]
        return out


def clip_box(x0: float, y0: float, x1: float, y1: float, width: int,
             height: int) -> tuple[tuple[float, float, float, float] | None, str]:
    """``(x0, y0, x1, y1)`` clipped to the image, or ``(None, reason)`` for a degenerate box."""
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None, "non-finite box"
    if x1 <= x0 or y1 <= y0:
        return None, "non-positive box width/height"
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if x1 <= x0 or y1 <= y0:
        return None, "box outside the image"
    return (x0, y0, x1, y1), ""


def check_class_names(names: list[str], source: str) -> list[str]:
    """Class names as given; empty, duplicate or multi-line names are a `DatasetError`."""
    if not names:
        raise DatasetError(f"{source}: no class names")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name or name != name.strip() or "\n" in name:
            raise DatasetError(f"{source}: class {i}: invalid name {name!r}")
        if name in seen:
            raise DatasetError(f"{source}: class {i}: duplicate name {name!r}")
        seen.add(name)
    return names


class CocoBuilder:
    """Collects images and boxes into a COCO dict; category ids are ``1..C`` in the given order."""

    def __init__(self, class_names: list[str]) -> None:
        self.categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
        self.category_id = {n: i + 1 for i, n in enumerate(class_names)}
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add_image(self, file_name: str, width: int, height: int) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width),
                            "height": int(height)})
        return image_id

    def add_box(self, image_id: int, class_name: str, box: tuple[float, float, float, float],
                iscrowd: int = 0, segmentation: list[list[float]] | None = None,
                area: float | None = None) -> None:
        """``box`` is clipped xyxy pixels; stored as COCO ``[x, y, w, h]``. ``area`` defaults to
        ``w * h``; a ``segmentation`` (COCO polygons) is stored as given."""
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        ann = {
            "id": len(self.annotations) + 1, "image_id": image_id,
            "category_id": self.category_id[class_name], "bbox": [x0, y0, w, h],
            "area": w * h if area is None else area, "iscrowd": int(iscrowd),
        }
        if segmentation is not None:
            ann["segmentation"] = segmentation
        self.annotations.append(ann)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "annotations": self.annotations,
                "categories": self.categories}
