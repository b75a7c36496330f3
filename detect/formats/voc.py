"""Pascal VOC XML -> COCO.

Conventions (the same as detectron2's and mmdetection's VOC loaders):

* VOC corners are 1-based pixel indices, both inclusive. The COCO box is
  ``x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax``, so ``w = xmax - xmin + 1``; converting
  back is ``xmin = x0 + 1, xmax = x1``. A box with ``xmax < xmin`` (or ``ymax < ymin``) is
  dropped; a box reaching past the image is clipped to it.
* ``<difficult>1</difficult>`` objects become ``iscrowd = 1``: ignore regions, never positives and
  never penalised, which is how VOC's own evaluation treats them. ``<truncated>`` is not used.
* Image size comes from ``<size>``; when it is missing or zero, from the image file's header
  (``<filename>`` inside the images folder). An image whose size cannot be found is dropped.
* Category ids are ``1..C`` in the order of ``classes``, or of the sorted names found.

Malformed XML (unparseable, missing ``<filename>``, ``<name>`` or ``<bndbox>``, coordinates that
are not numbers) raises `DatasetError` naming the file and the object.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detect.data.annotations import DatasetError
from detect.data.image_io import ImageError, probe_image, resolve_inside
from detect.formats.coco import CocoBuilder, DropLog, check_class_names, clip_box


@dataclass(frozen=True)
class VocObject:
    name: str
    corners: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax (1-based, inclusive)
    difficult: bool


@dataclass(frozen=True)
class VocFile:
    path: Path
    filename: str
    width: int  # 0 when <size> is absent
    height: int
    objects: tuple[VocObject, ...]


def read_voc_xml(path: str | Path) -> VocFile:
    """Parse one VOC annotation file (see module docstring for what is an error)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetError(f"{path}: not valid XML ({e})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    if root.tag != "annotation":
        raise DatasetError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise DatasetError(f"{path}: missing <filename>")
    size = root.find("size")
    width = _number(size, "width", path, "<size>", default=0) if size is not None else 0
    height = _number(size, "height", path, "<size>", default=0) if size is not None else 0
    objects = tuple(_read_object(obj, path, i) for i, obj in enumerate(root.findall("object")))
    return VocFile(path, filename, int(width), int(height), objects)


def _read_object(obj: ET.Element, path: Path, i: int) -> VocObject:
    where = f"object {i}"
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise DatasetError(f"{path}: {where}: missing <name>")
    box = obj.find("bndbox")
    if box is None:
        raise DatasetError(f"{path}: {where} ({name}): missing <bndbox>")
    where = f"{where} ({name})"
    xmin, ymin, xmax, ymax = (_number(box, k, path, where) for k in ("xmin", "ymin", "xmax", "ymax"))
    difficult = _number(obj, "difficult", path, where, default=0)
    return VocObject(name, (xmin, ymin, xmax, ymax), bool(difficult))


def _number(parent: ET.Element, tag: str, path: Path, where: str,
            default: float | None = None) -> float:
    text = parent.findtext(tag)
    if text is None or not text.strip():
        if default is None:
            raise DatasetError(f"{path}: {where}: missing <{tag}>")
        return default
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{path}: {where}: <{tag}> is not a number: {text.strip()!r}") from None


def voc_to_coco(xml_paths: list[Path], images_dir: Path | None = None,
                classes: list[str] | None = None) -> tuple[dict[str, Any], DropLog]:
    """COCO dict of the VOC files (images in the order given) and the records dropped."""
    files = [read_voc_xml(p) for p in xml_paths]
    if classes is None:
        classes = sorted({o.name for f in files for o in f.objects})
        if not classes:
            raise DatasetError(f"{xml_paths[0].parent if xml_paths else '?'}: no objects in any "
                               "XML file and no --classes given")
    builder = CocoBuilder(check_class_names(classes, "--classes"))
    log = DropLog()
    for f in files:
        _add_file(builder, f, images_dir, log)
    return builder.to_dict(), log


def _add_file(builder: CocoBuilder, f: VocFile, images_dir: Path | None, log: DropLog) -> None:
    width, height, why = _image_size(f, images_dir)
    if not width:
        log.add(f"image dropped: {why}", f"{f.path}")
        for i, obj in enumerate(f.objects):
            log.add("object of a dropped image", f"{f.path}: object {i} ({obj.name})")
        return
    image_id = builder.add_image(f.filename, width, height)
    for i, obj in enumerate(f.objects):
        where = f"{f.path}: object {i} ({obj.name})"
        if obj.name not in builder.category_id:
            log.add("class not in --classes", where)
            continue
        xmin, ymin, xmax, ymax = obj.corners
        box, reason = clip_box(xmin - 1, ymin - 1, xmax, ymax, width, height)
        if box is None:
            log.add(reason, f"{where} [{xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}]")
            continue
        builder.add_box(image_id, obj.name, box, iscrowd=int(obj.difficult))


def _image_size(f: VocFile, images_dir: Path | None) -> tuple[int, int, str]:
    """(width, height, "") from <size> or the image header, else (0, 0, why not)."""
    if f.width > 0 and f.height > 0:
        return f.width, f.height, ""
    if images_dir is None:
        return 0, 0, "no <size> in the XML and no --images folder to read it from"
    try:
        w, h = probe_image(resolve_inside(images_dir, f.filename))
    except ImageError as e:
        return 0, 0, f"no <size> in the XML and {e}"
    return w, h, ""
