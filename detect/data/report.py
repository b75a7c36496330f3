"""What a COCO dataset holds, and what is wrong with it.

`analyse` loads the annotation files with `load_annotations` (so the numbers are those training
sees: degenerate boxes dropped, boxes clipped) and checks the images on disk from their headers.

* objects are the non-crowd annotations kept; crowd regions are counted apart. An image is empty
  when it has no objects (a crowd region alone does not make it non-empty).
* sizes use COCO's ranges on the annotation's ``area`` (small < 32², medium < 96², large), or on
  the clipped box area when ``area`` is absent or not a positive number.
* keypoint visibility counts v = 0 / 1 / 2 per keypoint name over the objects of keypoint
  categories (v = 0 includes points outside the image, which validation zeroes).
* masks (`detect.data.mask_report`): objects with a polygon or RLE ``segmentation`` per category,
  mask pixel areas against the annotations' ``area``, objects without a mask in categories that
  have masks; a malformed segmentation is a problem naming the annotation id.
* problems: every box validation dropped (by reason), image files missing or unreadable, header
  sizes that differ from the JSON, file names used by two image ids, categories without objects.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detect.data.annotations import CocoAnnotations, _clean_box, load_annotations
from detect.data.image_io import ImageError, probe_image, resolve_inside
from detect.data.mask_report import MaskStats, format_masks, mask_stats

SMALL, LARGE = 32.0**2, 96.0**2  # COCO area ranges
MAX_EXAMPLES = 5


@dataclass
class DatasetReport:
    num_images: int
    num_crowd: int
    objects_per_class: dict[str, int]
    objects_per_image: list[int]  # one count per image, in file order
    box_areas: list[float]  # one per object, as used for the size ranges
    keypoint_visibility: dict[str, list[int]] | None  # name -> [n(v=0), n(v=1), n(v=2)]
    problems: Counter = field(default_factory=Counter)  # problem -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # problem -> first few cases
    masks: MaskStats | None = None

    @property
    def num_objects(self) -> int:
        return sum(self.objects_per_class.values())

    @property
    def num_empty_images(self) -> int:
        return sum(1 for n in self.objects_per_image if n == 0)

    @property
    def size_counts(self) -> dict[str, int]:
        a = np.asarray(self.box_areas, np.float64)
        return {"small": int((a < SMALL).sum()), "medium": int(((a >= SMALL) & (a < LARGE)).sum()),
                "large": int((a >= LARGE).sum())}

    @property
    def imbalance_ratio(self) -> float | None:
        """max / min object count over classes with objects (None without objects)."""
        counts = [n for n in self.objects_per_class.values() if n > 0]
        return max(counts) / min(counts) if counts else None

    def per_image_stats(self) -> dict[str, float]:
        n = np.asarray(self.objects_per_image, np.float64)
        if not len(n):
            return {"mean": 0.0, "median": 0.0, "max": 0, "empty": 0}
        return {"mean": float(n.mean()), "median": float(np.median(n)), "max": int(n.max()),
                "empty": self.num_empty_images}

    def add_problem(self, problem: str, example: str) -> None:
        self.problems[problem] += 1
        cases = self.examples.setdefault(problem, [])
        if len(cases) < MAX_EXAMPLES:
            cases.append(example)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.num_images, "objects": self.num_objects, "crowd_regions": self.num_crowd,
            "objects_per_class": self.objects_per_class, "objects_per_image": self.per_image_stats(),
            "sizes": self.size_counts, "imbalance_ratio": self.imbalance_ratio,
            "keypoint_visibility": self.keypoint_visibility,
            "masks": self.masks.to_dict() if self.masks is not None else None,
            "problems": [{"problem": p, "count": n, "examples": self.examples.get(p, [])}
                         for p, n in self.problems.most_common()],
        }


def analyse(annotation_paths: list[str] | list[Path], images_dir: str | Path) -> DatasetReport:
    """Statistics and problems of a COCO dataset (see module docstring)."""
    ann = load_annotations([str(p) for p in annotation_paths])
    per_class = Counter(int(c) for rec in ann.images for c in rec.labels)
    report = DatasetReport(
        num_images=len(ann.images),
        num_crowd=sum(len(rec.ignore_boxes) for rec in ann.images),
        objects_per_class={name: per_class[i] for i, name in enumerate(ann.categories.names)},
        objects_per_image=[len(rec.labels) for rec in ann.images],
        box_areas=_object_areas(ann),
        keypoint_visibility=_keypoint_visibility(ann),
    )
    for reason, n in ann.dropped.items():
        report.problems[f"box dropped: {reason}"] += n
    report.masks = mask_stats(ann, report.add_problem)
    for name, n in report.objects_per_class.items():
        if n == 0:
            report.add_problem("category without objects", name)
    _check_images(ann, Path(images_dir), report)
    return report


def _object_areas(ann: CocoAnnotations) -> list[float]:
    """``area`` (or the clipped box area) of every kept non-crowd annotation."""
    size = {img["id"]: (img["width"], img["height"]) for img in ann.gt["images"]}
    areas = []
    for a in ann.gt["annotations"]:
        if a.get("iscrowd", 0):
            continue
        box, _ = _clean_box(a["bbox"], *size[a["image_id"]], where="")  # the same validation
        if box is None:
            continue
        area = a.get("area")
        ok = isinstance(area, (int, float)) and not isinstance(area, bool) and math.isfinite(area)
        areas.append(float(area) if ok and area > 0 else (box[2] - box[0]) * (box[3] - box[1]))
    return areas


def _keypoint_visibility(ann: CocoAnnotations) -> dict[str, list[int]] | None:
    if ann.keypoints is None:
        return None
    kpt_labels = [ann.categories.label(c["id"]) for c in ann.gt["categories"] if c.get("keypoints")]
    counts = np.zeros((ann.keypoints.num_keypoints, 3), np.int64)  # [K, 3]: v = 0, 1, 2
    for rec in ann.images:
        mask = np.isin(rec.labels, kpt_labels)
        v = rec.keypoints[mask, :, 2].astype(np.int64)  # [N_kpt_objects, K]
        for level in range(3):
            counts[:, level] += (v == level).sum(axis=0)
    return {name: counts[k].tolist() for k, name in enumerate(ann.keypoints.names)}


def _check_images(ann: CocoAnnotations, images_dir: Path, report: DatasetReport) -> None:
    if not images_dir.is_dir():
        report.add_problem("image folder not found", str(images_dir))
        return
    first_id: dict[str, int] = {}
    for rec in ann.images:
        if rec.file_name in first_id:
            report.add_problem("file name used by two image ids",
                               f"{rec.file_name} (ids {first_id[rec.file_name]}, {rec.id})")
        first_id.setdefault(rec.file_name, rec.id)
        try:
            path = resolve_inside(images_dir, rec.file_name)
            if not os.path.isfile(path):
                report.add_problem("image file missing", rec.file_name)
                continue
            w, h = probe_image(path)
        except ImageError as e:
            report.add_problem("image file unreadable", str(e))
            continue
        if (w, h) != (rec.width, rec.height):
            report.add_problem("image size differs from the JSON",
                               f"{rec.file_name}: file {w}x{h}, JSON {rec.width}x{rec.height}")


def format_report(report: DatasetReport, source: str = "") -> str:
    """The report as readable text."""
    lines = [f"dataset {source}".rstrip(),
             f"images: {report.num_images}",
             f"objects: {report.num_objects} (+ {report.num_crowd} crowd regions)",
             "objects per class:"]
    total = max(report.num_objects, 1)
    width = max((len(n) for n in report.objects_per_class), default=0)
    for name, n in sorted(report.objects_per_class.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<{width}} {n:>7}  {100 * n / total:5.1f}%")
    s = report.per_image_stats()
    lines.append(f"objects per image: mean {s['mean']:.2f}, median {s['median']:g}, "
                 f"max {s['max']}, empty images {s['empty']}")
    sizes = report.size_counts
    lines.append(f"sizes (COCO area): small {sizes['small']}, medium {sizes['medium']}, "
                 f"large {sizes['large']}")
    ratio = report.imbalance_ratio
    lines.append("class imbalance (max/min over classes with objects): "
                 + (f"{ratio:.2f}" if ratio is not None else "n/a"))
    if report.keypoint_visibility is not None:
        lines += _format_visibility(report.keypoint_visibility)
    if report.masks is not None:
        lines += format_masks(report.masks)
    lines.append("problems:" if report.problems else "problems: none")
    for problem, n in report.problems.most_common():
        cases = report.examples.get(problem)
        lines.append(f"  {n} x {problem}" + (f"  (e.g. {'; '.join(cases)})" if cases else ""))
    return "\n".join(lines)


def _format_visibility(vis: dict[str, list[int]]) -> list[str]:
    width = max((len(n) for n in vis), default=0)
    lines = ["keypoint visibility:", f"  {'':<{width}}{'v=0':>8}{'v=1':>8}{'v=2':>8}"]
    for name, (v0, v1, v2) in vis.items():
        lines.append(f"  {name:<{width}}{v0:>8}{v1:>8}{v2:>8}")
    return lines


def save_plots(report: DatasetReport, out_dir: str | Path) -> list[Path]:
    """Objects per class, objects per image and box sizes as PNG charts in ``out_dir``."""
    from detect.data.charts import bar_chart, histogram, write_png

    out = Path(out_dir)
    per_image = np.asarray(report.objects_per_image, np.int64)
    most = int(per_image.max()) if len(per_image) else 0
    step = max(1, math.ceil((most + 1) / 40))
    sides = np.sqrt(np.asarray(report.box_areas, np.float64))
    longest = float(sides.max()) if len(sides) else 0.0
    size_step = 8.0 * max(1, math.ceil(longest / 8 / 40))  # at most ~40 bins of 8k px
    charts = {
        "objects_per_class.png": bar_chart(
            list(report.objects_per_class), list(report.objects_per_class.values()),
            f"objects per class ({report.num_objects} objects)"),
        "objects_per_image.png": histogram(
            per_image, np.arange(0, most + step + 1, step),
            f"objects per image ({report.num_images} images, {report.num_empty_images} empty)",
            "objects in the image"),
        "box_sizes.png": histogram(
            sides, np.arange(0, (longest // size_step + 2) * size_step, size_step),
            "box size: sqrt(area) px (COCO: small < 32 <= medium < 96 <= large)",
            "sqrt(area), bin lower edge"),
    }
    paths = []
    for name, image in charts.items():
        write_png(out / name, image)
        paths.append(out / name)
    return paths
