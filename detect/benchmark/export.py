"""The ``onnx`` suite: onnxruntime against eager PyTorch on the CPU, same model, same image.

For the light config (EfficientNet-Lite0, 320 px, 17 keypoints) and RetinaNet R50-FPN (640 px;
320 with ``--quick``): ``Detector.predict`` (eager) against ``Detector.from_onnx(...).predict``
on the same graph exported with `detect.export.onnx`, batch 1, end to end from a BGR uint8 image
(letterbox, network, decoding, NMS, original pixels). Scores follow the ``dense`` policy of
`detect.benchmark.peers` (the most post-processing a real image can cause). ``--threads`` sets
both torch's and onnxruntime's intra-op threads.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from detect.benchmark import peers
from detect.benchmark.common import Options, Row, setup, speed_row, time_interleaved
from detect.benchmark.inference import LIGHT, RETINANET
from detect.export.onnx import export_onnx
from detect.export.runtime import ExportedDetector


def _row(opts: Options, name: str, config: str, size: int, keypoints: int,
         image: np.ndarray) -> Row:
    det = peers.ours(config, size, keypoints, "dense", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(det, path)
        onnx_det = ExportedDetector.from_onnx(path, threads=torch.get_num_threads())  # set by setup()
    a, b = det.predict(image), onnx_det.predict(image)
    times = time_interleaved({"ours": lambda: onnx_det.predict(image),
                              "peer": lambda: det.predict(image)}, opts.rounds(7, 2))
    row = speed_row("onnx", f"{name} {size} onnxruntime vs eager", times,
                    note=f"peer = eager PyTorch; detections eager {len(a.scores)}, "
                         f"onnxruntime {len(b.scores)}")
    row.extra.update(detections_eager=len(a.scores), detections_onnx=len(b.scores))
    return row


def onnx(opts: Options) -> list[Row]:
    """Light config and RetinaNet R50-FPN: eager time / onnxruntime time (> 1: ONNX faster)."""
    if opts.device != "cpu":
        raise ValueError("the onnx suite runs on the CPU only (onnxruntime's CPU provider)")
    setup(opts)
    image = peers.source_image()
    return [_row(opts, "light lite0 kpt17", LIGHT, 320, 17, image),
            _row(opts, "retinanet r50", RETINANET, 320 if opts.quick else 640, 0, image)]
