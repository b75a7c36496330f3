"""YOLO txt labels <-> COCO: boxes, and Ultralytics' segmentation polygons.

A YOLO dataset is an image folder, a label folder holding ``<image stem>.txt`` at the same
relative path as the image, and a class list (``classes.txt``, one name per line, line ``i`` is
class ``i``). Each label line is a box ``class cx cy w h`` (centre and size normalised by the
image width/height, continuous coordinates, so ``x0 = (cx - w/2) * W``) or a polygon
``class x1 y1 ... xn yn`` (n >= 3 points normalised the same way: Ultralytics' segmentation
labels; 4 values after the class are always a box). An image without a label file has no objects.

* YOLO -> COCO: sizes are read from the image headers; category ids are ``1..C`` in class-list
  order. A box line gives a box (clipped to the image), ``area = w * h`` and no segmentation. A
  polygon line gives ``segmentation = [[x1 * W, y1 * H, ...]]``, its tight box as ``bbox`` and
  its pycocotools area (the pixels it covers) as ``area``; points outside [0, 1] are clipped to it
  (noted and counted). A file may mix both kinds: every line is read as what it is (noted, since
  Ultralytics would read its box lines as polygons). Dropped (and counted, naming file and line):
  lines whose class index is out of range, lines with an odd number of values after the class
  (neither a box nor a polygon; YOLO pose lines ``class cx cy w h px py [v] ...`` are not read),
  polygons of fewer than 3 points or with non-finite values, degenerate boxes and polygons, label
  files without an image, unreadable images. Values that are not numbers raise `DatasetError`
  naming the file and the line. A pose file with 2 values per keypoint (``kpt_shape [K, 2]``)
  looks like polygons to this reader, as it does to Ultralytics without its dataset YAML.
* COCO -> YOLO: validated by `load_annotations` (its dropped boxes are counted here too); category
  ids map to ``0..C-1`` in ascending id order, names kept in ``classes.txt``. Crowd regions have no
  YOLO equivalent and are dropped and counted; keypoints are not written. By default every object
  is a box line (YOLO detection labels). With ``segments`` (``--segments``), an object with a
  segmentation is a polygon line instead: its polygon, the largest when it has several (the other
  parts dropped, noted), or the outline of its RLE mask's largest part along the pixel edges
  (`mask_polygon`, with cv2.findContours; noted): pycocotools rasterises it back to exactly the
  mask's pixels when the mask is one part without holes. Objects without a segmentation keep
  their box line, noted per file, since Ultralytics reads a file holding any polygon line as all
  polygons.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detect.data.annotations import CocoAnnotations, DatasetError, _clean_box, load_annotations
from detect.data.image_io import ImageError, is_image_file, probe_image
from detect.data.notes import NoteLog
from detect.data.segmentation import mask_area
from detect.formats.coco import CocoBuilder, DropLog, check_class_names, clip_box
from detect.formats.yolo_segments import line_problem, polygon_line, polygon_to_write, read_polygon
from detect.io import atomic_write_text

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
    log, noted = DropLog(), NoteLog()
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
            _add_label_file(builder, image_id, label_path, classes, (width, height), log, noted)
        else:
            without_labels += 1
    expected = {rel.with_suffix(".txt") for rel in images}
    for p in sorted(labels_dir.rglob("*.txt")):
        if p.relative_to(labels_dir) not in expected and p.resolve() != classes_file.resolve():
            log.add("label file without an image", str(p))
    notes = [f"{without_labels} image(s) without a label file (kept as images without objects)"]
    return builder.to_dict(), log, (notes if without_labels else []) + noted.lines()


def _add_label_file(builder: CocoBuilder, image_id: int, path: Path, classes: list[str],
                    size: tuple[int, int], log: DropLog, noted: NoteLog) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    kinds = set()
    for n, line in enumerate(lines, start=1):
        if line.split():
            kinds.add(_add_line(builder, image_id, line, f"{path}:{n}", classes, size, log, noted))
    if {"box", "polygon"} <= kinds:
        noted.add("label file(s) mixing box and polygon lines (both read; the objects of box "
                  "lines have no segmentation)", str(path))


def _add_line(builder: CocoBuilder, image_id: int, line: str, where: str, classes: list[str],
              size: tuple[int, int], log: DropLog, noted: NoteLog) -> str | None:
    """Adds one label line's object; its kind ("box", "polygon"), or None when it is dropped."""
    parts = line.split()
    problem = line_problem(len(parts) - 1)
    if problem is not None:
        log.add(problem, where)
        return None
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise DatasetError(f"{where}: values must be numbers, got {line.strip()!r}") from None
    if not values[0].is_integer():
        raise DatasetError(f"{where}: class index must be an integer, got {parts[0]!r}")
    if not 0 <= values[0] < len(classes):
        log.add(f"class index out of range 0..{len(classes) - 1}", f"{where} (class {parts[0]})")
        return None
    name, (width, height) = classes[int(values[0])], size
    if len(values) == 5:
        cx, cy, w, h = values[1:]
        box, reason = clip_box((cx - w / 2) * width, (cy - h / 2) * height,
                               (cx + w / 2) * width, (cy + h / 2) * height, width, height)
        if box is None:
            log.add(reason, where)
            return None
        builder.add_box(image_id, name, box)
        return "box"
    return _add_polygon(builder, image_id, name, values[1:], where, size, log, noted)


def _add_polygon(builder: CocoBuilder, image_id: int, name: str, coords: list[float], where: str,
                 size: tuple[int, int], log: DropLog, noted: NoteLog) -> str | None:
    """A polygon line's object: the polygon, its tight box and its pycocotools area."""
    width, height = size
    polygon, reason, clipped = read_polygon(coords, width, height)
    if polygon is None:
        log.add(reason, where)
        return None
    if clipped:
        noted.add("polygon(s) with points outside [0, 1], clipped to the image", where)
    xs, ys = polygon[0::2], polygon[1::2]
    box, reason = clip_box(min(xs), min(ys), max(xs), max(ys), width, height)
    if box is None:
        log.add(f"polygon without area ({reason})", where)
        return None
    area = mask_area([polygon], height, width)
    if not area:
        noted.add("polygon(s) covering no pixel centre (kept with area 0)", where)
    builder.add_box(image_id, name, box, segmentation=[polygon], area=float(area))
    return "polygon"


@dataclass
class YoloLabels:
    """Class names (index = YOLO class), label-file text by path relative to the output, and how
    many of the lines are polygons."""

    classes: list[str]
    files: dict[str, str] = field(default_factory=dict)
    polygons: int = 0


def coco_to_yolo(paths: list[str] | list[Path],
                 segments: bool = False) -> tuple[YoloLabels, DropLog, list[str]]:
    """(labels, dropped records, notes) of merged COCO files; one label file per image. With
    ``segments``, an object with a segmentation gets a polygon line (`polygon_to_write`)."""
    ann = load_annotations([str(p) for p in paths])
    src = ", ".join(str(p) for p in paths)
    log, noted = DropLog(), NoteLog()
    for reason, n in ann.dropped.items():
        log.counts[reason] += n  # load_annotations counts these without naming the records
    out = YoloLabels(list(ann.categories.names))
    owner: dict[str, str] = {}
    kept = _kept_annotations(ann)
    for rec in ann.images:
        rel = Path(rec.file_name).with_suffix(".txt").as_posix()
        if rel == CLASSES_FILE or rel in owner:
            other = owner.get(rel, "the class list")
            raise DatasetError(f"{src}: image '{rec.file_name}' and {other!r} both map to "
                               f"label file '{rel}'")
        owner[rel] = rec.file_name
        for _ in rec.ignore_boxes:
            log.add("crowd region (iscrowd=1) has no YOLO equivalent", rec.file_name)
        lines, polygons = _label_lines(rec, kept[rec.id], segments, noted)
        if 0 < polygons < len(lines):
            noted.add("label file(s) mixing polygon and box lines (objects without a usable "
                      "segmentation): Ultralytics reads every line of such a file as a polygon, "
                      "so its box lines become wrong boxes", rel)
        out.files[rel] = "".join(line + "\n" for line in lines)
        out.polygons += polygons
    return out, log, _write_notes(ann, kept, segments) + noted.lines()


def _kept_annotations(ann: CocoAnnotations) -> dict[int, list[dict]]:
    """Image id -> the annotation dicts of its records' boxes, in the same order (non-crowd, box
    kept by the same validation), with the segmentation their file has."""
    size = {img["id"]: (img["width"], img["height"]) for img in ann.gt["images"]}
    kept: dict[int, list[dict]] = {image_id: [] for image_id in size}
    for a in ann.gt["annotations"]:
        if not a.get("iscrowd", 0) and _clean_box(a["bbox"], *size[a["image_id"]], "")[0]:
            kept[a["image_id"]].append({**a, "segmentation": ann.file_segmentation(a)})
    return kept


def _label_lines(rec: Any, anns: list[dict], segments: bool,
                 noted: NoteLog) -> tuple[list[str], int]:
    """One line per object of the record (a polygon line or the box line), and the polygons."""
    lines, polygons = [], 0
    for label, box, a in zip(rec.labels, rec.boxes.astype(float), anns, strict=True):
        where = f"annotation id {a['id']} (image {rec.file_name})"
        xy = (polygon_to_write(a.get("segmentation"), rec.width, rec.height, noted, where)
              if segments else None)
        if xy is None:
            lines.append(_yolo_line(int(label), box, rec.width, rec.height))
            continue
        line, clipped = polygon_line(int(label), xy, rec.width, rec.height)
        if clipped:
            noted.add("polygon(s) with points outside the image, clipped to it", where)
        lines.append(line)
        polygons += 1
    return lines, polygons


def _write_notes(ann: CocoAnnotations, kept: dict[int, list[dict]], segments: bool) -> list[str]:
    notes = []
    if ann.keypoints is not None and any(
            r.keypoints is not None and (r.keypoints[..., 2] > 0).any() for r in ann.images):
        notes.append("keypoints are not written (YOLO box and segmentation labels have none)")
    with_mask = sum(a.get("segmentation") not in (None, []) for anns in kept.values() for a in anns)
    if with_mask and not segments:
        notes.append(f"{with_mask} object(s) with a segmentation written as box lines "
                     "(--segments writes YOLO segmentation lines)")
    return notes


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
