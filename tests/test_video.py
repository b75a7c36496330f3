"""Video: reading (background thread, stride, corrupt frames, streams), per-frame predictions equal
to `Detector.predict` on the same frames, and tools/infer.py's .jsonl and drawn video.

The videos are written by OpenCV in the test: 24 frames of 160x96 at 10 frames/s with a moving
rectangle (mp4v in .mp4, MJPEG in .avi so that one frame can be corrupted byte by byte).
"""
import json
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.api import Detector
from detect.cli import infer as infer_cli
from detect.config import load_config
from detect.data.video import (FrameReader, VideoError, VideoInfo, is_stream, open_capture,
                               source_name)
from detect.engine.checkpoint import save_checkpoint
from detect.engine.trainer import Trainer
from detect.records import frame_record

N, W, H, FPS = 24, 160, 96, 10.0


def write_video(path: Path, fourcc: str, n: int = N) -> Path:
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    for i in range(n):
        img = np.full((H, W, 3), 40 + 5 * i, np.uint8)
        cv2.rectangle(img, (10 + 3 * i, 20), (60 + 3 * i, 80), (0, 200, 0), -1)
        cv2.circle(img, (120, 30 + i), 12, (0, 0, 220), -1)
        wr.write(img)
    wr.release()
    return path


def read_all(path: Path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, img = cap.read()
        if not ok:
            return frames
        frames.append(img)


def jsonl(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")  # ends on a complete line
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", "mp4v")


@pytest.fixture(scope="module")
def checkpoint(tiny_overrides, tmp_path_factory) -> Path:
    """The tiny model at 64 px as initialised (4 categories, 13 keypoints)."""
    out = tmp_path_factory.mktemp("video_run")
    cfg = load_config("configs/demo.yaml", tiny_overrides + ["data.image_size=64"])
    state = Trainer(cfg, out, device="cpu", show_progress=False).checkpoint_state()
    save_checkpoint({k: state[k] for k in ("model", "config", "categories", "keypoints")},
                    out / "init.pt")
    return out / "init.pt"


@pytest.fixture(scope="module")
def det(checkpoint) -> Detector:
    d = Detector.from_checkpoint(checkpoint)
    d.params = replace(d.params, score_thresh=0.0, max_detections=5)
    return d


def test_reader_gives_every_frame_with_its_time(clip):
    cap, info = open_capture(clip)
    assert (info.width, info.height, info.fps, info.frames, info.live) == (W, H, FPS, N, False)
    reader = FrameReader(cap, info, stride=1, queue_size=2)  # a small queue: the thread waits
    frames = list(reader)
    expected = read_all(clip)
    assert [f.index for f in frames] == list(range(N)) and reader.corrupt == 0
    assert [f.time_s for f in frames] == [round(i / FPS, 4) for i in range(N)]
    for f, e in zip(frames, expected):
        np.testing.assert_array_equal(f.image, e)


def test_predict_video_equals_predict_on_the_same_frames(det, clip):
    run = det.predict_video(clip, batch_size=4)
    got = [fp.record() for fp in run]
    frames = read_all(clip)
    preds = det.predict(frames, batch_size=4)
    assert len(got) == N == run.frames
    assert got == [frame_record(i, i / FPS, p) for i, p in enumerate(preds)]
    dets = [d for g in got for d in g["detections"]]
    assert {d["category_id"] for d in dets} <= set(det.categories.ids)
    for d in dets:  # keypoints for persons (category 1) only
        person = d["category_id"] == 1
        assert set(d) == ({"category_id", "bbox", "score", "segmentation"}
                          | ({"keypoints"} if person else set()))
        assert len(d.get("keypoints", ())) == (13 * 3 if person else 0)
    assert any(d["category_id"] == 1 for d in dets) and any(d["category_id"] != 1 for d in dets)


def test_stride_and_max_frames(det, clip):
    got = [fp.record()["frame"] for fp in det.predict_video(clip, stride=3, max_frames=5)]
    assert got == [0, 3, 6, 9, 12]
    run = det.predict_video(clip, batch_size=4, stride=5, timeout_s=30)
    assert [fp.index for fp in run] == [0, 5, 10, 15, 20]
    # ended at the end of the file, not by waiting out timeout_s: no wait for a frame timed out
    # (that sets `stalled`) and the reader's thread got to its end and released the capture
    assert not run.stalled and not run.reader.capture.isOpened() and run.notes() == []


def test_infer_cli_writes_jsonl_and_drawn_video(checkpoint, clip, tmp_path):
    det = Detector.from_checkpoint(checkpoint)
    det.params = replace(det.params, score_thresh=0.0)
    out = tmp_path / "out"
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--source", str(clip), "--out", str(out),
                         "--batch", "4", "--score-thresh", "0.0", "--vis-thresh", "0.0"])
    assert rc == 0
    lines = jsonl(out / "clip.jsonl")
    assert lines == [fp.record() for fp in det.predict_video(clip, batch_size=4)]
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (W, H)
    assert cap.get(cv2.CAP_PROP_FPS) == FPS
    drawn = read_all(out / "clip.mp4")
    assert len(drawn) == N
    assert np.abs(drawn[0].astype(int) - read_all(clip)[0]).mean() > 1  # boxes were drawn


def test_infer_cli_stride_max_frames(checkpoint, clip, tmp_path):
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--source", str(clip), "--out",
                         str(tmp_path), "--stride", "2", "--max-frames", "7", "--quiet"])
    assert rc == 0
    assert [r["frame"] for r in jsonl(tmp_path / "clip.jsonl")] == [0, 2, 4, 6, 8, 10, 12]
    assert len(read_all(tmp_path / "clip.mp4")) == 7
    assert cv2.VideoCapture(str(tmp_path / "clip.mp4")).get(cv2.CAP_PROP_FPS) == FPS / 2


def test_corrupt_frame_is_skipped_counted_and_reported(checkpoint, tmp_path, capsys):
    path = write_video(tmp_path / "c.avi", "MJPG")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == N  # one JPEG per frame
    data[starts[10]:starts[10] + 400] = bytes(400)  # frame 10 loses its header
    path.write_bytes(bytes(data))
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--source", str(path), "--out",
                         str(tmp_path / "o"), "--quiet"])
    assert rc == 0
    frames = [r["frame"] for r in jsonl(tmp_path / "o/c.jsonl")]
    assert frames == [i for i in range(N) if i != 10]
    err = capsys.readouterr().err
    assert "c.avi: 1 corrupt frame(s) skipped" in err and "Traceback" not in err
    for s in starts:  # no frame decodes: one line, no outputs
        data[s:s + 400] = bytes(400)
    path.write_bytes(bytes(data))
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--source", str(path), "--out",
                         str(tmp_path / "o2"), "--quiet"])
    assert rc == 1 and capsys.readouterr().err == f"bad video: {path}: no readable frame\n"
    assert list((tmp_path / "o2").iterdir()) == []


def test_unreadable_and_empty_videos_are_one_line_each(checkpoint, clip, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "garbage.mp4").write_bytes(b"not a video" * 50)
    (src / "empty.avi").write_bytes(b"")
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--source", str(src), "--out",
                         str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1  # nothing could be read
    assert sorted(err) == [f"bad video: {src / 'empty.avi'}: OpenCV cannot open it as video "
                           "(unknown container or codec, or not a video)",
                           f"bad video: {src / 'garbage.mp4'}: OpenCV cannot open it as video "
                           "(unknown container or codec, or not a video)"]
    (src / "clip.mp4").write_bytes(clip.read_bytes())  # a folder mixing good and bad: status 0
    cv2.imwrite(str(src / "still.jpg"), read_all(clip)[3])
    assert infer_cli.main(["--checkpoint", str(checkpoint), "--source", str(src), "--out",
                           str(tmp_path / "o"), "--quiet", "--score-thresh", "0.0"]) == 0
    assert len(jsonl(tmp_path / "o/clip.jsonl")) == N
    assert json.loads((tmp_path / "o/predictions.json").read_text())[0]["file_name"] == "still.jpg"
    assert (tmp_path / "o/vis/still.jpg").is_file()
    assert infer_cli.main(["--checkpoint", str(checkpoint), "--source", str(src), "--out",
                           str(tmp_path / "o"), "--strict", "--quiet"]) == 1


def test_interrupt_leaves_valid_files(checkpoint, clip, tmp_path, monkeypatch):
    """Ctrl-C during the third network call: the two batches before it are in both files."""
    calls = {"n": 0}
    real = Detector.predict

    def predict(self, images, batch_size=8):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, images, batch_size)

    monkeypatch.setattr(Detector, "predict", predict)
    rc = infer_cli.main(["--checkpoint", str(checkpoint), "--source", str(clip), "--out",
                         str(tmp_path), "--batch", "4", "--quiet"])
    assert rc == 130
    assert [r["frame"] for r in jsonl(tmp_path / "clip.jsonl")] == list(range(8))
    assert len(read_all(tmp_path / "clip.mp4")) == 8


def test_stream_code_path_on_a_file(det, clip, tmp_path):
    """A file opened as a stream (the camera / URL path): no frame count, wall-clock times,
    batches of what has arrived; the CLI writes only the .jsonl without --save-video."""
    run = det.predict_video(str(clip), batch_size=4, live=True)
    assert run.info.live and run.info.frames is None and run.expected is None
    items = list(run)
    assert [fp.index for fp in items] == list(range(N))
    times = [fp.time_s for fp in items]
    assert times[0] == 0.0 and times == sorted(times)


class _HangingCapture:
    """A stream whose read blocks until the test sets ``unblock`` (60 s at most), then gives
    nothing: the end of a live stream. ``returned`` counts the reads that came back."""

    def __init__(self):
        self.unblock = threading.Event()
        self.returned = 0

    def read(self):
        self.unblock.wait(60)
        self.returned += 1
        return False, None

    def release(self):
        pass


def test_stream_without_frames_times_out(det, monkeypatch):
    info = VideoInfo("rtsp://camera.invalid/live", W, H, 25.0, None, True)
    capture = _HangingCapture()
    monkeypatch.setattr("detect.video.open_capture", lambda *a, **k: (capture, info))
    run = det.predict_video("rtsp://camera.invalid/live", timeout_s=0.3)
    try:
        with pytest.raises(VideoError, match=r"rtsp://camera.invalid/live: no frame within 0.3 s"):
            list(run)
        # the reader's timeout ended the run (`stalled`) while the read was still blocked: not
        # the stream's end, which the same message reports once the read returns after 60 s
        assert run.stalled and capture.returned == 0
    finally:
        capture.unblock.set()  # the reader's thread ends


def test_sources_and_output_names():
    assert is_stream(0) and is_stream("1") and is_stream("rtsp://cam/live")
    assert is_stream("HTTP://cam/video.mjpg") and not is_stream("clip.mp4")
    assert source_name("0") == "camera0" and source_name(Path("a/b/clip.mov")) == "clip"
    assert source_name("rtsp://user:pw@cam.local:554/live/ch1") == "stream_cam_local_554_live_ch1"


class _FailingCapture:
    """Three frames, then an OpenCV error inside read()."""

    def __init__(self):
        self.n = 0

    def read(self):
        self.n += 1
        if self.n > 3:
            raise cv2.error("decoder exploded")
        return True, np.full((H, W, 3), 50 * self.n, np.uint8)

    def release(self):
        pass


def test_decoder_failure_mid_file_keeps_the_frames_before_it(det, monkeypatch, tmp_path):
    from detect.video import save_video_predictions

    info = VideoInfo("broken.mp4", W, H, FPS, 10, False)
    monkeypatch.setattr("detect.video.open_capture", lambda *a, **k: (_FailingCapture(), info))
    run = det.predict_video("broken.mp4", batch_size=2)
    with pytest.raises(VideoError, match=r"^broken.mp4: OpenCV failed to decode \(.*exploded"):
        save_video_predictions(run, tmp_path / "b.jsonl", tmp_path / "b.mp4", lambda im, p: im,
                               progress=False)
    assert [r["frame"] for r in jsonl(tmp_path / "b.jsonl")] == [0, 1, 2]
    assert len(read_all(tmp_path / "b.mp4")) == 3
