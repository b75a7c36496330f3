"""A head that is not in the package joins every path through the head interface alone.

`AspectHead` below (this file only) regresses each object's log aspect ratio, log(w / h), per
anchor and decodes it for the final detections; it has its own metric, the mean absolute error
of the matched detections. Nothing under ``detect/`` names it: it trains beside the classes,
boxes and keypoints through `Trainer`, appears in `Detector.predict`, in tools/infer.py's
predictions JSON, in tools/eval.py's table, and in the ONNX graph (with eager/ONNX parity).
docs/ARCHITECTURE.md, "Adding a head", walks through it.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from detect.api import Detector
from detect.cli import eval as eval_cli
from detect.cli import infer as infer_cli
from detect.config import load_config
from detect.engine.trainer import Trainer
from detect.heads import InstanceHead, Selected
from detect.models.build import HeadContext
from detect.structures import Matches


def log_aspect(xyxy: Tensor) -> Tensor:
    """[..., 4] boxes -> [...] log(w / h)."""
    wh = (xyxy[..., 2:] - xyxy[..., :2]).clamp(min=1.0)
    return (wh[..., 0] / wh[..., 1]).log()


class AspectHead(InstanceHead):
    """pred [B, A, 1]: the log aspect ratio of the object an anchor matches."""

    name = "aspect"
    geometry = "value"  # a number of the object: nothing to map to original pixels

    def __init__(self, ctx: HeadContext) -> None:
        super().__init__(ctx.channels, ctx.num_anchors, 1, ctx.tower(1))

    def loss(self, pred: Tensor, matches: Matches, extra: Tensor | None = None
             ) -> dict[str, Tensor]:
        pos = matches.positive  # [B, A]
        error = F.smooth_l1_loss(pred[..., 0][pos], log_aspect(matches.boxes)[pos], reduction="sum")
        return {"loss_aspect": error / matches.num_positive}

    def decode_detections(self, pred: Tensor, extra: Tensor | None, sel: Selected) -> Tensor:
        picked = pred.gather(1, sel.anchor_index[..., None])  # [B, N, 1]
        return self.mask_detections(picked.float(), sel.labels)

    def evaluate(self, gt: dict, predictions: list[dict], backend: str,
                 class_names: dict[int, str]) -> dict[str, dict]:
        """Mean |error| of the predictions matched (IoU >= 0.5, best score first) to a box."""
        return {"aspect": {"error": aspect_error(gt, predictions)}}


def aspect_error(gt: dict, predictions: list[dict]) -> float:
    from torchvision.ops import box_convert, box_iou

    errors = []
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd")]
        preds = sorted((p for p in predictions if p["image_id"] == image["id"] and "aspect" in p),
                       key=lambda p: -p["score"])
        if not anns or not preds:
            continue
        boxes = box_convert(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32), "xywh", "xyxy")
        found = box_convert(torch.tensor([p["bbox"] for p in preds], dtype=torch.float32), "xywh", "xyxy")
        iou, free = box_iou(found, boxes), torch.ones(len(anns), dtype=torch.bool)
        for i, p in enumerate(preds):
            j = int(torch.where(free, iou[i], -1.0).argmax())
            if free[j] and iou[i, j] >= 0.5:
                free[j] = False
                errors.append(abs(p["aspect"][0] - float(log_aspect(boxes[j]))))
    return float(np.mean(errors)) if errors else -1.0


@pytest.fixture(scope="module")
def trained(tiny_overrides, module_tmp) -> tuple[Path, dict[str, Tensor]]:
    """(the run directory, the aspect head's weights before training)."""
    out = module_tmp
    cfg = load_config("configs/demo.yaml", tiny_overrides + [
        "train.heads=[cls,box,keypoints,aspect]", "train.max_steps=20", "train.batch_size=4",
        "train.eval_every=0", "train.log_every=5", "train.ema=false",
        "train.loss_weights={aspect: 2.0}"])
    trainer = Trainer(cfg, out, device="cpu", show_progress=False, quiet=True, heads=[AspectHead])
    start = {k: v.clone() for k, v in trainer.model.heads["aspect"].state_dict().items()}
    trainer.train()
    return out, start


@pytest.fixture(scope="module")
def run(trained) -> Path:
    return trained[0]


def test_it_trains_beside_the_other_heads(trained) -> None:
    run, start = trained
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss_aspect" in x]
    assert len(steps) == 4 and {"loss_cls", "loss_box", "loss_kpt"} <= set(steps[0])
    assert all(x["loss_aspect"] > 0 for x in steps)
    assert set(steps[0]["balance_weights"]) == {"cls", "box", "keypoints", "aspect"}
    weights = torch.load(run / "last.pt", weights_only=True)["model"]
    trained_now = {k: weights[f"heads.aspect.{k}"] for k in start}
    assert all(not torch.equal(trained_now[k], start[k]) for k in start)  # every tensor learned
    final = lines[-1]["eval"]
    assert {"bbox", "keypoints", "classification", "aspect"} <= set(final)
    assert 0 <= final["aspect"]["error"] < 1.0


def test_it_is_a_field_of_every_prediction(run: Path, tiny_synthetic: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="last.pt: train.heads names aspect: no head of this "
                                         r"model \(cls, box, keypoints; a head of one's own"):
        Detector.from_checkpoint(run / "last.pt")
    det = Detector.from_checkpoint(run / "last.pt", heads=[AspectHead])
    det.params = replace(det.params, score_thresh=0.2)
    image = sorted((tiny_synthetic / "val").glob("*.jpg"))[0]
    pred = det.predict(str(image))
    assert len(pred.scores) > 0 and set(pred.fields) == {"keypoints", "aspect"}
    aspect = pred.fields["aspect"]
    assert aspect.values.shape == (len(pred.scores), 1) and aspect.present.all()
    boxes = torch.from_numpy(pred.boxes)  # the head learned the boxes' shapes, roughly
    assert np.abs(aspect.values[:, 0] - log_aspect(boxes).numpy()).mean() < 0.5

    assert infer_cli.main(["--checkpoint", str(run / "last.pt"), "--source", str(image),
                           "--out", str(tmp_path), "--no-vis"], heads=[AspectHead]) == 0
    records = json.loads((tmp_path / "predictions.json").read_text())
    assert records and all(len(r["aspect"]) == 1 for r in records)


def test_its_metric_is_a_row_of_the_eval_table(run: Path, tiny_synthetic: Path, capsys) -> None:
    rc = eval_cli.main(["--checkpoint", str(run / "last.pt"), "--images",
                        str(tiny_synthetic / "val"), "--annotations",
                        str(tiny_synthetic / "annotations/val.json"), "--quiet",
                        "--out", str(run / "eval.json")], heads=[AspectHead])
    assert rc == 0
    metrics = json.loads((run / "eval.json").read_text())
    assert 0 <= metrics["aspect"]["error"] < 0.5 and "bbox" in metrics
    rc = eval_cli.main(["--checkpoint", str(run / "last.pt"), "--images",
                        str(tiny_synthetic / "val"), "--annotations",
                        str(tiny_synthetic / "annotations/val.json")], heads=[AspectHead])
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("aspect"))
    assert row.split()[1] == f"{100 * metrics['aspect']['error']:.1f}"


def test_it_is_an_output_of_the_onnx_graph(run: Path, tiny_synthetic: Path, tmp_path: Path) -> None:
    from detect.export.onnx import export_onnx, read_meta

    det = Detector.from_checkpoint(run / "last.pt", heads=[AspectHead])
    meta = export_onnx(det, tmp_path / "model.onnx")
    assert meta.outputs[-1] == "aspect" and read_meta(tmp_path / "model.onnx").fields["aspect"] == {
        "geometry": "value", "category_ids": []}
    exported = Detector.from_onnx(tmp_path / "model.onnx")
    images = [str(p) for p in sorted((tiny_synthetic / "val").glob("*.jpg"))[:2]]
    for e, o in zip(det.predict(images), exported.predict(images)):
        assert len(e.scores) == len(o.scores) > 0
        np.testing.assert_allclose(o.boxes, e.boxes, atol=1e-2)
        np.testing.assert_allclose(o.fields["aspect"].values, e.fields["aspect"].values, atol=1e-4)
