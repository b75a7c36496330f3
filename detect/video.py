"""A detector over a video: the per-frame loop that `Detector.predict_video` and
`ExportedDetector.predict_video` share, and the files ``tools/infer.py`` writes for a video
(``<name>.jsonl``, one `frame_record` per line, and the drawn ``<name>.mp4``).

Frames are decoded on a background thread (`FrameReader`) while the network runs on the previous
batch. From a file, batches are full; from a live stream, a batch takes what has arrived (at
least one frame), so latency stays at one network call.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from tqdm import tqdm

from detect.data.video import (Frame, FrameReader, VideoError, VideoInfo, VideoSource,
                               VideoWriter, open_capture)
from detect.records import frame_record

if TYPE_CHECKING:
    from detect.prediction import Prediction


class Predictor(Protocol):
    def predict(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list["Prediction"]:
        ...


@dataclass
class FramePrediction:
    """One frame's ``index`` in the source, ``time_s``, ``image`` [H, W, 3] BGR and prediction."""

    index: int
    time_s: float
    image: np.ndarray
    prediction: "Prediction"

    def record(self) -> dict:
        """The frame's JSON record (one line of the CLI's ``.jsonl``)."""
        return frame_record(self.index, self.time_s, self.prediction)


class VideoPredictions:
    """Iterate for a `FramePrediction` per kept frame. The source is opened on construction
    (`VideoError` if it cannot be); ``info`` describes it. After iteration ``frames`` is the
    number of frames predicted, ``corrupt`` the undecodable frames skipped, ``stalled`` whether a
    stream stopped delivering for ``timeout_s``."""

    def __init__(self, predictor: Predictor, source: VideoSource, batch: int = 8, stride: int = 1,
                 max_frames: int | None = None, timeout_s: float = 5.0,
                 live: bool | None = None) -> None:
        if batch < 1 or stride < 1:
            raise ValueError(f"batch and stride must be >= 1, got {batch} and {stride}")
        capture, self.info = open_capture(source, timeout_s, live)
        self.reader = FrameReader(capture, self.info, stride, max_frames, timeout_s,
                                  queue_size=max(2 * batch, 8))
        self.predictor, self.batch, self.timeout_s = predictor, batch, timeout_s
        self.frames = 0
        self._error: VideoError | None = None

    @property
    def corrupt(self) -> int:
        return self.reader.corrupt

    @property
    def stalled(self) -> bool:
        return self.reader.stalled

    @property
    def expected(self) -> int | None:
        """Frames a file will give (None for a stream without ``max_frames``)."""
        return self.reader.expected

    def __iter__(self) -> Iterator[FramePrediction]:
        try:
            while frames := self._next_batch():
                preds = self.predictor.predict([f.image for f in frames], batch_size=len(frames))
                for f, p in zip(frames, preds):
                    self.frames += 1
                    yield FramePrediction(f.index, f.time_s, f.image, p)
            if self.frames == 0:
                live = self.stalled or self.info.live  # OpenCV's read timeout ends a stream too
                wait = f"no frame within {self.timeout_s:g} s" if live else "no readable frame"
                raise VideoError(f"{self.info.name}: {wait}")
        finally:
            self.reader.close()

    def _next_batch(self) -> list[Frame]:
        """Up to ``batch`` frames: waits for each from a file, takes what is there from a stream.
        A reader error is raised once the frames decoded before it have been handed out."""
        if self._error is not None:
            raise self._error
        frames: list[Frame] = []
        try:
            while len(frames) < self.batch and (not frames or not self.info.live
                                                or self.reader.ready()):
                f = self.reader.get(self.timeout_s)
                if f is None:
                    break
                frames.append(f)
        except VideoError as e:
            if not frames:
                raise
            self._error = e
        return frames

    def notes(self) -> list[str]:
        """What went wrong on the way (for the end-of-run report)."""
        out = []
        if self.corrupt:
            out.append(f"{self.info.name}: {self.corrupt} corrupt frame(s) skipped")
        if self.stalled and self.frames:
            out.append(f"{self.info.name}: no frame for {self.timeout_s:g} s; ended there")
        return out


@dataclass
class VideoSummary:
    """What `save_video_predictions` wrote."""

    frames: int
    seconds: float
    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def save_video_predictions(run: VideoPredictions, jsonl: Path, video: Path | None,
                           draw: Callable[[np.ndarray, "Prediction"], np.ndarray],
                           progress: bool = True) -> VideoSummary:
    """Write ``jsonl`` (a line per frame, flushed as it goes) and, unless None, the drawn ``video``
    at the source's size and frame rate over the stride. Ctrl-C ends the run with both files
    valid (``interrupted`` set). A `VideoError` (no readable frame at all, a decoder failure) is
    raised with the files closed; without a single frame they are removed."""
    fps = run.info.fps / run.reader.stride
    writer = VideoWriter(video, fps, (run.info.width, run.info.height)) if video else None
    summary = VideoSummary(0, 0.0, [jsonl] + ([video] if video else []))
    bar = tqdm(total=run.expected, unit="frame", desc=Path(run.info.name).name,
               disable=not progress, dynamic_ncols=True, leave=False)
    t0 = time.perf_counter()
    try:
        with open(jsonl, "w", encoding="utf-8") as f:
            for fp in run:
                f.write(json.dumps(fp.record()) + "\n")  # whole lines only
                if writer is not None:
                    writer.write(draw(fp.image, fp.prediction))
                bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    except VideoError:  # the files keep the frames before it; none at all: no files left
        _close(bar, writer)
        if run.frames == 0:
            for p in summary.paths:
                p.unlink(missing_ok=True)
        raise
    finally:
        _close(bar, writer)
        summary.frames, summary.seconds = run.frames, time.perf_counter() - t0
    summary.notes = run.notes()
    return summary


def _close(bar: tqdm, writer: VideoWriter | None) -> None:
    bar.close()
    if writer is not None:
        writer.close()


def predict_video(predictor: Predictor, source: VideoSource, batch_size: int = 8, stride: int = 1,
                  max_frames: int | None = None, timeout_s: float = 5.0,
                  live: bool | None = None) -> VideoPredictions:
    """`VideoPredictions` of ``predictor`` over ``source`` (a file, camera index or stream URL;
    ``live`` forces or forbids stream handling, default: camera indices and URLs). Also the
    ``predict_video`` method of `detect.api.Detector` and of the exported-graph detector: iterate
    for per-frame predictions; each item has ``index``, ``time_s``, ``image`` (BGR),
    ``prediction`` and ``record()``, the CLI's ``.jsonl`` line."""
    return VideoPredictions(predictor, source, batch_size, stride, max_frames, timeout_s, live)


__all__ = ["FramePrediction", "VideoPredictions", "VideoSummary", "VideoInfo", "predict_video",
           "save_video_predictions"]
