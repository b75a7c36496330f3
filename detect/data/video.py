"""Video in and out with OpenCV: sources (files, camera indices, stream URLs), a frame reader that
decodes on a background thread into a bounded queue (so decoding overlaps inference), and a writer.

A source is a file path (any container OpenCV reads), a camera index (``0`` or ``"0"``) or a
stream URL (``rtsp://``, ``http://``, ...). Files know their frame count and rate; a frame's time
is its index over the rate. Streams ("live") have no count; a frame's time is the wall-clock time
since the first frame, and a stream that delivers nothing for ``timeout_s`` ends.
"""
from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# FFmpeg's own messages about undecodable frames: we skip, count and report those frames instead
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg",
                            ".wmv", ".flv", ".ts", ".3gp"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
MAX_CONSECUTIVE_FAILURES = 25  # unreadable frames in a row after which a file is taken as ended

VideoSource = str | Path | int


class VideoError(Exception):
    """A video source that cannot be read, worded as ``<source>: <problem>``."""


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_stream(source: VideoSource) -> bool:
    """A camera index (int or digits) or a stream URL."""
    if isinstance(source, int):
        return True
    s = str(source)
    return s.isdigit() or s.lower().startswith(STREAM_SCHEMES)


def source_name(source: VideoSource) -> str:
    """A file-name stem for a source's outputs: the file's stem, ``camera<N>``, or for a URL
    ``stream_`` + host and path (``rtsp://user:pw@cam:554/live`` -> ``stream_cam_554_live``)."""
    if isinstance(source, int) or str(source).isdigit():
        return f"camera{int(source)}"
    if is_stream(source):
        where = str(source).split("://", 1)[1].rsplit("@", 1)[-1]  # no credentials in file names
        return "stream_" + re.sub(r"[^A-Za-z0-9]+", "_", where).strip("_")[:60]
    return Path(source).stem


@dataclass(frozen=True)
class VideoInfo:
    """What a source says about itself; ``frames`` is None when unknown (streams)."""

    name: str
    width: int
    height: int
    fps: float
    frames: int | None
    live: bool


@dataclass
class Frame:
    """One decoded frame: ``index`` in the source (0-based), ``time_s``, ``image`` [H, W, 3] BGR."""

    index: int
    time_s: float
    image: np.ndarray


def open_capture(source: VideoSource, timeout_s: float = 5.0,
                 live: bool | None = None) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open ``source`` with OpenCV; streams get ``timeout_s`` to open and per read. ``live``
    forces stream handling (None: camera indices and URLs are streams, paths are files)."""
    live = is_stream(source) if live is None else live
    name = str(source)
    if live:
        target = int(source) if str(source).isdigit() else str(source)
        ms = int(timeout_s * 1000)
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(target, cv2.CAP_ANY, timeouts)
    else:
        if not Path(source).is_file():
            raise VideoError(f"{name}: no such file")
        cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise VideoError(f"{name}: OpenCV cannot open it as video"
                         + ("" if live else " (unknown container or codec, or not a video)"))
    fps = cap.get(cv2.CAP_PROP_FPS)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    info = VideoInfo(name, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     fps if 0 < fps < 1000 else 30.0, None if live or count <= 0 else count, live)
    if not live and info.frames is None:
        cap.release()
        raise VideoError(f"{name}: the video has no frames")
    return cap, info


class FrameReader:
    """Frames of an open capture, decoded on a daemon thread into a queue of ``queue_size``.

    Keeps every ``stride``-th frame, at most ``max_frames`` of them. Frames OpenCV fails to decode
    in the middle of a file are skipped and counted in ``corrupt`` (failures at the very end are
    not: containers often over-count their frames). ``stalled`` is set when the source delivered
    nothing for ``timeout_s``. Iterate once; ``close()`` stops the thread and releases the capture.
    """

    def __init__(self, capture: cv2.VideoCapture, info: VideoInfo, stride: int = 1,
                 max_frames: int | None = None, timeout_s: float = 5.0,
                 queue_size: int = 16) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.capture, self.info, self.stride, self.max_frames = capture, info, stride, max_frames
        self.timeout_s = timeout_s
        self.corrupt = 0
        self.stalled = False
        self._ended = False
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._decode, daemon=True, name="frame-reader")
        self._thread.start()

    @property
    def expected(self) -> int | None:
        """How many frames iteration will give when the source holds what it says (files)."""
        if self.info.frames is None:
            return self.max_frames
        n = -(-self.info.frames // self.stride)
        return n if self.max_frames is None else min(n, self.max_frames)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self.get(self.timeout_s)
            if item is None:
                return
            yield item

    def get(self, timeout: float | None) -> Frame | None:
        """The next frame; None at the end (or after ``timeout`` seconds without one: stalled)."""
        if self._ended:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            self.stalled = self._ended = True
            return None
        if item is None:
            self._ended = True
            if self._error is not None:
                raise self._error
        return item

    def ready(self) -> int:
        """Frames decoded and waiting."""
        return self._queue.qsize()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)  # a stream blocked in read() is left to its daemon thread

    # ------------------------------------------------------------------ the decoding thread
    def _decode(self) -> None:
        try:
            self._decode_frames()
        except cv2.error as e:  # handed to the consumer as one line
            self._error = VideoError(f"{self.info.name}: OpenCV failed to decode "
                                     f"({str(e).strip().splitlines()[-1][:160]})")
        except BaseException as e:  # handed to the consumer
            self._error = e
        finally:
            self.capture.release()
            self._put(None)

    def _decode_frames(self) -> None:
        index, kept, failed, t0 = 0, 0, 0, None
        while not self._stop.is_set() and (self.max_frames is None or kept < self.max_frames):
            keep = index % self.stride == 0
            ok, image = self.capture.read() if keep else (self.capture.grab(), None)
            if not ok:
                past_end = self.info.frames is not None and index >= self.info.frames
                if self.info.live or past_end or failed >= MAX_CONSECUTIVE_FAILURES:
                    return
                failed += 1
                index += 1
                continue
            self.corrupt += failed  # failures followed by a good frame were corrupt frames
            failed = 0
            if keep:
                t0 = time.monotonic() if t0 is None else t0
                t = time.monotonic() - t0 if self.info.live else index / self.info.fps
                if not self._put(Frame(index, round(t, 4), image)):
                    return
                kept += 1
            index += 1

    def _put(self, item: Frame | None) -> bool:
        """Block until there is room (False when asked to stop)."""
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._stop.is_set():
                    return False


class VideoWriter:
    """An mp4 (``mp4v``) or other container chosen by suffix, at ``fps`` and ``size`` (w, h)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self._writer = cv2.VideoWriter(str(self.path), fourcc, fps, size)
        if not self._writer.isOpened():
            raise VideoError(f"{self.path}: OpenCV cannot write video here")
        self.size, self.frames = size, 0

    def write(self, image_bgr: np.ndarray) -> None:
        if (image_bgr.shape[1], image_bgr.shape[0]) != self.size:  # a stream changed resolution
            image_bgr = cv2.resize(image_bgr, self.size)
        self._writer.write(image_bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (idempotent)."""
        self._writer.release()
