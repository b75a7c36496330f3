"""Exported graphs (ONNX through onnxruntime, TorchScript) against the eager `Detector`.

The tiny test model (4 synthetic categories with ids 1, 3, 7, 10 and 13 keypoints; weights as
initialised, which is what one or two training steps leave them) runs on coco-mini val images
(required in CI; a local run without the shared data uses synthetic val images) and on a blank
image. The score threshold is put in a wide gap of the eager scores, so that float differences
between runtimes cannot move a candidate across it; a second export with a threshold above every
score checks images without detections.
"""
import copy
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from detect.api import Detector
from detect.cli import export as export_cli
from detect.cli import infer as infer_cli
from detect.config import ConfigError, load_config
from detect.data.annotations import CategoryMap
from detect.data.transforms import PAD_VALUE, letterbox_image
from detect.engine.checkpoint import save_checkpoint
from detect.engine.trainer import Trainer
from detect.export.onnx import export_onnx, read_meta
from detect.export.runtime import ExportedDetector
from detect.export.torchscript import export_torchscript
from detect.models.build import build_model
from detect.tensor_files import CheckpointError

NUM_REAL = 4
PER_IMAGE = 60  # about this many (anchor, class) scores per image pass the threshold
SIZE = 64  # the model's input size: small, for a fast test on two CPU cores


@pytest.fixture(scope="module")
def checkpoint(tiny_overrides, module_tmp) -> Path:
    """The training run's checkpoint before its first step, without optimiser state; the tiny
    model at SIZE px."""
    out = module_tmp
    cfg = load_config("configs/demo.yaml", tiny_overrides + [f"data.image_size={SIZE}"])
    state = Trainer(cfg, out, device="cpu", show_progress=False).checkpoint_state()
    save_checkpoint({k: state[k] for k in ("model", "config", "categories", "keypoints")},
                    out / "init.pt")
    return out / "init.pt"


@pytest.fixture(scope="module")
def image_files(request, tiny_synthetic, tmp_path_factory) -> list[Path]:
    """NUM_REAL coco-mini val images. The shared data is required in CI (the `shared_data`
    fixture fails there without it); a local run without it uses synthetic val images with noise
    added (their flat backgrounds give scores too uniform for a threshold gap)."""
    try:
        folder = request.getfixturevalue("shared_data") / "coco-mini" / "val2017"
    except pytest.skip.Exception:  # not in CI, no shared data
        folder = None
    if folder is not None:
        files = sorted(folder.glob("*.jpg"))[:NUM_REAL]
        assert len(files) == NUM_REAL, folder
        return files
    out, rng = tmp_path_factory.mktemp("noisy"), np.random.default_rng(0)
    files = []
    for path in sorted((tiny_synthetic / "val").glob("*.jpg"))[:NUM_REAL]:
        image = cv2.imread(str(path)).astype(np.int16) + rng.integers(-40, 41, (1, 1, 1))
        image += rng.integers(-25, 26, image.shape)
        cv2.imwrite(str(out / path.name), image.clip(0, 255).astype(np.uint8))
        files.append(out / path.name)
    return files


@pytest.fixture(scope="module")
def images(image_files) -> list[np.ndarray]:
    """NUM_REAL real BGR images, then a blank one."""
    return [cv2.imread(str(p)) for p in image_files] + [np.full((90, 160, 3), PAD_VALUE, np.uint8)]


def letterbox_batch(images: list[np.ndarray], size: int) -> torch.Tensor:
    """BGR images -> [B, 3, size, size] uint8 RGB, as `Detector.predict` feeds the model."""
    out = [letterbox_image(im[..., ::-1].copy(), size).image for im in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def eager(checkpoint, images) -> Detector:
    """The eager detector, its score threshold in the middle of the widest gap of the batch's
    (anchor, class) scores around rank PER_IMAGE per image.

    With random-ish weights scores are dense (~1e-5 apart); onnxruntime's differ from PyTorch's
    by ~1e-7, so no candidate can cross a threshold in a gap wider than 1e-5.
    """
    det = Detector.from_checkpoint(checkpoint)
    with torch.no_grad():
        scores = det.model(letterbox_batch(images, det.image_size)).preds["cls"].sigmoid()
    pooled = scores.flatten().sort(descending=True).values
    n = len(images) * PER_IMAGE
    ranks = torch.arange(n // 2, 2 * n)
    gaps = pooled[ranks] - pooled[ranks + 1]
    assert gaps.max() > 1e-5, "no usable gap in the scores"
    i = int(ranks[gaps.argmax()])
    det.params = replace(det.params, score_thresh=float(pooled[i] + pooled[i + 1]) / 2)
    return det


@pytest.fixture(scope="module")
def expected(eager, images) -> list:
    """The eager predictions of `images`."""
    return eager.predict(images)


@pytest.fixture(scope="module")
def onnx_file(checkpoint, eager, module_tmp) -> Path:
    """tools/export.py --dynamic-batch at the eager threshold."""
    out = module_tmp / "model.onnx"
    thresh = repr(eager.params.score_thresh)
    assert export_cli.main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out),
                            "--dynamic-batch", "--score-thresh", thresh]) == 0
    return out


def assert_same(expected, got) -> None:
    """Same count and labels, boxes within 0.5 px, scores within 1e-3, keypoints likewise."""
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert len(g.scores) == len(e.scores)
        np.testing.assert_array_equal(g.labels, e.labels)
        assert g.names == e.names
        np.testing.assert_allclose(g.boxes, e.boxes, atol=0.5, rtol=0)
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-3, rtol=0)
        np.testing.assert_allclose(g.fields["keypoints"].values[..., :2], e.fields["keypoints"].values[..., :2], atol=0.5, rtol=0)
        np.testing.assert_allclose(g.fields["keypoints"].values[..., 2], e.fields["keypoints"].values[..., 2], atol=1e-3, rtol=0)


def test_onnxruntime_matches_eager(expected, onnx_file, images):
    got = Detector.from_onnx(onnx_file).predict(images, batch_size=8)  # one batch of 5
    assert all(len(p.scores) > 0 for p in expected)
    assert_same(expected, got)


def test_onnx_graph_outputs(onnx_file, images, eager):
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    batch = letterbox_batch(images[:2], eager.image_size).numpy()
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": batch})))
    assert list(out) == ["boxes", "scores", "labels", "num_detections", "keypoints", "masks"]
    d = eager.params.max_detections
    assert out["boxes"].shape == (2, d, 4) and out["scores"].shape == (2, d)
    assert out["labels"].shape == (2, d) and out["keypoints"].shape == (2, d, 13, 3)
    assert out["num_detections"].dtype == np.int64 and out["num_detections"].shape == (2,)
    n = int(out["num_detections"][0])
    assert 0 < n < d
    assert set(out["labels"][0, :n]) <= {1, 3, 7, 10}  # category ids, not contiguous labels
    assert (np.diff(out["scores"][0, :n]) <= 0).all()  # best first
    assert (out["labels"][0, n:] == -1).all()  # padding
    assert not out["boxes"][0, n:].any() and not out["scores"][0, n:].any()
    assert not out["keypoints"][0, n:].any()


def test_onnx_metadata(onnx_file, eager):
    meta = read_meta(onnx_file)
    assert meta.category_ids == [1, 3, 7, 10] and len(meta.class_names) == 4
    assert meta.keypoint_names[0] == "head" and len(meta.keypoint_names) == 13
    assert meta.skeleton and all(len(e) == 2 for e in meta.skeleton)
    assert meta.input_size == SIZE and meta.input_dtype == "uint8"
    assert meta.score_threshold == eager.params.score_thresh
    assert meta.outputs == ["boxes", "scores", "labels", "num_detections", "keypoints", "masks"]
    model = onnx.load(str(onnx_file))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["category_ids"]) == [1, 3, 7, 10]
    assert {"NonMaxSuppression", "TopK", "Conv"} <= {n.op_type for n in model.graph.node}


def test_static_batch_size_and_no_detections(eager, images, tmp_path):
    """Without dynamic batch the graph takes batch 1 (predict loops); another image size; a
    threshold above every score gives no detections, as eager does."""
    path, size = tmp_path / "static.onnx", SIZE + 32
    export_onnx(eager, path, image_size=size, score_thresh=0.5)
    assert not any(m.training for m in eager.model.modules())  # the export left it as it was
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, size, size]
    blank = np.zeros((1, 3, size, size), np.uint8)
    boxes, scores, labels, num, kpts, _ = session.run(None, {"images": blank})
    assert num.tolist() == [0] and (labels == -1).all() and not scores.any() and not kpts.any()
    high = copy.copy(eager)
    high.image_size, high.params = size, replace(eager.params, score_thresh=0.5)
    got = ExportedDetector.from_onnx(path).predict(images[-2:])  # two runs of batch 1
    assert [len(p.scores) for p in got] == [0, 0]
    assert_same(high.predict(images[-1:]), got[-1:])
    assert got[0].boxes.shape == (0, 4) and got[0].fields["keypoints"].values.shape == (0, 13, 3)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_torchscript_matches_eager(eager, expected, images, tmp_path):
    path = tmp_path / "model.pt"
    export_torchscript(eager, path)
    assert_same(expected, ExportedDetector.from_torchscript(path).predict(images))
    module = torch.jit.load(str(path))  # plain torch, any batch size
    boxes, scores, labels, num, kpts, _ = module(letterbox_batch(images[:3], SIZE))
    assert boxes.shape == (3, 100, 4) and kpts.shape == (3, 100, 13, 3) and num.shape == (3,)


def test_infer_cli_onnx_writes_the_eager_predictions(checkpoint, onnx_file, image_files, eager,
                                                     tmp_path):
    common = ["--source", *map(str, image_files[:2]), "--no-vis",
              "--score-thresh", repr(eager.params.score_thresh)]
    assert infer_cli.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "a"),
                           *common]) == 0
    assert infer_cli.main(["--onnx", str(onnx_file), "--out", str(tmp_path / "b"), *common]) == 0
    a = json.loads((tmp_path / "a/predictions.json").read_text())
    b = json.loads((tmp_path / "b/predictions.json").read_text())
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert (x["image_id"], x["category_id"]) == (y["image_id"], y["category_id"])
        np.testing.assert_allclose(x["bbox"], y["bbox"], atol=0.5)
        np.testing.assert_allclose(x["score"], y["score"], atol=1e-3)
        assert ("keypoints" in x) == ("keypoints" in y) == (x["category_id"] == 1)  # persons
        if "keypoints" in x:
            np.testing.assert_allclose(x["keypoints"], y["keypoints"], atol=0.5)


def test_user_errors(checkpoint, onnx_file, tmp_path, capsys):
    det = Detector.from_onnx(onnx_file)
    det.params = replace(det.params, score_thresh=0.0)
    with pytest.raises(ConfigError, match="below the exported"):
        det.predict(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(CheckpointError, match="not found"):
        Detector.from_onnx(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        Detector.from_onnx(tmp_path / "bad.onnx")
    capsys.readouterr()
    assert export_cli.main(["--checkpoint", str(tmp_path / "none.pt"), "--format", "onnx",
                            "--out", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_onnx_predict_video_matches_eager(eager, onnx_file, images, tmp_path):
    """The same frame loop over onnxruntime: per-frame records as the eager model's."""
    path = tmp_path / "clip.avi"
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (w, h))
    for im in images[:3]:
        writer.write(cv2.resize(im, (w, h)))
    writer.release()
    ours = [fp.prediction for fp in eager.predict_video(path, batch_size=2)]
    got = [fp.prediction for fp in Detector.from_onnx(onnx_file).predict_video(path, batch_size=2)]
    assert len(ours) == 3
    assert_same(ours, got)
    rc = infer_cli.main(["--onnx", str(onnx_file), "--source", str(path), "--out", str(tmp_path),
                         "--quiet", "--score-thresh", repr(eager.params.score_thresh)])
    assert rc == 0
    lines = (tmp_path / "clip.jsonl").read_text().splitlines()
    assert [len(json.loads(x)["detections"]) for x in lines] == [len(p.scores) for p in ours]


def test_onnxruntime_fuses_the_tf_same_padding_into_the_convolutions(tmp_path):
    """The light (EfficientNet-Lite0) backbone's strided convolutions pad asymmetrically (TF
    "SAME"): exported as Pad nodes that ONNX Runtime folds into the convolution after them (a Pad
    left in the optimised graph made the light model's run 1.3x slower, docs/BENCHMARKS.md)."""
    def pads_before_convs(model: onnx.ModelProto) -> int:
        feeds = {i: n.op_type for n in model.graph.node for i in n.input}
        return sum(n.op_type == "Pad" and feeds.get(n.output[0]) == "Conv" for n in model.graph.node)

    cfg = load_config("configs/light_lite0_coco.yaml", ["model.backbone.weights=null"])
    det = Detector(build_model(cfg.model, 2), cfg, CategoryMap((1, 2), ("a", "b")))
    export_onnx(det, tmp_path / "light.onnx", image_size=64)
    assert pads_before_convs(onnx.load(str(tmp_path / "light.onnx"))) == 5  # stem, 4 blocks
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(tmp_path / "light.onnx"), options, providers=["CPUExecutionProvider"])
    assert pads_before_convs(onnx.load(str(tmp_path / "optimised.onnx"))) == 0
