"""detect-infer / tools/infer.py: run a model on images and videos, write COCO results, per-frame
records and drawings.

    python tools/infer.py --checkpoint CKPT --source PATH [PATH ...] --out DIR
    python tools/infer.py --onnx MODEL.onnx --source PATH [PATH ...] --out DIR   (same outputs)
        [--score-thresh T] [--device cpu|cuda] [--batch N] [--strict] [--no-vis] [--quiet]
        [--stride N] [--max-frames N] [--save-video] [--timeout S]

Sources are image files, video files (any container OpenCV reads), folders of either (not
recursive), globs, camera indices (``0``) and stream URLs (``rtsp://``, ``http://``). Images go
to ``DIR/predictions.json`` (+ drawings in ``DIR/vis/``); a video ``clip.mp4`` to
``DIR/clip.jsonl`` (a line per frame) and the drawn ``DIR/clip.mp4``; a stream to
``DIR/camera0.jsonl`` / ``DIR/stream_<host>_<path>.jsonl`` (+ ``.mp4`` with ``--save-video``).
Other files are skipped with a note; unreadable images and videos are listed with their reason.
Exit status 2 when no source names an image or a video, 1 when nothing could be read (a video
without a readable frame counts as unread), or with ``--strict`` when anything could not; 130 on
Ctrl-C (files written so far are complete and valid). Progress bars (stderr) only on a terminal.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from detect.cli.common import user_errors

if TYPE_CHECKING:  # the CLI imports what it runs after parsing its arguments (--help at once)
    from detect.data.video import VideoSource


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run a trained detector on images and videos.")
    model = p.add_mutually_exclusive_group(required=True)  # --onnx: docs/EXPORT.md
    model.add_argument("--checkpoint")
    model.add_argument("--onnx", help="an ONNX file from tools/export.py, run with onnxruntime")
    p.add_argument("--source", nargs="+", required=True,
                   help="image or video files, folders, globs, camera indices, stream URLs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-thresh", type=float, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8, help="images or frames per network call")
    p.add_argument("--optimize", action="store_true",
                   help="CPU: run the network as a frozen TorchScript graph (about a second to "
                        "build per image shape; pays for folders of images and video)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any image or video could not be read")
    p.add_argument("--no-vis", action="store_true", help="do not write drawings or drawn videos")
    p.add_argument("--vis-thresh", type=float, default=0.3, help="min score drawn")
    p.add_argument("--stride", type=int, default=1, help="video: keep every Nth frame")
    p.add_argument("--max-frames", type=int, default=None, help="video: stop after N kept frames")
    p.add_argument("--save-video", action="store_true",
                   help="streams and cameras: also write the drawn frames as mp4")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="video: seconds to wait for a frame before giving up (streams)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no per-source lines")
    args = p.parse_args(argv)
    if args.batch < 1 or args.stride < 1 or (args.max_frames is not None and args.max_frames < 1):
        p.error("--batch, --stride and --max-frames must be >= 1")
    return args


def collect_sources(sources: list[str]) -> tuple[list[Path], list[VideoSource], list[str]]:
    """(image paths, videos: files, camera indices and stream URLs, notes about skipped files);
    order is stable and de-duplicated."""
    from detect.data.image_io import is_image_file
    from detect.data.video import is_stream, is_video_file

    paths: list[Path] = []
    videos: list[VideoSource] = []
    notes: list[str] = []
    for src in sources:
        if is_stream(src):
            videos.append(int(src) if src.isdigit() else src)
            continue
        for c in _expand(src, notes):
            if is_image_file(c):
                paths.append(c)
            elif is_video_file(c):
                videos.append(c)
            else:
                notes.append(f"{c}: skipped (not an image or video file)")
    return _unique(paths), _unique(videos), notes


def _expand(src: str, notes: list[str]) -> list[Path]:
    p = Path(src)
    if p.is_dir():
        return sorted(x for x in p.iterdir() if x.is_file())
    if p.is_file():
        return [p]
    found = [Path(x) for x in sorted(glob.glob(src)) if Path(x).is_file()]
    if not found:
        notes.append(f"{src}: no such file, folder or glob match")
    return found


def _unique(items: list) -> list:
    seen: set = set()
    return [x for x in items if not (x in seen or seen.add(x))]


@user_errors
def main(argv: list[str] | None = None, heads: Sequence = ()) -> int:
    args = parse_args(argv)
    det = load_detector(args, heads)
    paths, videos, notes = collect_sources(args.source)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if not paths and not videos:
        print(f"error: {' '.join(args.source)}: no image or video to predict on", file=sys.stderr)
        return 2
    from detect.data.video import VideoError, source_name
    from detect.io import atomic_write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bad: list[str] = []
    done = 0
    if paths:
        results, bad_images = run_images(det, paths, args, out)
        atomic_write_text(out / "predictions.json", json.dumps(results))
        done += len(paths) - len(bad_images)
        bad += [f"bad image: {line}" for line in bad_images]
        _say(args, f"{len(paths) - len(bad_images)} image(s), {len(results)} detection(s) -> "
                   f"{out / 'predictions.json'}")
    for source in videos:
        try:
            summary = run_video(det, source, args, out)
        except VideoError as e:
            bad.append(f"bad video: {e}")
            continue
        if summary.frames == 0 and not summary.interrupted:
            bad.append(f"bad video: {source_name(source)}: no frame could be read")
            continue
        done += 1
        if summary.interrupted:
            _report(bad)
            print(f"interrupted after {summary.frames} frame(s); written: "
                  f"{', '.join(map(str, summary.paths))}", file=sys.stderr)
            return 130
    _report(bad)
    return 1 if (bad and (args.strict or not done)) else 0


def load_detector(args: argparse.Namespace, heads: Sequence = ()):
    """The detector to run; ``heads``: builders of heads of the caller's that the checkpoint was
    trained with (`detect.models.build.HeadFactory`)."""
    from detect.api import Detector
    if args.onnx:  # onnxruntime on the CPU
        det = Detector.from_onnx(args.onnx)
    else:
        det = Detector.from_checkpoint(args.checkpoint, device=args.device, heads=heads)
        if args.optimize:
            det.optimize()  # a frozen graph on the CPU (no-op elsewhere)
    if args.score_thresh is not None:
        det.params = replace(det.params, score_thresh=args.score_thresh)
    return det


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.quiet:
        print(line)


def _report(bad: list[str]) -> None:
    for line in bad:
        print(line, file=sys.stderr)


def run_video(det, source: VideoSource, args: argparse.Namespace, out: Path):
    """One video file or stream -> ``out/<name>.jsonl`` (+ the drawn ``out/<name>.mp4``)."""
    from detect.data.video import source_name
    from detect.vis import draw_prediction
    from detect.video import save_video_predictions

    run = det.predict_video(source, args.batch, args.stride, args.max_frames, args.timeout)
    name = source_name(source)
    draw_it = not args.no_vis and (args.save_video or not run.info.live)
    skeleton = det.keypoints.skeleton if det.keypoints else ()
    summary = save_video_predictions(
        run, out / f"{name}.jsonl", out / f"{name}.mp4" if draw_it else None,
        lambda img, pred: draw_prediction(img, pred, skeleton, args.vis_thresh),
        progress=not args.quiet and sys.stderr.isatty())
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    _say(args, f"{run.info.name}: {summary.frames} frame(s) at {summary.fps:.1f} frames/s -> "
               f"{', '.join(map(str, summary.paths))}")
    return summary


def run_images(det, paths: list[Path], args: argparse.Namespace,
               out: Path) -> tuple[list[dict], list[str]]:
    import cv2
    from tqdm import tqdm

    from detect.data.image_io import ImageError, read_image
    from detect.records import image_records
    from detect.vis import draw_prediction

    results: list[dict] = []
    bad: list[str] = []
    skeleton = det.keypoints.skeleton if det.keypoints else ()
    if not args.no_vis:
        (out / "vis").mkdir(exist_ok=True)
    bar = tqdm(total=len(paths), unit="image", disable=args.quiet or not sys.stderr.isatty(),
               leave=False, dynamic_ncols=True)
    for start in range(0, len(paths), args.batch):
        chunk, images = [], []
        for p in paths[start:start + args.batch]:
            try:
                images.append(read_image(p, det.max_pixels)[..., ::-1].copy())
                chunk.append(p)
            except ImageError as e:
                bad.append(str(e))
        bar.update(len(paths[start:start + args.batch]))
        if not images:
            continue
        for p, img, pred in zip(chunk, images, det.predict(images)):
            results += image_records(pred, p.name)
            if not args.no_vis:
                cv2.imwrite(str(out / "vis" / f"{p.stem}.jpg"),
                            draw_prediction(img, pred, skeleton, args.vis_thresh))
    bar.close()
    return results, bad


if __name__ == "__main__":
    raise SystemExit(main())
