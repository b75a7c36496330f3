"""detect-infer / tools/infer.py: run a checkpoint on images, write COCO results and drawings.

    python tools/infer.py --checkpoint CKPT --source PATH [PATH ...] --out DIR
    python tools/infer.py --onnx MODEL.onnx --source PATH [PATH ...] --out DIR   (same outputs)
        [--score-thresh T] [--device cpu|cuda] [--batch N] [--strict] [--no-vis]

Sources are image files, folders (not recursive) and globs. Non-image files are skipped with a
note; unreadable images are listed with their reason (exit status 1 with ``--strict``).
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from detect.cli.common import user_errors
from detect.data.image_io import ImageError, is_image_file, read_image
from detect.engine.checkpoint import atomic_write_text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run a trained detector on images.")
    model = p.add_mutually_exclusive_group(required=True)  # --onnx: docs/EXPORT.md
    model.add_argument("--checkpoint")
    model.add_argument("--onnx", help="an ONNX file from tools/export.py, run with onnxruntime")
    p.add_argument("--source", nargs="+", required=True, help="image files, folders or globs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-thresh", type=float, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--optimize", action="store_true",
                   help="CPU: run the network as the fastest of eager and two frozen TorchScript "
                        "graphs, timed on the first batch (pays for folders of images)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any image could not be read")
    p.add_argument("--no-vis", action="store_true", help="do not write drawings")
    p.add_argument("--vis-thresh", type=float, default=0.3, help="min score drawn in vis/")
    return p.parse_args(argv)


def collect_sources(sources: list[str]) -> tuple[list[Path], list[str]]:
    """(image paths, notes about skipped non-image files); order is stable and de-duplicated."""
    paths: list[Path] = []
    notes: list[str] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            candidates = sorted(x for x in p.iterdir() if x.is_file())
        elif p.is_file():
            candidates = [p]
        else:
            candidates = [Path(x) for x in sorted(glob.glob(src)) if Path(x).is_file()]
            if not candidates:
                notes.append(f"{src}: no such file, folder or glob match")
        for c in candidates:
            if is_image_file(c):
                paths.append(c)
            else:
                notes.append(f"{c}: skipped (not an image file)")
    seen: set[Path] = set()
    unique = [x for x in paths if not (x in seen or seen.add(x))]
    return unique, notes


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from detect.api import Detector
    if args.onnx:  # onnxruntime on the CPU
        det = Detector.from_onnx(args.onnx)
    else:
        det = Detector.from_checkpoint(args.checkpoint, device=args.device)
        if args.optimize:
            det.optimize()  # fastest of eager / frozen graphs on the CPU (no-op elsewhere)
    if args.score_thresh is not None:
        det.params = replace(det.params, score_thresh=args.score_thresh)
    paths, notes = collect_sources(args.source)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    out = Path(args.out)
    (out / "vis").mkdir(parents=True, exist_ok=True)
    results, bad = run(det, paths, args, out)
    atomic_write_text(out / "predictions.json", json.dumps(results))
    print(f"{len(paths) - len(bad)} image(s), {len(results)} detection(s) -> {out / 'predictions.json'}")
    for line in bad:
        print(f"bad image: {line}", file=sys.stderr)
    return 1 if (bad and args.strict) else 0


def run(det, paths: list[Path], args: argparse.Namespace, out: Path) -> tuple[list[dict], list[str]]:
    results: list[dict] = []
    bad: list[str] = []
    skeleton = det.keypoints.skeleton if det.keypoints else ()
    for start in range(0, len(paths), args.batch):
        chunk, images = [], []
        for p in paths[start:start + args.batch]:
            try:
                images.append(read_image(p, det.max_pixels)[..., ::-1].copy())
                chunk.append(p)
            except ImageError as e:
                bad.append(str(e))
        if not images:
            continue
        for p, img, pred in zip(chunk, images, det.predict(images)):
            results += to_records(pred, p.name)
            if not args.no_vis:
                keep = pred.scores >= args.vis_thresh
                from detect.vis import draw_detections
                drawn = draw_detections(img, pred.boxes[keep], pred.labels[keep],
                                        [n for n, k in zip(pred.names, keep) if k],
                                        pred.scores[keep],
                                        None if pred.keypoints is None else pred.keypoints[keep],
                                        skeleton)
                cv2.imwrite(str(out / "vis" / f"{p.stem}.jpg"), drawn)
    return results, bad


def to_records(pred, image_name: str) -> list[dict]:
    """COCO results records; ``image_id`` is the file name (no annotation file to take ids from),
    unless the stem is an integer (COCO file names), which is then used."""
    stem = Path(image_name).stem
    image_id: int | str = int(stem) if stem.isdigit() else image_name
    recs = []
    for i in range(len(pred.scores)):
        x0, y0, x1, y1 = (float(v) for v in pred.boxes[i])
        r = {"image_id": image_id, "file_name": image_name, "category_id": int(pred.labels[i]),
             "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
             "score": round(float(pred.scores[i]), 5)}
        if pred.keypoints is not None and pred.has_keypoints[i]:
            r["keypoints"] = [round(float(v), 2) for v in np.asarray(pred.keypoints[i]).reshape(-1)]
        recs.append(r)
    return recs


if __name__ == "__main__":
    raise SystemExit(main())
