"""tools/export.py: a checkpoint -> an ONNX or TorchScript graph with decoding and
NMS inside (see docs/EXPORT.md).

    python tools/export.py --checkpoint CKPT --format onnx|torchscript --out FILE
        [--dynamic-batch] [--image-size S] [--score-thresh T] [--input-dtype uint8|float32]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from detect.cli.common import user_errors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export a trained detector to ONNX or TorchScript.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="ONNX: any batch size (default: batch 1); TorchScript always takes any")
    p.add_argument("--image-size", type=int, default=None,
                   help="input side S (default: the config's data.image_size)")
    p.add_argument("--score-thresh", type=float, default=None,
                   help="built into the graph (default: the config's postprocess.score_thresh)")
    p.add_argument("--input-dtype", choices=("uint8", "float32"), default="uint8")
    return p.parse_args(argv)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from detect.api import Detector
    det = Detector.from_checkpoint(args.checkpoint, device="cpu")
    common = dict(image_size=args.image_size, input_dtype=args.input_dtype,
                  score_thresh=args.score_thresh)
    if args.format == "onnx":
        from detect.export.onnx import export_onnx
        meta = export_onnx(det, args.out, dynamic_batch=args.dynamic_batch, **common)
    else:
        from detect.export.torchscript import export_torchscript
        meta = export_torchscript(det, args.out, **common)
    batch = "B" if args.dynamic_batch or args.format == "torchscript" else "1"
    size = Path(args.out).stat().st_size / 2**20
    print(f"{args.format}: {args.out} ({size:.1f} MiB); images [{batch}, 3, {meta.input_size}, "
          f"{meta.input_size}] {meta.input_dtype} -> {', '.join(meta.outputs)} "
          f"(up to {meta.max_detections} detections, score > {meta.score_threshold:g}, "
          f"{len(meta.class_names)} classes, {len(meta.keypoint_names)} keypoints)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
