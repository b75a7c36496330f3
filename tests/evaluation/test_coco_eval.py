"""detect.evaluation against pycocotools run directly, plus hand-computed tiny cases."""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.evaluation import evaluate, format_table, load_predictions
from detect.evaluation.classification import accuracy_on_matched
from detect.evaluation.coco_eval import AGNOSTIC_STATS, BBOX_STATS, KEYPOINT_STATS

ROOT = Path(__file__).resolve().parents[2]
PERSON = 1
BACKENDS = ("faster", "pycocotools")
# faster_coco_eval computes precision as tp / (tp + fp), pycocotools as tp / (tp + fp + eps):
# they differ by one ulp when tp + fp == 1, so "faster" stats agree to ~1e-16, not bit for bit.
FASTER_ATOL = 1e-12


def noisy_predictions(gt: dict, seed: int = 0) -> list[dict]:
    """GT-derived results: jittered boxes and keypoints, 20% dropped, 150 random false positives."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    preds = []
    for ann in gt["annotations"]:  # crowds included: detections on crowds must be ignored
        if rng.random() < 0.2:
            continue
        box = np.asarray(ann["bbox"], dtype=np.float64)
        box[:2] += rng.normal(0.0, 0.1, 2) * box[2:]
        box[2:] *= np.exp(rng.normal(0.0, 0.1, 2))
        pred = _record(ann["image_id"], ann["category_id"], box, rng)
        if ann["category_id"] == PERSON:
            kpts = np.asarray(ann.get("keypoints", [0] * 51), dtype=np.float64).reshape(17, 3)
            kpts[:, :2] += rng.normal(0.0, 4.0, (17, 2))
            kpts[:, 2] = rng.random(17)
            pred["keypoints"] = kpts.ravel().tolist()
        preds.append(pred)
    for _ in range(150):
        image = gt["images"][int(rng.integers(len(gt["images"])))]
        size = np.array([image["width"], image["height"]], dtype=np.float64)
        box = np.concatenate([rng.random(2) * size * 0.8, rng.random(2) * size * 0.3 + 1])
        pred = _record(image["id"], int(rng.choice(cat_ids)), box, rng)
        if pred["category_id"] == PERSON:
            xy = box[:2] + rng.random((17, 2)) * box[2:]
            pred["keypoints"] = np.column_stack([xy, rng.random(17)]).ravel().tolist()
        preds.append(pred)
    return preds


def _record(image_id: int, category_id: int, box: np.ndarray, rng: np.random.Generator) -> dict:
    score = float(rng.random())
    return {"image_id": image_id, "category_id": category_id, "bbox": box.tolist(), "score": score}


def pycocotools_direct(gt: dict, preds: list[dict], iou_type: str, **params) -> COCOeval:
    """The reference: plain pycocotools on deep copies, ``params`` set on COCOeval.params."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(preds)), iou_type)
        for name, value in params.items():
            setattr(coco_eval.params, name, value)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.fixture(scope="module")
def predictions(val_gt: dict) -> list[dict]:
    return noisy_predictions(val_gt, seed=0)


@pytest.fixture(scope="module")
def expected(val_gt: dict, predictions: list[dict]) -> dict:
    """Metrics from pycocotools directly (keypoints: catIds=[person]; agnostic: useCats=0)."""
    bbox = pycocotools_direct(val_gt, predictions, "bbox")
    keypoints = pycocotools_direct(val_gt, predictions, "keypoints", catIds=[PERSON])
    agnostic = pycocotools_direct(val_gt, predictions, "bbox", useCats=0)
    names = {c["id"]: c["name"] for c in val_gt["categories"]}
    per_class = {}
    for k, cat_id in enumerate(bbox.params.catIds):
        p = bbox.eval["precision"][:, :, k, 0, -1]
        if (p > -1).any():
            per_class[names[cat_id]] = float(np.mean(p[p > -1]))
    return {
        "bbox": {**dict(zip(BBOX_STATS, bbox.stats.tolist())), "per_class": per_class},
        "keypoints": dict(zip(KEYPOINT_STATS, keypoints.stats.tolist())),
        "box_class_agnostic": dict(zip(AGNOSTIC_STATS, agnostic.stats.tolist())),
    }


@pytest.fixture(scope="module")
def evaluated(val_gt: dict, predictions: list[dict]) -> dict[str, dict]:
    """evaluate() once per backend; also checks that the inputs are left untouched."""
    before = json.dumps([val_gt, predictions])
    metrics = {b: evaluate(val_gt, predictions, backend=b) for b in BACKENDS}
    assert json.dumps([val_gt, predictions]) == before
    return metrics


def _flatten(head: dict) -> dict[str, float]:
    flat = {k: v for k, v in head.items() if k not in ("per_class", "pr_curve")}
    flat.update({f"per_class/{k}": v for k, v in head.get("per_class", {}).items()})
    return flat


def test_pr_curve_matches_cocoeval_precision(evaluated: dict, expected: dict) -> None:
    """The PR curve is COCOeval's precision at IoU 0.5 (area all, 100 dets) averaged over classes;
    AP50 is its mean over the 101 recall points (for classes with ground truth)."""
    curve = evaluated["pycocotools"]["bbox"]["pr_curve"]
    assert len(curve["recall"]) == len(curve["precision"]) == 101
    assert curve["recall"][0] == 0.0 and curve["recall"][-1] == 1.0
    assert np.mean(curve["precision"]) == pytest.approx(expected["bbox"]["AP50"], abs=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_with_pycocotools(backend: str, evaluated: dict, expected: dict) -> None:
    metrics = evaluated[backend]
    assert len(expected["bbox"]["per_class"]) > 50
    for head in ("bbox", "keypoints", "box_class_agnostic"):
        got, want = _flatten(metrics[head]), _flatten(expected[head])
        assert got.keys() == want.keys(), head
        if backend == "pycocotools":
            assert got == want, head
        else:
            np.testing.assert_allclose(
                list(got.values()), list(want.values()), rtol=0, atol=FASTER_ATOL, err_msg=head
            )
    assert 0.1 < metrics["bbox"]["AP"] < 0.9  # a non-trivial case
    assert 0.1 < metrics["keypoints"]["AP"] < 0.9


def _eval_cli():
    spec = importlib.util.spec_from_file_location("tools_eval", ROOT / "tools" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_writes_metrics(
    backend: str, tmp_path: Path, val_files: list[Path], predictions: list[dict],
    evaluated: dict, capsys: pytest.CaptureFixture,
) -> None:
    pred_file, out = tmp_path / "predictions.json", tmp_path / "metrics.json"
    pred_file.write_text(json.dumps(predictions))
    argv = ["--predictions", str(pred_file), "--annotations", *map(str, val_files),
            "--backend", backend, "--out", str(out)]
    assert _eval_cli().main(argv) == 0
    assert json.loads(out.read_text()) == evaluated[backend]
    assert "keypoints" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.json"]


def test_cli_unknown_image_id_exits_2_with_one_line(tmp_path: Path, val_files: list[Path]) -> None:
    pred_file = tmp_path / "predictions.json"
    record = {"image_id": 123456789, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}
    pred_file.write_text(json.dumps([record]))
    cmd = [sys.executable, str(ROOT / "tools" / "eval.py"), "--predictions", str(pred_file),
           "--annotations", *map(str, val_files)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {pred_file}: prediction 0: image_id 123456789 is not in the ground truth"
    ]


def test_cli_missing_annotation_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.json"
    argv = ["--predictions", str(tmp_path / "p.json"), "--annotations", str(missing)]
    assert _eval_cli().main(argv) == 2
    assert capsys.readouterr().err == f"error: {missing}: annotation file not found\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions_give_zeros(backend: str, val_gt: dict) -> None:
    metrics = evaluate(val_gt, [], backend=backend)
    assert set(metrics) == {"bbox", "keypoints", "box_class_agnostic", "classification"}
    for head in ("bbox", "keypoints", "box_class_agnostic"):
        assert set(_flatten(metrics[head]).values()) == {0.0}, head
    assert set(metrics["bbox"]["pr_curve"]["precision"]) == {0.0}
    assert metrics["classification"] == {"accuracy_on_matched": 0.0, "num_matched": 0}


@pytest.mark.parametrize(
    ("index", "field", "value", "message"),
    [
        (1, "image_id", 123456789, "prediction 1: image_id 123456789 is not in the ground truth"),
        (1, "category_id", 999, "prediction 1: category_id 999 is not in the ground truth"),
        (0, "bbox", [1, 2, 3], "prediction 0: 'bbox' must be 4 numbers"),
    ],
)
def test_bad_prediction_raises_one_line(
    val_gt: dict, index: int, field: str, value: object, message: str
) -> None:
    image_id = val_gt["images"][0]["id"]
    preds = [{"image_id": image_id, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}
             for _ in range(2)]
    preds[index][field] = value
    with pytest.raises(ValueError, match=f"^{re.escape(message)}") as info:
        evaluate(val_gt, preds)
    assert "\n" not in str(info.value)


def test_right_boxes_wrong_classes(val_gt: dict) -> None:
    """Perfect boxes, every class wrong: bbox AP 0, class-agnostic AP 1, accuracy 0."""
    cat_ids = [c["id"] for c in val_gt["categories"]]
    present = {img["id"]: set() for img in val_gt["images"]}
    for ann in val_gt["annotations"]:
        present[ann["image_id"]].add(ann["category_id"])
    absent = {i: next(c for c in cat_ids if c not in cats) for i, cats in present.items()}
    rng = np.random.default_rng(1)
    preds = [  # each box labelled with a category absent from its image
        {"image_id": a["image_id"], "category_id": absent[a["image_id"]], "bbox": a["bbox"],
         "score": float(rng.random())}
        for a in val_gt["annotations"]
        if not a["iscrowd"]
    ]
    metrics = evaluate(val_gt, preds)
    assert metrics["bbox"]["AP"] == 0.0 and metrics["bbox"]["AP50"] == 0.0
    assert metrics["box_class_agnostic"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["box_class_agnostic"]["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["classification"] == {"accuracy_on_matched": 0.0, "num_matched": len(preds)}


def _tiny_gt(annotations: list[dict], categories: list[dict] | None = None) -> dict:
    """One 640x480 image; ids, image_id, iscrowd and area filled in."""
    for i, ann in enumerate(annotations, start=1):
        ann.setdefault("id", i)
        ann.setdefault("image_id", 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    return {
        "images": [{"id": 1, "width": 640, "height": 480}],
        "categories": categories or [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": annotations,
    }


def _pred(bbox: list[float], category_id: int, score: float, **extra) -> dict:
    return {"image_id": 1, "category_id": category_id, "bbox": bbox, "score": score, **extra}


def test_accuracy_on_matched_hand_computed() -> None:
    gt = _tiny_gt([
        {"bbox": [10, 10, 50, 50], "category_id": 1},  # A
        {"bbox": [100, 100, 50, 50], "category_id": 2},  # B
        {"bbox": [300, 300, 40, 40], "category_id": 1},  # C
        {"bbox": [500, 10, 100, 100], "category_id": 1, "iscrowd": 1},  # never matched
    ])
    preds = [
        _pred([300, 300, 15, 15], 2, 0.99),  # on C, IoU 0.14: unmatched
        _pred([510, 10, 80, 80], 1, 0.95),  # on the crowd: unmatched
        _pred([10, 10, 50, 50], 1, 0.9),  # A, IoU 1, right class
        _pred([105, 100, 50, 50], 1, 0.8),  # B, IoU 0.82, wrong class
        _pred([302, 302, 40, 40], 1, 0.7),  # C, IoU 0.82, right class
        _pred([12, 10, 50, 50], 2, 0.6),  # A again, already taken: unmatched
    ]
    assert accuracy_on_matched(gt, preds) == {"accuracy_on_matched": 2 / 3, "num_matched": 3}


def test_keypoints_only_on_keypoint_categories() -> None:
    """Person GT without keypoint fields is ignored; other categories are not keypoint-evaluated."""
    person = {"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)], "skeleton": []}
    xy = np.column_stack([np.linspace(20, 80, 17), np.linspace(30, 90, 17)])
    kpts = np.column_stack([xy, np.full(17, 2)]).ravel().tolist()
    gt = _tiny_gt(
        [
            {"bbox": [10, 20, 80, 80], "category_id": 1, "keypoints": kpts, "num_keypoints": 17},
            {"bbox": [200, 200, 60, 90], "category_id": 1},  # a person from instances only
            {"bbox": [400, 100, 50, 50], "category_id": 2},  # a dog
        ],
        [person, {"id": 2, "name": "dog"}],
    )
    preds = [
        _pred([10, 20, 80, 80], 1, 0.9, keypoints=kpts),
        _pred([200, 200, 60, 90], 1, 0.8, keypoints=[210, 210, 1] * 17),
        _pred([400, 100, 50, 50], 2, 0.7),
    ]
    for backend in BACKENDS:
        metrics = evaluate(gt, preds, backend=backend)
        assert metrics["keypoints"]["AP"] == pytest.approx(1.0, abs=1e-12), backend
        assert metrics["bbox"]["AP"] == pytest.approx(1.0, abs=1e-12), backend
    boxes_only = [{k: v for k, v in p.items() if k != "keypoints"} for p in preds]
    assert "keypoints" not in evaluate(gt, boxes_only)


def test_keypoint_sigmas_required_for_other_k() -> None:
    person = {"id": 1, "name": "person", "keypoints": ["a", "b", "c", "d", "e"]}
    kpts = [20, 30, 2, 40, 50, 2, 60, 70, 2, 30, 80, 2, 70, 40, 2]
    ann = {"bbox": [10, 20, 80, 80], "category_id": 1, "keypoints": kpts, "num_keypoints": 5}
    gt = _tiny_gt([ann], [person])
    preds = [_pred([10, 20, 80, 80], 1, 0.9, keypoints=kpts)]
    with pytest.raises(ValueError, match="kpt_sigmas are required for 5 keypoints"):
        evaluate(gt, preds)
    metrics = evaluate(gt, preds, kpt_sigmas=[0.05] * 5)
    assert metrics["keypoints"]["AP"] == pytest.approx(1.0, abs=1e-12)


def test_load_predictions_errors_name_file_and_record(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    good = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}
    path.write_text(json.dumps([good, {"image_id": 1}]))
    prefix = re.escape(str(path))
    with pytest.raises(ValueError, match=f"^{prefix}: record 1: 'category_id' must be an integer"):
        load_predictions(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"^{prefix}: invalid JSON"):
        load_predictions(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match=f"^{prefix}: expected a JSON list"):
        load_predictions(path)
    path.write_text(json.dumps([good]))
    assert load_predictions(path) == [good]


def test_format_table() -> None:
    metrics = {
        "bbox": {**dict.fromkeys(BBOX_STATS, 0.5), "APs": -1.0, "per_class": {"a": 0.5}},
        "keypoints": dict.fromkeys(KEYPOINT_STATS, 0.25),
        "box_class_agnostic": dict.fromkeys(AGNOSTIC_STATS, 0.75),
        "classification": {"accuracy_on_matched": 0.9, "num_matched": 10},
    }
    lines = [line.split() for line in format_table(metrics).splitlines()]
    assert [line[0] for line in lines] == [
        "head", "bbox", "box_class_agnostic", "head", "keypoints", "classification"
    ]
    assert lines[0] == ["head", *BBOX_STATS]
    assert lines[1] == ["bbox", "50.0", "50.0", "50.0", "-", *["50.0"] * 5]
    assert lines[2] == ["box_class_agnostic", "75.0", "75.0"]
    assert lines[3] == ["head", *KEYPOINT_STATS]
    assert lines[5] == ["classification", "accuracy_on_matched", "90.0", "(10", "matched)"]
