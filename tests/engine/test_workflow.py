"""The user workflow: train on real data, reload, predict, infer over folders, evaluate."""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_convert, box_iou

from detect.api import Detector
from detect.cli import eval as eval_cli
from detect.cli import infer as infer_cli
from detect.config import load_config
from detect.engine.checkpoint import load_checkpoint, save_checkpoint
from detect.engine.trainer import Trainer
from detect.evaluation.coco_eval import BBOX_STATS, KEYPOINT_STATS


def cocoeval_stats(gt: dict, preds: list[dict], iou_type: str, sigmas=None) -> list[float]:
    """Plain pycocotools: COCOeval's summary stats of ``preds`` against ``gt``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes([dict(p) for p in preds]), iou_type)
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.array(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def accuracy_on_matched(gt: dict, preds: list[dict]) -> tuple[float, int]:
    """The ``classification`` metric as defined in detect/evaluation/classification.py, with
    torchvision's IoU: per image, predictions by descending score each take the unmatched
    non-crowd GT box of highest IoU, if >= 0.5; -> (share of pairs of the same class, pairs)."""
    correct = matched = 0
    for image in gt["images"]:
        gts = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        mine = sorted((p for p in preds if p["image_id"] == image["id"]), key=lambda p: -p["score"])
        if not gts or not mine:
            continue
        xyxy = [box_convert(torch.tensor([x["bbox"] for x in xs], dtype=torch.float64), "xywh",
                            "xyxy") for xs in (mine, gts)]
        taken = torch.zeros(len(gts), dtype=torch.bool)
        for pred, row in zip(mine, box_iou(*xyxy)):  # row: [G]
            free = row.masked_fill(taken, -1.0)
            best = int(free.argmax())
            if free[best] >= 0.5:
                taken[best] = True
                matched += 1
                correct += pred["category_id"] == gts[best]["category_id"]
    return correct / matched, matched


@pytest.fixture(scope="module")
def coco_mini_run(coco_mini, tiny_model, module_tmp):
    """A tiny model trained 3 steps on coco-mini train (instances + person keypoints merged)."""
    out = module_tmp
    cfg = load_config("configs/light_lite0_coco.yaml", [
        f"data.train.images={coco_mini['train_images']}",
        f"data.train.annotations=[{coco_mini['train_instances']},{coco_mini['train_keypoints']}]",
        f"data.val.images={coco_mini['val_images']}",
        f"data.val.annotations=[{coco_mini['val_instances']},{coco_mini['val_keypoints']}]",
        "data.image_size=128", "train.max_steps=3", "train.batch_size=2", "train.eval_every=0",
        *tiny_model])
    Trainer(cfg, out, device="cpu", show_progress=False).train()
    return out


def test_end_to_end_on_coco_mini(coco_mini_run, coco_mini, tmp_path):
    det = Detector.from_checkpoint(coco_mini_run / "last.pt")
    assert det.categories.num_classes == 80 and det.keypoints.num_keypoints == 17
    img = next(coco_mini["val_images"].glob("*.jpg"))
    pred = det.predict(str(img))
    h, w = cv2.imread(str(img)).shape[:2]
    assert pred.boxes.shape[1] == 4 and pred.fields["keypoints"].values.shape[1:] == (17, 3)
    assert (pred.boxes[:, 2] <= w + 1e-3).all() and (pred.boxes[:, 3] <= h + 1e-3).all()
    assert set(pred.labels.tolist()) <= set(det.categories.ids)
    # the 3-step model scores below the 0.05 threshold: a copy that keeps its top 20 per image
    ckpt = load_checkpoint(coco_mini_run / "last.pt")
    ckpt["config"]["postprocess"].update(score_thresh=0.0, max_detections=20)
    save_checkpoint(ckpt, tmp_path / "all.pt")
    out, saved = tmp_path / "metrics.json", tmp_path / "predictions.json"
    rc = eval_cli.main(["--checkpoint", str(tmp_path / "all.pt"), "--images",
                        str(coco_mini["val_images"]), "--annotations", str(coco_mini["val_instances"]),
                        str(coco_mini["val_keypoints"]), "--out", str(out), "--batch", "4",
                        "--save-predictions", str(saved)])
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert {"bbox", "keypoints", "box_class_agnostic", "classification"} <= set(metrics)
    # the predictions written, evaluated by plain pycocotools and by hand
    preds = json.loads(saved.read_text())
    assert len(preds) == 20 * len(list(coco_mini["val_images"].glob("*.jpg")))
    instances = json.loads(Path(coco_mini["val_instances"]).read_text())
    persons = json.loads(Path(coco_mini["val_keypoints"]).read_text())
    ref = cocoeval_stats(instances, preds, "bbox")
    assert [metrics["bbox"][k] for k in BBOX_STATS] == pytest.approx(ref[:9], abs=1e-12)
    assert metrics["bbox"]["AR100"] > 0  # not all zeros: the comparison means something
    ref = cocoeval_stats(persons, [p for p in preds if p["category_id"] == 1], "keypoints",
                         det.sigmas)  # all 0 for this model (no pose near OKS 0.5): not -1
    assert [metrics["keypoints"][k] for k in KEYPOINT_STATS] == pytest.approx(ref, abs=1e-12)
    one = {**instances, "categories": [{"id": 1, "name": "object"}],
           "annotations": [{**a, "category_id": 1} for a in instances["annotations"]]}
    ref = cocoeval_stats(one, [{**p, "category_id": 1} for p in preds], "bbox")
    agnostic = metrics["box_class_agnostic"]
    assert [agnostic["AP"], agnostic["AP50"]] == pytest.approx(ref[:2], abs=1e-12)
    assert agnostic["AP50"] > 0
    accuracy, matched = accuracy_on_matched(instances, preds)
    assert metrics["classification"] == {"accuracy_on_matched": pytest.approx(accuracy),
                                         "num_matched": matched}
    assert matched > 0


def test_predict_accepts_arrays_and_lists(coco_mini_run, coco_mini):
    det = Detector.from_checkpoint(coco_mini_run / "last.pt")
    img = next(coco_mini["val_images"].glob("*.jpg"))
    bgr = cv2.imread(str(img))
    from_path = det.predict(str(img))
    from_array, again = det.predict([bgr, bgr])
    np.testing.assert_allclose(from_path.boxes, from_array.boxes, atol=1e-3)
    np.testing.assert_allclose(from_array.scores, again.scores)


def test_predictions_map_back_to_original_pixels(tiny_overrides, tmp_path):
    """A 100x200 image letterboxed to 128: a box predicted at transformed (10, 20, 50, 60) is at
    original (10, 20, 50, 60) / 0.64."""
    cfg = load_config("configs/demo.yaml", tiny_overrides + ["train.max_steps=1",
                      "train.eval_every=0"])
    t = Trainer(cfg, tmp_path, device="cpu", show_progress=False)
    det = Detector(t.model, cfg, t.categories, t.kmeta)
    from detect.structures import Detections

    def fake_detect(out, sizes, params):
        kp = torch.zeros(1, 13, 3)
        kp[0, :, :2] = torch.tensor([30.0, 40.0])
        return [Detections(torch.tensor([[10.0, 20.0, 50.0, 60.0]]), torch.tensor([0.9]),
                           torch.tensor([0]), {"keypoints": kp})]
    det.model.detect = fake_detect
    pred = det.predict(np.zeros((100, 200, 3), np.uint8))
    np.testing.assert_allclose(pred.boxes, [[10 / 0.64, 20 / 0.64, 50 / 0.64, 60 / 0.64]], rtol=1e-5)
    np.testing.assert_allclose(pred.fields["keypoints"].values[0, 0, :2], [30 / 0.64, 40 / 0.64], rtol=1e-5)
    assert pred.labels.tolist() == [1] and pred.names == ["person"]


def test_infer_on_folder_with_non_image_and_bad_files(coco_mini_run, coco_mini, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    imgs = sorted(coco_mini["val_images"].glob("*.jpg"))[:2]
    for p in imgs:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "notes.txt").write_text("not an image")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    rc = infer_cli.main(["--checkpoint", str(coco_mini_run / "last.pt"), "--source", str(src),
                         "--out", str(out), "--score-thresh", "0.0"])
    assert rc == 0
    preds = json.loads((out / "predictions.json").read_text())
    assert {p["image_id"] for p in preds} == {int(p.stem) for p in imgs}
    assert all(len(p["bbox"]) == 4 for p in preds)
    # keypoints for persons only, the one category of coco-mini that has them
    assert all(len(p.get("keypoints", ())) == (51 if p["category_id"] == 1 else 0) for p in preds)
    assert sorted(x.name for x in (out / "vis").iterdir()) == sorted(p.stem + ".jpg" for p in imgs)
    strict = infer_cli.main(["--checkpoint", str(coco_mini_run / "last.pt"), "--source", str(src),
                             "--out", str(out), "--strict", "--no-vis"])
    assert strict == 1


def test_cli_user_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    r = subprocess.run([sys.executable, "tools/train.py", "--config", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown key 'train.epoch'" in r.stderr
    r = subprocess.run([sys.executable, "tools/infer.py", "--checkpoint", str(tmp_path / "no.pt"),
                        "--source", str(tmp_path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "checkpoint not found" in r.stderr
    assert r.stderr.strip().count("\n") == 0
