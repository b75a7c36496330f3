"""The handedness oracle: swapped poses put back on their side, the gap it reports, and
tools/eval.py --oracle-handedness."""
import json

import pytest

from detect.cli import eval as eval_cli
from detect.evaluation import evaluate
from detect.evaluation.handedness import add_oracle_handedness, with_oracle_handedness

NAMES = ["head", "left_hand", "right_hand"]
SIGMAS = [0.05, 0.05, 0.05]


def _gt() -> dict:
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600,
             "iscrowd": 0, "keypoints": [20, 5, 2, 30, 20, 2, 10, 20, 2], "num_keypoints": 3},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600,
             "iscrowd": 0, "keypoints": [70, 55, 2, 60, 70, 2, 80, 70, 2], "num_keypoints": 3}]
    return {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
            "categories": [{"id": 1, "name": "person", "keypoints": NAMES, "skeleton": []}],
            "annotations": anns}


def _preds() -> list[dict]:
    # the first pose exact, the second with its hands exchanged (facing the other way), a third
    # box far from any object (left as it is)
    return [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "score": 0.9,
             "keypoints": [20, 5, 1, 30, 20, 1, 10, 20, 1]},
            {"image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "score": 0.8,
             "keypoints": [70, 55, 1, 80, 70, 1, 60, 70, 1]},
            {"image_id": 1, "category_id": 1, "bbox": [0, 60, 20, 20], "score": 0.7,
             "keypoints": [5, 65, 1, 15, 70, 1, 5, 70, 1]}]


def test_only_the_mirrored_pose_is_swapped_by_hand() -> None:
    fixed, swapped = with_oracle_handedness(_gt(), _preds(), SIGMAS)
    assert swapped == 1
    assert fixed[0]["keypoints"] == _preds()[0]["keypoints"]
    assert fixed[1]["keypoints"] == [70, 55, 1, 60, 70, 1, 80, 70, 1]
    assert fixed[2] == _preds()[2]
    assert _preds()[1]["keypoints"][3] == 80  # the input is not modified


def test_gap_is_what_the_mirrored_pose_costs() -> None:
    gt, preds = _gt(), _preds()
    metrics = add_oracle_handedness(evaluate(gt, preds, kpt_sigmas=SIGMAS), gt, preds,
                                    kpt_sigmas=SIGMAS)
    assert metrics["keypoints_oracle"]["AP"] == pytest.approx(1.0)
    # The first pose has OKS 1. The mirrored one has its head exact and both hands 20 px off:
    # OKS = (1 + 2 exp(-20^2 / (2 * 1600 * (2 * 0.05)^2))) / 3 = (1 + 2 e^-12.5) / 3 = 0.333,
    # below every OKS threshold (0.5 .. 0.95), as is the far box's. So at each threshold the
    # scores give TP, FP, FP: precision 1 up to recall 1/2, nothing beyond; COCO's 101 recall
    # points 0, 0.01, .., 0.5 (51 of them) have precision 1, the other 50 have 0.
    assert metrics["keypoints"]["AP"] == pytest.approx(51 / 101)
    assert metrics["handedness_gap"]["AP"] == pytest.approx(50 / 101)
    assert metrics["handedness_gap"]["AP"] == pytest.approx(1.0 - metrics["keypoints"]["AP"])
    with pytest.raises(ValueError, match="kpt_sigmas are required"):
        with_oracle_handedness(gt, preds, None)


def test_cli_prints_the_oracle_and_the_gap(tmp_path, capsys) -> None:
    gt_file, pred_file = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_file.write_text(json.dumps(_gt()))
    pred_file.write_text(json.dumps(_preds()))
    args = ["--predictions", str(pred_file), "--annotations", str(gt_file), "--kpt-sigmas",
            *map(str, SIGMAS), "--oracle-handedness"]
    assert eval_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "keypoints_oracle     100.0" in out and "handedness_gap" in out
    assert eval_cli.main(args[:4] + ["--oracle-handedness"]) == 2  # 3 keypoints, no sigmas
    assert "kpt_sigmas are required" in capsys.readouterr().err
