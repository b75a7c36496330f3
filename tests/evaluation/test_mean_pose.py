"""The mean-pose floor: hand-computed mean poses, placement in boxes, and the margin reported by
tools/eval.py --mean-pose."""
import json

import numpy as np
import pytest

from detect.cli import eval as eval_cli
from detect.evaluation import evaluate
from detect.evaluation.mean_pose import MeanPose, add_mean_pose, mean_pose, place_mean_pose


def _gt(annotations: list[dict]) -> dict:
    return {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
            "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b"], "skeleton": []},
                           {"id": 2, "name": "ball"}],
            "annotations": annotations}


def _ann(i: int, bbox: list[float], kpts: list[float], cat: int = 1, crowd: int = 0) -> dict:
    x, y, w, h = bbox
    return {"id": i, "image_id": 1, "category_id": cat, "bbox": bbox, "area": w * h,
            "iscrowd": crowd, "keypoints": kpts, "num_keypoints": sum(v > 0 for v in kpts[2::3])}


def test_mean_pose_hand_case() -> None:
    gt = _gt([
        _ann(1, [0, 0, 10, 20], [5, 5, 2, 10, 20, 1]),      # a (0.5, 0.25), b (1, 1)
        _ann(2, [10, 10, 20, 10], [10, 20, 2, 0, 0, 0]),    # a (0, 1), b not labelled
        _ann(3, [0, 0, 10, 10], [9, 9, 2, 9, 9, 2], crowd=1),  # crowd: left out
        {"id": 4, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
    ])
    pose = mean_pose(gt)
    np.testing.assert_allclose(pose.xy, [[0.25, 0.625], [1.0, 1.0]])
    np.testing.assert_allclose(pose.score, [1.0, 0.5])


def test_mean_pose_without_keypoints_is_an_error() -> None:
    with pytest.raises(ValueError, match="no labelled keypoint"):
        mean_pose(_gt([_ann(1, [0, 0, 10, 10], [0, 0, 0, 0, 0, 0])]))


def test_place_in_a_box() -> None:
    pose = MeanPose(np.array([[0.25, 0.5], [1.0, 0.0]]), np.array([1.0, 0.5]))
    assert place_mean_pose(pose, [10, 20, 40, 10]) == [20.0, 25.0, 1.0, 50.0, 20.0, 0.5]


def test_mean_pose_of_a_dataset_of_one_pose_scores_ap_one_and_margin_zero() -> None:
    kpts = [2, 3, 2, 8, 9, 2]
    gt = _gt([_ann(1, [0, 0, 10, 10], kpts), _ann(2, [50, 50, 20, 20],
                                                    [54, 56, 2, 66, 68, 2])])  # same pose, x2
    preds = [{"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9,
              "keypoints": [v + 0.0 for v in a["keypoints"]]} for a in gt["annotations"]]
    metrics = evaluate(gt, preds, kpt_sigmas=[0.05, 0.05])
    out = add_mean_pose(metrics, gt, preds, mean_pose(gt), kpt_sigmas=[0.05, 0.05])
    assert out["keypoints"]["AP"] == pytest.approx(1.0)
    assert out["keypoints_mean_pose"]["AP"] == pytest.approx(1.0)
    assert out["keypoint_margin"]["AP"] == pytest.approx(0.0)


def test_eval_cli_prints_the_floor_and_the_margin(tmp_path, capsys) -> None:
    gt = _gt([_ann(1, [0, 0, 10, 20], [5, 5, 2, 10, 20, 2]),
              _ann(2, [40, 40, 10, 20], [42, 42, 2, 48, 58, 2])])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    exact = [{"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9,
              "keypoints": a["keypoints"]} for a in gt["annotations"]]
    (tmp_path / "pred.json").write_text(json.dumps(exact))
    out = tmp_path / "metrics.json"
    assert eval_cli.main(["--predictions", str(tmp_path / "pred.json"), "--annotations",
                          str(tmp_path / "gt.json"), "--kpt-sigmas", "0.1", "0.1",
                          "--mean-pose", str(tmp_path / "gt.json"), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["keypoints"]["AP"] == pytest.approx(1.0)
    # The two poses differ. In box units a is at (0.5, 0.25) and (0.2, 0.1), b at (1, 1) and
    # (0.8, 0.9): the mean pose a (0.35, 0.175), b (0.9, 0.95), placed in each 10x20 box, is
    # off by (1.5, 1.5) px at a and (1, 1) px at b in both. OKS with area 200, sigma 0.1:
    # (exp(-4.5 / (2 * 200 * 0.2^2)) + exp(-2 / (2 * 200 * 0.2^2))) / 2 = 0.8187 for both
    # persons: matched at the OKS thresholds 0.5 .. 0.8 (7 of 10, AP 1 each), not at 0.85 ..
    # 0.95 (AP 0), so AP = 7 / 10.
    assert metrics["keypoints_mean_pose"]["AP"] == pytest.approx(0.7)
    assert metrics["keypoints_mean_pose"]["AP50"] == pytest.approx(1.0)
    margin = metrics["keypoint_margin"]["AP"]
    assert margin == pytest.approx(0.3)
    assert margin == pytest.approx(1.0 - metrics["keypoints_mean_pose"]["AP"])
    table = capsys.readouterr().out
    assert "keypoints_mean_pose" in table and f"{100 * margin:+.1f}" in table
