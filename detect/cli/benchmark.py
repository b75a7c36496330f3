"""Benchmarks against torchvision and pycocotools from the command line.

    python tools/benchmark.py SUITE [--json OUT] [--threads N] [--quick] [--minutes M]

Suites: infer, infer-floor, keypoints, keypoint-cost, mask-cost, train, eval, data, accuracy, levers, onnx,
video, yolo (Ultralytics YOLOv8n through its own command line; see docs/BENCHMARKS.md). Each runs ours and the peer in this process on the same input and thread
count, prints a table of medians and ratios, and with ``--json`` writes the rows and the
environment. ``--quick`` uses smaller inputs and fewer repeats (a smoke test, rough numbers).
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch comes with the suites, after the arguments are parsed (--help at once)
    from detect.benchmark.common import Options, Row

SUITES = ("infer", "infer-floor", "keypoints", "keypoint-cost", "mask-cost", "train", "eval", "data",
          "accuracy", "levers", "onnx", "video", "yolo")


def run_suite(name: str, opts: Options) -> list[Row]:
    match name:  # imports per suite: eval must not pay for torchvision's detection models
        case "infer" | "infer-floor" | "keypoints" | "keypoint-cost" | "mask-cost":
            from detect.benchmark import inference
            return {"infer": inference.infer, "infer-floor": inference.infer_floor,
                    "keypoints": inference.keypoints, "keypoint-cost": inference.keypoint_cost,
                    "mask-cost": inference.mask_cost}[name](opts)
        case "train" | "data":
            from detect.benchmark import training
            return training.train(opts) if name == "train" else training.data(opts)
        case "eval":
            from detect.benchmark.evaluation import evaluation
            return evaluation(opts)
        case "accuracy":
            from detect.benchmark.accuracy import accuracy
            return accuracy(opts)
        case "onnx":
            from detect.benchmark.export import onnx
            return onnx(opts)
        case "video":
            from detect.benchmark.video import video
            return video(opts)
        case "yolo":
            from detect.benchmark.yolo import yolo
            return yolo(opts)
        case "levers":
            from detect.benchmark.levers import levers
            return levers(opts)
    raise ValueError(f"unknown suite {name!r}; expected one of {', '.join(SUITES)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmarks against torchvision and pycocotools.")
    p.add_argument("suite", choices=SUITES)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="small inputs, few repeats")
    p.add_argument("--repeats", type=int, help="timed rounds (default: per suite)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--minutes", type=float, default=5.0, help="accuracy: training minutes per model")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    from detect.benchmark.common import Options, format_table, write_json

    opts = Options(args.quick, args.threads, args.device, args.minutes, args.repeats)
    rows = run_suite(args.suite, opts)
    print(format_table(rows))
    if args.json:
        write_json(args.json, args.suite, rows, opts)
    return 0
