"""tools/convert.py: convert Pascal VOC or YOLO labels to COCO, and COCO to YOLO.

    python tools/convert.py voc2coco --xml-dir DIR [--images DIR] --out coco.json [--classes a,b,c]
    python tools/convert.py yolo2coco --labels DIR --images DIR --classes classes.txt --out coco.json
    python tools/convert.py coco2yolo --annotations JSON [JSON ...] --out DIR [--segments]

YOLO labels are box lines ``class cx cy w h`` or, Ultralytics' segmentation labels, polygon lines
``class x1 y1 ... xn yn``. yolo2coco reads both (a polygon becomes the COCO segmentation, its tight
box and its pixel area); coco2yolo writes box lines, or with ``--segments`` a polygon line for each
object with a segmentation (see `detect.formats.yolo`).

Conventions are in `detect.formats.voc` and `detect.formats.yolo`. Every record that is not
converted is counted by reason, with the first few named; the exit status is 0 unless nothing was
converted (1). Malformed input ends in one line ``error: <file>: <record>: <problem>``, status 2.
Outputs are written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detect.cli.common import user_errors
from detect.data.annotations import DatasetError
from detect.io import atomic_write_text
from detect.formats import DropLog, coco_to_yolo, voc_to_coco, write_yolo, yolo_to_coco


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Convert detection labels between formats.")
    sub = p.add_subparsers(dest="command", required=True)
    voc = sub.add_parser("voc2coco", help="Pascal VOC XML -> COCO JSON")
    voc.add_argument("--xml-dir", type=Path, required=True, help="folder of VOC .xml files")
    voc.add_argument("--images", type=Path, help="image folder (sizes when <size> is missing)")
    voc.add_argument("--classes", help="comma-separated class names: ids 1..C in this order "
                     "(default: sorted names found); objects of other classes are dropped")
    voc.add_argument("--out", type=Path, required=True)
    yolo = sub.add_parser("yolo2coco", help="YOLO txt labels -> COCO JSON",
                          description="Box lines 'class cx cy w h' and polygon lines 'class x1 "
                          "y1 ... xn yn' (Ultralytics segmentation labels, normalised) are both "
                          "read, also mixed in one file; a polygon becomes the segmentation, its "
                          "tight box and its pixel area. Pose lines are not read.")
    yolo.add_argument("--labels", type=Path, required=True, help="folder of <image stem>.txt")
    yolo.add_argument("--images", type=Path, required=True)
    yolo.add_argument("--classes", type=Path, required=True, help="class list, one per line")
    yolo.add_argument("--out", type=Path, required=True)
    coco = sub.add_parser("coco2yolo", help="COCO JSON -> YOLO txt labels + classes.txt")
    coco.add_argument("--annotations", type=Path, nargs="+", required=True,
                      help="COCO file(s), merged by id")
    coco.add_argument("--out", type=Path, required=True, help="output folder")
    coco.add_argument("--segments", action="store_true",
                      help="Ultralytics segmentation labels: an object with a segmentation is "
                      "written as a polygon line (its largest polygon, or the outline of its RLE "
                      "mask's largest part); objects without one keep their box line, noted "
                      "since Ultralytics reads all lines of a file with a polygon as polygons "
                      "(default: box lines only, YOLO detection labels)")
    return p.parse_args(argv)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "coco2yolo":
        return _coco_to_yolo(args)
    coco, log, notes = _read_as_coco(args)
    kept = len(coco["annotations"])
    crowd = sum(a["iscrowd"] for a in coco["annotations"])
    masks = sum("segmentation" in a for a in coco["annotations"])
    summary = (f"{len(coco['images'])} images, {kept} annotations ({crowd} iscrowd, {masks} with "
               f"a segmentation), {len(coco['categories'])} categories")
    if not _report(log, notes, bool(coco["images"]) and (kept > 0 or not log.total), summary):
        return 1
    atomic_write_text(args.out, json.dumps(coco))
    print(f"wrote {args.out}: {summary}")
    return 0


def _coco_to_yolo(args: argparse.Namespace) -> int:
    labels, log, notes = coco_to_yolo(args.annotations, segments=args.segments)
    kept = sum(text.count("\n") for text in labels.files.values())
    summary = (f"{len(labels.files)} label files, {kept} objects ({labels.polygons} as polygons), "
               f"{len(labels.classes)} classes")
    if not _report(log, notes, bool(labels.files) and (kept > 0 or not log.total), summary):
        return 1
    write_yolo(labels, args.out)
    print(f"wrote {args.out}: {summary}")
    return 0


def _read_as_coco(args: argparse.Namespace) -> tuple[dict, DropLog, list[str]]:
    if args.command == "voc2coco":
        xml_dir = _folder(args.xml_dir)
        xml_paths = sorted(xml_dir.glob("*.xml"))
        if not xml_paths:
            raise DatasetError(f"{xml_dir}: no .xml files")
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        images = _folder(args.images) if args.images is not None else None
        coco, log = voc_to_coco(xml_paths, images, classes)
        return coco, log, []
    return yolo_to_coco(_folder(args.labels), _folder(args.images), args.classes)


def _folder(path: Path) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: folder not found")
    return path


def _report(log: DropLog, notes: list[str], converted: bool, summary: str) -> bool:
    """Print what was dropped and noted; False (with an error line) when nothing converted."""
    for line in log.lines() + [f"note: {n}" for n in notes]:
        print(line)
    if not converted:
        print(f"error: nothing converted ({summary}); nothing written", file=sys.stderr)
    return converted
