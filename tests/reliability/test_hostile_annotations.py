"""Hostile annotations: training goes on with what is usable and says what it dropped.

Structural errors (unknown ids, duplicate ids, keypoint lists of the wrong length, escaping file
names) and degenerate boxes have unit tests in tests/data/test_dataset.py; here: what they were
missing, and training end to end on such data.
"""
import json
import math

import numpy as np
import torch

from reliability_helpers import default_objects, make_trainer, write_dataset
from detect.data.annotations import load_annotations
from detect.data.build import build_dataset
from detect.config import load_config


def person(bbox, keypoints, **kw):
    return {"category_id": 5, "bbox": bbox, "keypoints": keypoints, "iscrowd": 0, **kw}


def test_missing_iscrowd_means_an_ordinary_object(tmp_path):
    data = write_dataset(tmp_path, [[{"category_id": 2, "bbox": [4, 4, 10, 10]},
                                     {"category_id": 2, "bbox": [30, 30, 10, 10], "iscrowd": 1}]])
    rec = load_annotations([str(data["annotations"])]).images[0]
    np.testing.assert_allclose(rec.boxes, [[4, 4, 14, 14]])
    np.testing.assert_allclose(rec.ignore_boxes, [[30, 30, 40, 40]])


def test_non_contiguous_category_ids_become_contiguous_labels(tmp_path):
    data = write_dataset(tmp_path, [default_objects(0)])
    a = load_annotations([str(data["annotations"])])
    assert a.categories.ids == (2, 5) and a.images[0].labels.tolist() == [0, 1]
    assert [a.categories.category_id(i) for i in range(2)] == [2, 5]


def test_keypoints_outside_the_image_or_not_finite_become_unlabelled(tmp_path):
    kpts = [70, 30, 2,  # x > width
            30, -1, 1,  # y < 0
            35, 30, 2]  # inside (third keypoint of three; the category has two)
    data = write_dataset(tmp_path, [[person([30, 20, 20, 30], kpts[:6]),
                                     person([10, 10, 20, 30], [12, 14, 2, 16, 18, 1])]])
    raw = json.loads(data["annotations"].read_text())
    raw["annotations"][1]["keypoints"][0] = float("nan")
    data["annotations"].write_text(json.dumps(raw))  # NaN is written as a bare NaN token
    rec = load_annotations([str(data["annotations"])]).images[0]
    np.testing.assert_array_equal(rec.keypoints[0], np.zeros((2, 3)))
    np.testing.assert_array_equal(rec.keypoints[1], [[0, 0, 0], [16, 18, 1]])


def _losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if "loss" in x]


def test_images_without_objects_or_with_only_crowds_train_with_zero_box_and_keypoint_loss(
        tiny_model, tmp_path):
    crowd = {"category_id": 5, "bbox": [10, 10, 40, 40], "iscrowd": 1}
    data = write_dataset(tmp_path / "d", [[], [crowd]])
    t = make_trainer(tiny_model, data, tmp_path / "run")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.train()
    (step,) = _losses(tmp_path / "run")
    for k in ("loss_box", "loss_kpt", "loss_kpt_l1", "loss_kpt_vis"):
        assert step[k] == 0.0, k
    assert math.isfinite(step["loss_cls"]) and step["loss_cls"] > 0
    after = t.model.state_dict()
    assert not torch.equal(before["heads.cls.predictor.bias"], after["heads.cls.predictor.bias"])


def test_training_on_a_dataset_with_every_annotation_problem(tiny_model, tmp_path, capsys):
    """Degenerate boxes are dropped and the count is printed; partial boxes are clipped; a
    person whose keypoints are all unlabelled trains boxes only; training runs normally."""
    hostile = [
        {"category_id": 2, "bbox": [-5, -5, 20, 20]},  # partly outside: clipped (no iscrowd)
        {"category_id": 2, "bbox": [100, 100, 5, 5], "iscrowd": 0},  # fully outside
        {"category_id": 2, "bbox": [4, 4, 0, 5], "iscrowd": 0},  # zero width
        {"category_id": 2, "bbox": [4, 4, -3, 5], "iscrowd": 0},  # negative width
        {"category_id": 2, "bbox": [4, 4, float("nan"), 5], "iscrowd": 0},
        {"category_id": 2, "bbox": [], "iscrowd": 0},
        person([30, 20, 20, 30], [0, 0, 0, 0, 0, 0]),  # keypoints all unlabelled
        person([20, 30, 30, 40], [80, 10, 2, 25, 40, 2]),  # one keypoint outside the image
    ]
    data = write_dataset(tmp_path / "d", [hostile, [], default_objects(1), default_objects(2)])
    cfg = load_config("configs/demo.yaml", [
        f"data.train.images={data['images']}", f"data.train.annotations=[{data['annotations']}]"])
    rec = build_dataset(cfg.data, cfg.data.train, train=False).ann.images[0]
    np.testing.assert_allclose(rec.boxes[0], [0, 0, 15, 15])
    assert len(rec.boxes) == 3 and (rec.keypoints[1, :, 2] == 0).all()
    assert rec.keypoints[2, :, 2].tolist() == [0, 2]
    assert ("warning: data.train: dropped 5 box(es): 1 bbox outside the image, 1 empty bbox, "
            "1 non-finite bbox, 2 non-positive bbox width/height") in capsys.readouterr().out
    make_trainer(tiny_model, data, tmp_path / "run", "train.batch_size=4").train()
    (step,) = _losses(tmp_path / "run")
    assert all(math.isfinite(v) for k, v in step.items() if k.startswith("loss"))
    assert step["loss_box"] > 0 and step["loss_kpt"] > 0
