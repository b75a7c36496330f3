"""YOLO txt labels <-> COCO.

A YOLO dataset is an image folder, a label folder holding ``<image stem>.txt`` at the same
relative path as the image, and a class list (``classes.txt``, one name per line, line ``i`` is
class ``i``). Each label line is ``class cx cy w h`` with the centre and size normalised by the
image width/height (continuous coordinates, so ``x0 = (cx - w/2) * W``). An image without a label
file has no objects.

* YOLO -> COCO: sizes are read from the image headers; category ids are ``1..C`` in class-list
  order; boxes reaching past the image are clipped. Dropped (and counted): lines whose class index
  is out of range, lines that are not 5 values (segments and keypoints are not read), degenerate
  boxes, label files without an image, unreadable images. Values that are not numbers raise
  `DatasetError` naming the file and the line.
* COCO -> YOLO: validated by `load_annotations` (its dropped boxes are counted here too); category
  ids map to ``0..C-1`` in ascending id order, names kept in ``classes.txt``. Crowd regions have no
  YOLO equivalent and are dropped and counted; keypoints are not written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detect.data.annotations import DatasetError, load_annotations
from detect.data.image_io import ImageError, is_image_file, probe_image
from detect.io import atomic_write_text
from detect.formats.coco import CocoBuilder, DropLog, check_class_names, clip_box

CLASSES_FILE = "classes.txt"


def read_class_list(path: str | Path) -> list[str]:
    """Names from a class-list file, one per line (trailing blank lines ignored)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: class list not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the class list ({e})") from None
    names = [ln.strip() for ln in lines]
    while names and not names[-1]:
        names.pop()
    return check_class_names(names, str(path))


def yolo_to_coco(labels_dir: Path, images_dir: Path,
                 classes_file: Path) -> tuple[dict[str, Any], DropLog, list[str]]:
    """(COCO dict, dropped records, notes) of a YOLO dataset; images in sorted path order."""
    classes = read_class_list(classes_file)
    builder = CocoBuilder(classes)
    log = DropLog()
    images = sorted(p.relative_to(images_dir) for p in images_dir.rglob("*")
                    if p.is_file() and is_image_file(p))
    without_labels = 0
    for rel in images:
        label_path = labels_dir / rel.with_suffix(".txt")
        try:
            width, height = probe_image(images_dir / rel)
        except ImageError as e:
            log.add("unreadable image (dropped with its labels)", str(e))
            continue
        image_id = builder.add_image(rel.as_posix(), width, height)
        if label_path.is_file():
            _add_label_file(builder, image_id, label_path, classes, width, height, log)
        else:
            without_labels += 1
    expected = {rel.with_suffix(".txt") for rel in images}
    for p in sorted(labels_dir.rglob("*.txt")):
        if p.relative_to(labels_dir) not in expected and p.resolve() != classes_file.resolve():
            log.add("label file without an image", str(p))
    notes = [f"{without_labels} image(s) without a label file (kept as images without objects)"]
    return builder.to_dict(), log, notes if without_labels else []


def _add_label_file(builder: CocoBuilder, image_id: int, path: Path, classes: list[str],
                    width: int, height: int, log: DropLog) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    for n, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{n}"
        if len(parts) != 5:
            log.add("not 5 values 'class cx cy w h' (segments/keypoints are not read)", where)
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise DatasetError(f"{where}: values must be numbers, got {line.strip()!r}") from None
        label, cx, cy, w, h = values
        if not label.is_integer():
            raise DatasetError(f"{where}: class index must be an integer, got {parts[0]!r}")
        if not 0 <= label < len(classes):
            log.add(f"class index out of range 0..{len(classes) - 1}", f"{where} (class {parts[0]})")
            continue
        box, reason = clip_box((cx - w / 2) * width, (cy - h / 2) * height,
                               (cx + w / 2) * width, (cy + h / 2) * height, width, height)
        if box is None:
            log.add(reason, where)
            continue
        builder.add_box(image_id, classes[int(label)], box)


@dataclass
class YoloLabels:
    """Class names (index = YOLO class) and label-file text by path relative to the output."""

    classes: list[str]
    files: dict[str, str] = field(default_factory=dict)


def coco_to_yolo(paths: list[str] | list[Path]) -> tuple[YoloLabels, DropLog, list[str]]:
    """(labels, dropped records, notes) of merged COCO files; one label file per image."""
    ann = load_annotations([str(p) for p in paths])
    src = ", ".join(str(p) for p in paths)
    log = DropLog()
    for reason, n in ann.dropped.items():
        log.counts[reason] += n  # load_annotations counts these without naming the records
    out = YoloLabels(list(ann.categories.names))
    owner: dict[str, str] = {}
    for rec in ann.images:
        rel = Path(rec.file_name).with_suffix(".txt").as_posix()
        if rel == CLASSES_FILE or rel in owner:
            other = owner.get(rel, "the class list")
            raise DatasetError(f"{src}: image '{rec.file_name}' and {other!r} both map to "
                               f"label file '{rel}'")
        owner[rel] = rec.file_name
        for _ in rec.ignore_boxes:
            log.add("crowd region (iscrowd=1) has no YOLO equivalent", rec.file_name)
        out.files[rel] = "".join(_yolo_line(int(c), b, rec.width, rec.height) + "\n"
                                 for c, b in zip(rec.labels, rec.boxes.astype(float)))
    has_kpts = ann.keypoints is not None and any(
        r.keypoints is not None and (r.keypoints[..., 2] > 0).any() for r in ann.images)
    notes = ["keypoints are not written (YOLO box labels have none)"] if has_kpts else []
    return out, log, notes


def _yolo_line(label: int, box: Any, width: int, height: int) -> str:
    """``class cx cy w h`` normalised. Boxes come from float32 records, so a round trip keeps
    them within 1e-3 px on images up to 16384 px (10 significant digits lose nothing more)."""
    x0, y0, x1, y1 = box
    vals = ((x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height)
    return f"{label} " + " ".join(f"{v:.10g}" for v in vals)


def write_yolo(labels: YoloLabels, out_dir: Path) -> None:
    """Write every label file, then ``classes.txt`` last (its presence marks a finished run);
    each file is written atomically."""
    for rel, text in labels.files.items():
        atomic_write_text(out_dir / rel, text)
    atomic_write_text(out_dir / CLASSES_FILE, "".join(n + "\n" for n in labels.classes))
