"""The ``video`` suite: frames per second of the light config over a generated 640x360 clip, end
to end (decoding on the reader thread, batches of 8, letterbox, network, decoding, NMS, boxes in
original pixels), against the same predictions on frames decoded beforehand (the network's rate),
and against decoding and predicting one after the other in one thread."""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from detect.benchmark import peers
from detect.benchmark.common import Options, Row, setup, speed_row, time_interleaved
from detect.benchmark.inference import LIGHT
from detect.video import save_video_predictions
from detect.vis import draw_prediction

WIDTH, HEIGHT, FPS, BATCH = 640, 360, 25.0, 8


def write_clip(path: Path, frames: int) -> Path:
    """A 640x360 mp4v clip: the benchmark image panning sideways, so every frame differs."""
    base = cv2.resize(peers.source_image(), (WIDTH + frames * 4, HEIGHT))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for i in range(frames):
        writer.write(np.ascontiguousarray(base[:, 4 * i:4 * i + WIDTH]))
    writer.release()
    return path


def decode(path: Path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames


def video(opts: Options) -> list[Row]:
    setup(opts)
    n = 24 if opts.quick else 48
    det = peers.ours(LIGHT, 320, 17, "prior", opts.device)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", n)
        frames = decode(clip)
        skeleton = det.keypoints.skeleton if det.keypoints else ()

        def files() -> None:  # what tools/infer.py does: .jsonl and the drawn mp4 as well
            run = det.predict_video(clip, BATCH)
            save_video_predictions(run, Path(tmp) / "out.jsonl", Path(tmp) / "out.mp4",
                                   lambda im, p: draw_prediction(im, p, skeleton), progress=False)

        def sequential() -> None:  # decode a batch, then predict it, in one thread
            cap = cv2.VideoCapture(str(clip))
            while batch := [f for ok, f in (cap.read() for _ in range(BATCH)) if ok]:
                det.predict(batch, BATCH)

        times = time_interleaved({"video": lambda: sum(1 for _ in det.predict_video(clip, BATCH)),
                                  "network": lambda: det.predict(frames, BATCH),
                                  "sequential": sequential, "files": files,
                                  "decode": lambda: decode(clip)},
                                 opts.rounds(3, 1), device=opts.device)
    return [_row("predict_video / network only", times, "video", "network", n, 0.9),
            _row("predict_video / decode-then-predict", times, "video", "sequential", n, None),
            _row("infer CLI outputs / network only", times, "files", "network", n, None),
            _row("decoding alone / network only", times, "decode", "network", n, None)]


def _row(name: str, times: dict[str, list[float]], ours: str, peer: str, n: int,
         target: float | None) -> Row:
    row = speed_row("video", f"light 320, 640x360 x{n}: {name}", times, target,
                    ours=ours, peer=peer)
    fps_ours, fps_peer = n / (row.ours / 1e3), n / (row.peer / 1e3)
    row.note = f"{ours} {fps_ours:.1f} frames/s, {peer} {fps_peer:.1f} frames/s (batch {BATCH})"
    row.extra.update(frames=n, fps_ours=round(fps_ours, 2), fps_peer=round(fps_peer, 2))
    return row
