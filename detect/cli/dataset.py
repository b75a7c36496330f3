"""tools/dataset.py: look at a COCO dataset before training on it.

    python tools/dataset.py report --annotations JSON [JSON ...] --images DIR
        [--plots OUT_DIR] [--json OUT.json]

Prints images, objects per class, objects per image, COCO size ranges, keypoint visibility,
masks (polygon / RLE / none per class, mask areas, objects that will train boxes only), the class
imbalance ratio and every problem found (see `detect.data.report`). ``--plots`` writes PNG
charts, ``--json`` the numbers (both atomically). A dataset that cannot be read at all ends in one
line ``error: <file>: <problem>`` and exit status 2; problems found are reported, status 0.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from detect.cli.common import user_errors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Dataset statistics and problems.")
    sub = p.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="statistics and problems of a COCO dataset")
    report.add_argument("--annotations", type=Path, nargs="+", required=True,
                        help="COCO file(s), merged by id (instances + person_keypoints)")
    report.add_argument("--images", type=Path, required=True, help="image folder")
    report.add_argument("--plots", type=Path, help="write PNG charts into this folder")
    report.add_argument("--json", type=Path, help="write the report as JSON here")
    return p.parse_args(argv)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from detect.data.report import analyse, format_report, save_plots  # after parsing: --help
    from detect.io import atomic_write_text

    report = analyse(args.annotations, args.images)
    print(format_report(report, ", ".join(str(p) for p in args.annotations)))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=1))
        print(f"wrote {args.json}")
    if args.plots is not None:
        for path in save_plots(report, args.plots):
            print(f"wrote {path}")
    return 0
