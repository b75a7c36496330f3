"""Ultralytics YOLOv8n as a peer, run through its own command line in a separate environment.

Ultralytics is AGPL-3.0: this package never imports it. The suite finds its ``yolo`` executable
(``$DETECT_YOLO``, else ``yolo`` on PATH; e.g. a venv made with ``python -m venv .peer-venv &&
.peer-venv/bin/pip install ultralytics onnx onnxruntime onnxslim``), runs it as a subprocess and
reads what it writes (``results.csv``, its printed ``Speed:`` line). Without it the suite prints
why and returns no rows.

Both sides, in turn (``--repeats`` rounds, default 2):

* **train**: coco128 (``$DETECT_SHARED_DATA``) at 320, batch 16, 2 data workers, from scratch
  for YOLOv8n (as a user comparing the two gets it) and from the light config's ImageNet
  backbone for ours, ``EPOCHS`` epochs. Images per second of the epochs after the first and
  before the last (the first starts the workers, the last validates on the YOLO side): ours from
  our ``metrics.jsonl``, the peer's from the elapsed time of ``results.csv``.
* **latency**: the two trained models on the first 40 coco-mini val images (held out), each
  through its own predict call, eager and ONNX (ours also with `Detector.optimize()`): ours
  `Detector.predict` / `ExportedDetector` per array (mean ms after warm-ups on two images and one
  of each shape), the peer's mean of preprocess + inference + postprocess that ``yolo predict``
  prints.
* **pose**: the same training and eager latency for the keypoint models, on coco-mini's person
  keypoints (80 images): ours ``[cls, box, keypoints]``, the peer YOLOv8n-pose from scratch.
* **cli**: wall-clock seconds of one image from the command line, ``tools/infer.py`` against
  ``yolo predict``.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from detect.benchmark.common import Options, Row, shared_data_root

EPOCHS = 4
BATCH = 16
TRAIN_IMAGES = 128  # coco128
IMAGES = 40
SPEED = re.compile(r"Speed: ([\d.]+)ms preprocess, ([\d.]+)ms inference, ([\d.]+)ms postprocess")
REPO = Path(__file__).resolve().parents[2]


def yolo_cli() -> str | None:
    """The peer's ``yolo`` executable: $DETECT_YOLO, else ``yolo`` on PATH; None if neither."""
    path = os.environ.get("DETECT_YOLO") or shutil.which("yolo")
    return path if path and Path(path).is_file() else None


def _run(cmd: list[str], threads: int | None, cwd: Path | None = None) -> str:
    env = dict(os.environ, YOLO_OFFLINE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {' | '.join(tail)}")
    return done.stdout + done.stderr


def yolo_dataset(coco128: Path, out: Path) -> Path:
    """coco128 in Ultralytics' layout (images/train as links, labels/train as box lines written
    by `detect.formats.yolo`) -> its data.yaml."""
    from detect.formats.yolo import CLASSES_FILE, coco_to_yolo, write_yolo

    labels, _, _ = coco_to_yolo([coco128 / "annotations" / "instances_train2017.json"])
    write_yolo(labels, out / "labels" / "train")
    (out / "labels" / "train" / CLASSES_FILE).unlink()
    images = out / "images" / "train"
    images.mkdir(parents=True)
    for f in sorted((coco128 / "train2017").glob("*.jpg")):  # links per file: Ultralytics
        (images / f.name).symlink_to(f.resolve())  # finds labels/ beside the resolved folder
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(labels.classes))
    (out / "data.yaml").write_text(f"path: {out}\ntrain: images/train\nval: images/train\n"
                                   f"names:\n{names}")
    return out / "data.yaml"


def yolo_pose_dataset(images: Path, annotations: Path, out: Path) -> tuple[Path, int]:
    """A COCO person-keypoints split in Ultralytics' pose layout (one class, lines ``0 cx cy w h``
    then ``x y v`` per keypoint, normalised; images linked) -> (its data.yaml, its images)."""
    from detect.data.annotations import load_annotations

    ann = load_annotations([str(annotations)])
    k = ann.keypoints.num_keypoints
    (out / "labels" / "train").mkdir(parents=True)
    (out / "images" / "train").mkdir(parents=True)
    for r in ann.images:
        scale = [r.width, r.height]
        lines = []
        for box, kpts in zip(r.boxes, r.keypoints):
            cx, cy = (box[:2] + box[2:]) / 2 / scale
            w, h = (box[2:] - box[:2]) / scale
            xyv = [f"{x / scale[0]:.6f} {y / scale[1]:.6f} {int(v)}" for x, y, v in kpts]
            lines.append(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f} " + " ".join(xyv))
        name = Path(r.file_name)
        label = out / "labels" / "train" / f"{name.stem}.txt"
        label.write_text("".join(f"{ln}\n" for ln in lines))
        (out / "images" / "train" / name.name).symlink_to((images / name).resolve())
    flip = list(range(k))
    for a, b in ann.keypoints.flip_pairs:
        flip[a], flip[b] = b, a
    (out / "data.yaml").write_text(f"path: {out}\ntrain: images/train\nval: images/train\n"
                                   f"kpt_shape: [{k}, 3]\nflip_idx: {flip}\nnames:\n  0: person\n")
    return out / "data.yaml", len(ann.images)


def peer_train(yolo: str, data_yaml: Path, out: Path, threads: int | None,
               model: str = "yolov8n.yaml", images: int = TRAIN_IMAGES) -> tuple[float, Path]:
    """(images/s of epochs 2..EPOCHS-1, last.pt) of ``model`` (YOLOv8n) trained by ``yolo train``
    on ``images`` images."""
    _run([yolo, "train", f"model={model}", f"data={data_yaml}", "imgsz=320", f"batch={BATCH}",
          "workers=2", f"epochs={EPOCHS}", "device=cpu", "plots=False", "val=False",
          "pretrained=False", "amp=False", "close_mosaic=0", f"project={out}", "name=run",
          "exist_ok=True"], threads)
    with open(out / "run" / "results.csv") as f:
        elapsed = {int(float(r["epoch"])): float(r["time"]) for r in csv.DictReader(f)}
    seconds = elapsed[EPOCHS - 1] - elapsed[1]
    return images * (EPOCHS - 2) / seconds, out / "run" / "weights" / "last.pt"


def ours_train(images: Path, annotations: Path, out: Path, threads: int | None,
               heads: str = "cls, box", count: int = TRAIN_IMAGES) -> tuple[float, Path]:
    """(images/s of epochs 2..EPOCHS-1, last.pt) of the light config trained by tools/train.py
    on ``count`` images."""
    split = f"{{images: {images}, annotations: [{annotations}]}}"
    _run([sys.executable, "-c", "from detect.cli.train import main; raise SystemExit(main())",
          "--config", str(REPO / "configs" / "light_lite0_coco.yaml"), "--out", str(out),
          "--no-progress", "--quiet", f"data.train={split}", f"data.val={split}", "data.workers=2",
          f"train.heads=[{heads}]", f"train.batch_size={BATCH}",
          f"train.max_steps={count // BATCH * EPOCHS}", f"train.log_every={count // BATCH}",
          "train.eval_every=0"], threads, cwd=REPO)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records if "images_per_s" in r][1:EPOCHS - 1]
    return statistics.mean(rates), out / "last.pt"


def peer_latency(yolo: str, weights: Path, images: Path, threads: int | None) -> float:
    """Mean ms per image (pre + inference + post) that ``yolo predict`` prints."""
    text = _run([yolo, "predict", f"model={weights}", f"source={images}", "imgsz=320",
                 "device=cpu", "save=False", "verbose=True"], threads)
    match = SPEED.search(text)
    if match is None:
        raise RuntimeError(f"yolo predict printed no Speed line for {weights}")
    return sum(float(v) for v in match.groups())


def ours_latency(predict, arrays: list) -> float:
    """Mean ms per ``predict(array)`` call after warm-up calls on two images and on one of every
    image shape (`Detector.optimize()` builds a graph per network input shape: about a second
    each, paid once per shape, not per image)."""
    by_shape = {a.shape: a for a in arrays}
    for a in [*arrays[:2], *by_shape.values()]:
        predict(a)
    times = []
    for a in arrays:
        start = time.perf_counter()
        predict(a)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.mean(times)


def cli_seconds(cmd: list[str], threads: int | None) -> float:
    start = time.perf_counter()
    _run(cmd, threads, cwd=REPO)
    return time.perf_counter() - start


def _held_out(folder: Path) -> Path:
    """The first IMAGES coco-mini val images, linked into ``folder``."""
    folder.mkdir()
    for f in sorted((shared_data_root() / "coco-mini" / "val2017").glob("*.jpg"))[:IMAGES]:
        (folder / f.name).symlink_to(f.resolve())
    return folder


def _ratio_row(name: str, ours: list[float], peer: list[float], unit: str, target: float,
               op: str, note: str) -> Row:
    o, p = statistics.median(ours), statistics.median(peer)
    ratio_is = "ours/peer" if unit == "img/s" else "ours/peer time"
    return Row("yolo", name, round(o, 2), round(p, 2), unit, round(o / p, 3), ratio_is, target, op,
               note, {"ours": [round(v, 2) for v in ours], "peer": [round(v, 2) for v in peer]})


def yolo(opts: Options) -> list[Row]:
    """Training throughput, latency (eager, ONNX) and one image from the command line, ours
    against Ultralytics YOLOv8n (module docstring); no rows when the peer is not installed."""
    cli = yolo_cli()
    if cli is None:
        print("yolo: Ultralytics' `yolo` command not found (set DETECT_YOLO or put it on PATH; "
              "see detect/benchmark/yolo.py); suite skipped", file=sys.stderr)
        return []
    coco128 = shared_data_root() / "coco128"
    from detect.api import Detector
    from detect.export.onnx import export_onnx

    rounds = opts.rounds(2, 1)
    mini = shared_data_root() / "coco-mini"
    pose_ann = mini / "annotations" / "person_keypoints_train2017.json"
    got: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_yaml = yolo_dataset(coco128, root / "yolo128")
        pose_yaml, pose_count = yolo_pose_dataset(mini / "train2017", pose_ann, root / "pose")
        images = _held_out(root / "held_out")
        files = sorted(images.iterdir())
        arrays, one = [cv2.imread(str(f)) for f in files], files[0]
        for r in range(rounds):
            ours_ips, ckpt = ours_train(coco128 / "train2017", coco128 / "annotations" /
                                        "instances_train2017.json", root / f"ours{r}", opts.threads)
            peer_ips, weights = peer_train(cli, data_yaml, root / f"peer{r}", opts.threads)
            det = Detector.from_checkpoint(ckpt)
            onnx = root / f"ours{r}.onnx"
            export_onnx(det, onnx)
            exported = Detector.from_onnx(onnx, threads=opts.threads)
            _run([cli, "export", f"model={weights}", "format=onnx", "imgsz=320"], opts.threads)
            values = {
                "train ours": ours_ips, "train peer": peer_ips,
                "eager ours": ours_latency(det.predict, arrays),
                "optimize ours": ours_latency(Detector.from_checkpoint(ckpt).optimize().predict,
                                              arrays),
                "eager peer": peer_latency(cli, weights, images, opts.threads),
                "onnx ours": ours_latency(exported.predict, arrays),
                "onnx peer": peer_latency(cli, weights.with_suffix(".onnx"), images, opts.threads),
                "cli ours": cli_seconds([sys.executable, str(REPO / "tools" / "infer.py"),
                                         "--checkpoint", str(ckpt), "--source", str(one), "--out",
                                         str(root / f"cli{r}"), "--quiet"], opts.threads),
                "cli peer": cli_seconds([cli, "predict", f"model={weights}", f"source={one}",
                                         "imgsz=320", "device=cpu"], opts.threads),
            }
            ours_ips, ckpt = ours_train(mini / "train2017", pose_ann, root / f"ours_pose{r}",
                                        opts.threads, "cls, box, keypoints", pose_count)
            peer_ips, weights = peer_train(cli, pose_yaml, root / f"peer_pose{r}", opts.threads,
                                           "yolov8n-pose.yaml", pose_count)
            values |= {
                "pose train ours": ours_ips, "pose train peer": peer_ips,
                "pose eager ours": ours_latency(Detector.from_checkpoint(ckpt).predict, arrays),
                "pose optimize ours": ours_latency(
                    Detector.from_checkpoint(ckpt).optimize().predict, arrays),
                "pose eager peer": peer_latency(cli, weights, images, opts.threads),
            }
            for k, v in values.items():
                got.setdefault(k, []).append(v)
    epochs = f"{EPOCHS} epochs each; epochs 2-{EPOCHS - 1} timed"
    return [
        _ratio_row("train img/s, boxes, coco128 320 b16", got["train ours"], got["train peer"],
                   "img/s", 1.2, ">=", epochs),
        _ratio_row("latency eager, 40 held-out images", got["eager ours"], got["eager peer"],
                   "ms", 0.8, "<=", "mean per image, each project's own predict"),
        _ratio_row("latency, ours Detector.optimize()", got["optimize ours"], got["eager peer"],
                   "ms", 0.8, "<=", "a frozen TorchScript graph against the peer's eager"),
        _ratio_row("latency ONNX Runtime", got["onnx ours"], got["onnx peer"], "ms", 0.8, "<=",
                   "tools/export.py graph vs `yolo export format=onnx`"),
        _ratio_row("one image from the command line", got["cli ours"], got["cli peer"], "s", 1.0,
                   "<=", "tools/infer.py vs `yolo predict`, wall clock"),
        _ratio_row("train img/s, boxes + keypoints, coco-mini persons", got["pose train ours"],
                   got["pose train peer"], "img/s", 1.2, ">=", f"YOLOv8n-pose; {epochs}"),
        _ratio_row("latency eager, keypoint models", got["pose eager ours"],
                   got["pose eager peer"], "ms", 1.1, "<=", "YOLOv8n-pose"),
        _ratio_row("latency, keypoint model, ours optimize()", got["pose optimize ours"],
                   got["pose eager peer"], "ms", 1.1, "<=", "YOLOv8n-pose eager"),
    ]
