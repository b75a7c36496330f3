"""Mask evaluation (detect.evaluation.segm) against pycocotools run directly, plus hand cases."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.cli.eval import main as eval_main
from detect.evaluation import evaluate, format_table
from detect.evaluation.predictions import check_predictions
from detect.data.segmentation import rle_json
from detect.evaluation.segm import SEGM_STATS, segm_metrics

BACKENDS = ("faster", "pycocotools")
FASTER_ATOL = 1e-12  # faster_coco_eval's precision lacks pycocotools' + eps (see backends.py)


def rle(mask: np.ndarray) -> dict:
    """Compressed RLE with str counts of a bool mask [H, W]."""
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with zeros."""
    flat = mask.astype(np.uint8).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}


def decode(segm: dict | list, h: int, w: int) -> np.ndarray:
    return mask_utils.decode(rle_json(segm, h, w)).astype(bool)


def pycocotools_segm(gt: dict, preds: list[dict], cat_ids: list[int]) -> COCOeval:
    """The reference: plain pycocotools "segm" on deep copies, the records' bbox dropped (so areas
    are mask areas, as `segm_metrics` does), only ``cat_ids``."""
    results = [{k: v for k, v in p.items() if k != "bbox"} for p in copy.deepcopy(preds)
               if p["category_id"] in cat_ids]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "segm")
        coco_eval.params.catIds = cat_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def assert_parity(got: dict, want: COCOeval, backend: str) -> None:
    stats, expected = [got[s] for s in SEGM_STATS], want.stats[:len(SEGM_STATS)]
    if backend == "pycocotools":
        assert stats == expected.tolist()
    else:
        np.testing.assert_allclose(stats, expected, rtol=0, atol=FASTER_ATOL)


# --- random masks -------------------------------------------------------------------------------


def random_polygon(rng: np.random.Generator, h: int, w: int) -> list[float]:
    """A star-shaped polygon [x0, y0, x1, y1, ...] inside an h x w image."""
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
    radii = rng.uniform(0.3, 1.0, len(angles)) * min(h, w) * rng.uniform(0.1, 0.35)
    xy = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
    return np.clip(xy, 0, [w - 1, h - 1]).round(2).ravel().tolist()


def random_segmentation(rng: np.random.Generator, h: int, w: int, kind: str) -> list | dict:
    parts = [random_polygon(rng, h, w) for _ in range(int(rng.integers(1, 3)))]
    if kind == "polygons":
        return parts
    mask = decode(parts, h, w) | (rng.random((h, w)) < 0.02)  # a few stray pixels too
    return rle(mask) if kind == "rle" else uncompressed(mask)


def random_case(seed: int) -> tuple[dict, list[dict]]:
    """3 images; categories 1, 2 with masks (polygons, RLE, uncompressed RLE, one crowd) and 3
    with boxes only; predictions: shifted, grown or thinned GT masks and random false positives."""
    rng = np.random.default_rng(seed)
    images = [{"id": i, "height": int(rng.integers(60, 160)), "width": int(rng.integers(80, 220)),
               "file_name": f"{i}.jpg"} for i in range(1, 4)]
    anns: list[dict] = []
    for img in images:
        h, w = img["height"], img["width"]
        for _ in range(int(rng.integers(3, 7))):
            kind = str(rng.choice(["polygons", "rle", "uncompressed"]))
            anns.append({"image_id": img["id"], "category_id": int(rng.integers(1, 3)),
                         "segmentation": random_segmentation(rng, h, w, kind), "iscrowd": 0})
        anns.append({"image_id": img["id"], "category_id": 3, "iscrowd": 0,
                     "bbox": [5.0, 5.0, 20.0, 15.0], "area": 300.0})
    crowd = images[0]
    anns.append({"image_id": crowd["id"], "category_id": 1, "iscrowd": 1, "segmentation":
                 uncompressed(decode([random_polygon(rng, crowd["height"], crowd["width"])],
                                     crowd["height"], crowd["width"]))})
    sizes = {img["id"]: (img["height"], img["width"]) for img in images}
    for i, ann in enumerate(anns, start=1):
        ann["id"] = i
        if "segmentation" in ann:
            r = rle_json(ann["segmentation"], *sizes[ann["image_id"]])
            ann["area"] = float(mask_utils.area(r))
            ann["bbox"] = mask_utils.toBbox(r).tolist()
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": n} for c, n in ((1, "a"), (2, "b"), (3, "c"))]}
    return gt, random_predictions(rng, gt)


def random_predictions(rng: np.random.Generator, gt: dict) -> list[dict]:
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    preds = []
    for ann in gt["annotations"]:  # crowds too: detections on them are ignored
        if "segmentation" not in ann or rng.random() < 0.2:
            continue
        h, w = sizes[ann["image_id"]]
        mask = np.roll(decode(ann["segmentation"], h, w), rng.integers(-2, 3, 2), axis=(0, 1))
        if rng.random() < 0.5:
            mask = mask | np.roll(mask, 2, axis=int(rng.integers(2)))
        else:
            mask = mask & np.roll(mask, 2, axis=int(rng.integers(2)))
        preds.append(_mask_record(ann["image_id"], ann["category_id"], mask, rng))
    for _ in range(8):
        img = gt["images"][int(rng.integers(len(gt["images"])))]
        mask = np.zeros((img["height"], img["width"]), bool)
        y, x = int(rng.integers(0, img["height"] - 10)), int(rng.integers(0, img["width"] - 10))
        mask[y:y + int(rng.integers(3, 10)), x:x + int(rng.integers(3, 10))] = True
        preds.append(_mask_record(img["id"], int(rng.integers(1, 3)), mask, rng))
    preds.append({"image_id": 1, "category_id": 3, "bbox": [5.0, 5.0, 20.0, 15.0], "score": 0.7})
    return preds


def _mask_record(image_id: int, category_id: int, mask: np.ndarray,
                 rng: np.random.Generator) -> dict:
    segm = rle(mask)
    box = mask_utils.toBbox(segm) + rng.normal(0, 0.5, 4)
    return {"image_id": image_id, "category_id": category_id, "bbox": box.tolist(),
            "score": float(rng.random()), "segmentation": segm}


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_with_pycocotools_on_random_masks(seed: int, backend: str) -> None:
    gt, preds = random_case(seed)
    before = json.dumps([gt, preds])
    got = segm_metrics(gt, preds, backend)
    assert json.dumps([gt, preds]) == before
    assert_parity(got, pycocotools_segm(gt, preds, [1, 2]), backend)
    assert 0.05 < got["AP"] < 0.95  # not a trivial case
    assert 0 < got["num_tp"] and 0 < got["mIoU"] < 1
    assert set(got["per_class"]) == {"a", "b"}  # c has no masks


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_on_coco_mini(backend: str, val_gt: dict) -> None:
    """Real polygons and crowd RLEs; predictions: each object's mask shifted, random scores."""
    rng = np.random.default_rng(5)
    sizes = {img["id"]: (img["height"], img["width"]) for img in val_gt["images"]}
    preds = []
    for ann in val_gt["annotations"]:
        if rng.random() < 0.8:
            h, w = sizes[ann["image_id"]]
            mask = np.roll(decode(ann["segmentation"], h, w), rng.integers(-6, 7, 2), (0, 1))
            preds.append(_mask_record(ann["image_id"], ann["category_id"], mask, rng))
    cat_ids = sorted({a["category_id"] for a in val_gt["annotations"]})
    got = segm_metrics(val_gt, preds, backend)
    assert_parity(got, pycocotools_segm(val_gt, preds, cat_ids), backend)
    assert 0.1 < got["AP"] < 0.9


@pytest.mark.parametrize("backend", BACKENDS)
def test_coco_mini_ground_truth_as_predictions(backend: str, val_gt: dict, val_files: list[Path],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    """Each non-crowd object's own mask, score 1: AP 1 (crowds take no detection), mIoU 1."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in val_gt["images"]}
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
              "score": 1.0, "segmentation": rle_json(a["segmentation"], *sizes[a["image_id"]])}
             for a in val_gt["annotations"] if not a["iscrowd"]]
    segm = evaluate(val_gt, preds, backend=backend)["segm"]
    for stat in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "mIoU"):
        assert segm[stat] == pytest.approx(1.0, abs=FASTER_ATOL), stat
    assert segm["num_tp"] == len(preds) == 619
    pred_file = tmp_path / "predictions.json"
    pred_file.write_text(json.dumps(preds))
    argv = ["--predictions", str(pred_file), "--annotations", *map(str, val_files),
            "--backend", backend]
    assert eval_main(argv) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("segm "))
    assert row.split()[1] == "100.0" and row.endswith("100.0 (619 TP)")


# --- hand-computed tiny cases -------------------------------------------------------------------


def box_mask(y0: int, y1: int, x0: int, x1: int, size: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def tiny_gt(annotations: list[dict]) -> dict:
    """One 40x40 image, categories 1 and 2; ids, iscrowd, area and bbox filled in."""
    for i, ann in enumerate(annotations, start=1):
        ann.update(id=i, image_id=1, iscrowd=ann.get("iscrowd", 0))
        if ann.get("segmentation"):
            r = rle_json(ann["segmentation"], 40, 40)
            ann.setdefault("bbox", mask_utils.toBbox(r).tolist())
            ann.setdefault("area", float(mask_utils.area(r)))
    return {"images": [{"id": 1, "height": 40, "width": 40, "file_name": "1.jpg"}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": annotations}


def pred(bbox: list[float], score: float, mask: np.ndarray | None = None, category_id: int = 1,
         **extra) -> dict:
    record = {"image_id": 1, "category_id": category_id, "bbox": bbox, "score": score, **extra}
    if mask is not None:
        record["segmentation"] = rle(mask)
    return record


def test_miou_hand_computed() -> None:
    """A: 10x10 at the top left, B: 20x20 at the bottom right, C (category 2) bottom left.
    a on A: half of A (IoU 1/2); b on B: B and the 20x10 strip left of it (IoU 400/600); c: box on
    nothing; d: category 2 on A (C is elsewhere); e: A's exact mask but A is taken by a, which
    scores higher. num_tp 2, mIoU (1/2 + 2/3) / 2 = 7/12."""
    gt = tiny_gt([{"category_id": 1, "segmentation": rle(box_mask(0, 10, 0, 10))},
                  {"category_id": 1, "segmentation": rle(box_mask(20, 40, 20, 40))},
                  {"category_id": 2, "segmentation": rle(box_mask(30, 40, 0, 10))}])
    preds = [pred([0, 0, 10, 10], 0.9, box_mask(0, 5, 0, 10)),
             pred([20, 20, 20, 20], 0.8, box_mask(20, 40, 10, 40)),
             pred([30, 0, 8, 8], 0.95, box_mask(0, 8, 30, 38)),
             pred([0, 0, 10, 10], 0.7, box_mask(0, 10, 0, 10), category_id=2),
             pred([0, 0, 10, 10], 0.6, box_mask(0, 10, 0, 10))]
    for backend in BACKENDS:
        got = segm_metrics(gt, preds, backend)
        assert got["num_tp"] == 2
        assert got["mIoU"] == pytest.approx(7 / 12, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_object_without_segmentation_is_ignored(backend: str) -> None:
    """A has a polygon, B only a box. d2 (score 0.95) lies in B's box, d1 (0.9) is A's mask.
    d2 is neither TP nor FP: AP 1 (as a false positive it would make AP 0.5), and B is no object
    to find (d1 alone reaches recall 1)."""
    gt = tiny_gt([{"category_id": 1, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
                  {"category_id": 1, "bbox": [20, 20, 15, 15], "area": 225.0}])
    before = json.dumps(gt)
    preds = [pred([2, 2, 10, 10], 0.9, decode([[2, 2, 12, 2, 12, 12, 2, 12]], 40, 40)),
             pred([22, 22, 10, 10], 0.95, box_mask(22, 32, 22, 32))]
    got = segm_metrics(gt, preds, backend)
    assert json.dumps(gt) == before
    assert got["AP"] == pytest.approx(1.0, abs=FASTER_ATOL)
    assert got["AR100"] == pytest.approx(1.0, abs=FASTER_ATOL)
    assert (got["num_tp"], got["mIoU"]) == (1, 1.0)
    as_object = segm_metrics({**gt, "annotations": gt["annotations"][:1]}, preds, backend)
    assert as_object["AP"] == pytest.approx(0.5, abs=FASTER_ATOL)  # d2 a false positive


@pytest.mark.parametrize("backend", BACKENDS)
def test_detection_without_mask_is_a_miss(backend: str) -> None:
    """d1 (0.9) has A's box but no mask: an empty mask, a false positive, so d2 (A's mask, 0.8)
    comes second: precision 1/2 at every recall, AP 0.5. By box d1 takes A: num_tp 1, mIoU 0.
    Category 2 has masks but its only detection none: not a mask category of these records."""
    gt = tiny_gt([{"category_id": 1, "segmentation": rle(box_mask(0, 10, 0, 10))},
                  {"category_id": 2, "segmentation": rle(box_mask(20, 30, 20, 30))}])
    preds = [pred([0, 0, 10, 10], 0.9), pred([0, 0, 10, 10], 0.8, box_mask(0, 10, 0, 10)),
             pred([20, 20, 10, 10], 0.9, category_id=2)]
    got = segm_metrics(gt, preds, backend)
    assert got["AP"] == pytest.approx(0.5, abs=FASTER_ATOL)
    assert (got["num_tp"], got["mIoU"]) == (1, 0.0)
    assert set(got["per_class"]) == {"a"}
    both = segm_metrics(gt, preds, backend, category_ids=[1, 2])
    assert both["per_class"] == {"a": pytest.approx(0.5, abs=FASTER_ATOL), "b": 0.0}


def test_uncompressed_prediction_scores_as_compressed() -> None:
    gt = tiny_gt([{"category_id": 1, "segmentation": rle(box_mask(0, 10, 0, 10))}])
    mask = box_mask(0, 8, 0, 10)
    compressed = segm_metrics(gt, [pred([0, 0, 10, 8], 0.9, mask)], "pycocotools")
    raw = pred([0, 0, 10, 8], 0.9, segmentation=uncompressed(mask))
    check_predictions([raw])
    assert segm_metrics(gt, [raw], "pycocotools") == compressed
    assert compressed["mIoU"] == pytest.approx(0.8, abs=1e-12)


def test_size_mismatch_raises_one_line() -> None:
    gt = tiny_gt([{"category_id": 1, "segmentation": rle(box_mask(0, 10, 0, 10))}])
    preds = [pred([0, 0, 10, 10], 0.9, box_mask(0, 10, 0, 10)),
             pred([0, 0, 10, 10], 0.8, np.ones((40, 30), bool))]
    message = ("prediction 1: segmentation size [40, 30] is not the size [height, width] "
               "[40, 40] of image 1")
    for call in (lambda: segm_metrics(gt, preds, "faster"), lambda: evaluate(gt, preds)):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            call()


@pytest.mark.parametrize(("segmentation", "problem"), [
    ([[0, 0, 5, 0, 5, 5]], "'segmentation' must be an RLE object with 'size' [h, w] and 'counts'"),
    ({"size": [40], "counts": "abc"}, "'segmentation' 'size' must be 2 integers [h, w] >= 0"),
    ({"size": [40, 40.0], "counts": "abc"}, "'segmentation' 'size' must be 2 integers"),
    ({"size": [4, 4], "counts": {"a": 1}}, "'segmentation' 'counts' must be a string or a list"),
    ({"size": [4, 4], "counts": [3, -1, 14]}, "'segmentation' 'counts' must be a string or a"),
    ({"size": [4, 4], "counts": [3, 4]}, "'segmentation' 'counts' sum to 7, expected h * w = 16"),
    ({"size": [4, 4], "counts": "é"}, "'segmentation' 'counts' must be an ASCII string"),
])
def test_bad_segmentation_is_a_one_line_problem(segmentation: object, problem: str) -> None:
    records = [pred([0, 0, 5, 5], 0.5), pred([0, 0, 5, 5], 0.5, segmentation=segmentation)]
    with pytest.raises(ValueError, match=f"^prediction 1: {re.escape(problem)}") as info:
        check_predictions(records)
    assert "\n" not in str(info.value)


def test_segm_row_only_with_masks_and_in_the_table() -> None:
    gt = tiny_gt([{"category_id": 1, "segmentation": rle(box_mask(0, 10, 0, 10))}])
    boxes_only = [pred([0, 0, 10, 10], 0.9)]
    assert "segm" not in evaluate(gt, boxes_only) and "segm" not in evaluate(gt, [])
    metrics = evaluate(gt, [pred([0, 0, 10, 10], 0.9, box_mask(0, 10, 0, 5))])
    lines = [line.split() for line in format_table(metrics).splitlines()]
    assert [line[0] for line in lines] == ["head", "bbox", "box_class_agnostic", "head", "segm",
                                           "classification"]
    assert lines[3] == ["head", *SEGM_STATS, "mIoU"]
    assert lines[4][-3:] == ["50.0", "(1", "TP)"]
