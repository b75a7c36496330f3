"""Segmentations in the data pipeline: repaired or dropped by the loader with a count naming the
annotation, decoded as pycocotools decodes them, and moved with the image by the transforms."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detect.data.annotations import load_annotations
from detect.data.notes import NoteLog
from detect.data.segmentation import clean_segmentation, decode_masks, encode_mask
from detect.data.transforms import Sample, TrainTransform, ValTransform, hflip

W, H = 40, 30


def _clean(seg):
    log = NoteLog()
    return clean_segmentation(seg, W, H, "f.json: annotation id 7", log), log


@pytest.mark.parametrize("seg,reason", [
    ([[1, 1, 5, 1, 5]], "odd number of coordinates"),
    ([[1, 1, 5, 1]], "fewer than 3 points"),
    ([[1, 1, 5, float("nan"), 5, 5]], "NaN or infinite"),
    ([[1, 1, 5, float("inf"), 5, 5]], "NaN or infinite"),
    ([["a", 1, 5, 1, 5, 5]], "not a list of numbers"),
    ({"size": [H + 1, W], "counts": "abc"}, "size is not the image's"),
    ({"size": [H, W], "counts": [5, 5]}, "do not cover the image"),
    ({"size": [H, W], "counts": "@@@"}, "cannot be read"),
    ({"size": [H, W], "counts": 3}, "cannot be read"),
    ("polygon", "of type str"),
])
def test_unusable_segmentations_are_dropped_and_counted(seg, reason: str) -> None:
    out, log = _clean(seg)
    assert out is None
    [(text, n)] = log.counts.items()
    assert reason in text and n == 1
    assert "annotation id 7" in log.lines()[0]


def test_a_bad_polygon_leaves_the_good_ones_and_outside_points_are_clipped() -> None:
    out, log = _clean([[1, 1, 5, 1], [-3, 2, 50, 2, 20, 40]])
    assert out == [[0.0, 2.0, 40.0, 2.0, 20.0, 30.0]]
    assert sorted(log.counts) == ["polygon points outside the image clipped",
                                  "polygon with fewer than 3 points dropped"]


def test_absent_or_empty_is_no_mask_without_a_warning() -> None:
    for seg in (None, []):
        out, log = _clean(seg)
        assert out is None and not log.counts


def test_decoding_matches_pycocotools_on_random_shapes() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        poly = [list(rng.uniform(0, [W, H] * 5, 10))]
        truth = (rng.random((H, W)) > 0.7).astype(np.uint8)
        segs = [_clean(s)[0] for s in (poly, encode_mask(truth))]
        out = decode_masks(segs + [None], W, H)
        ref_poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, H, W)))
        assert np.array_equal(out[0], ref_poly) and np.array_equal(out[1], truth)
        assert not out[2].any()


def _coco(tmp_path: Path, anns: list[dict]) -> Path:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": anns}))
    return path


def test_records_carry_clean_segmentations_and_the_categories_that_have_them(tmp_path) -> None:
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9],
         "segmentation": [[1, 1, 10, 1, 10, 10, 1, 10]]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 5, 5, 5],
         "segmentation": [[1, 2, 3]]},  # odd: dropped, the object keeps its box
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [5, 5, 5, 5]},
        {"id": 4, "image_id": 1, "category_id": 2, "bbox": [0, 0, 40, 30], "iscrowd": 1,
         "segmentation": encode_mask(np.ones((H, W), bool))},
    ]
    ann = load_annotations([_coco(tmp_path, anns)])
    [rec] = ann.images
    assert ann.mask_category_ids == (1,)
    assert rec.segmentations[1] is None and rec.segmentations[2] is None
    assert len(rec.segmentations) == 3 and len(rec.ignore_boxes) == 1
    assert ann.mask_log.counts == {"polygon with an odd number of coordinates dropped": 1}
    assert "annotation id 2" in ann.mask_log.lines()[0]
    by_id = {a["id"]: a for a in ann.gt["annotations"]}
    assert "segmentation" not in by_id[2] and "segmentation" in by_id[4]


def test_a_dataset_without_segmentations_has_no_masks(tmp_path) -> None:
    ann = load_annotations([_coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1,
                                              "bbox": [1, 1, 9, 9]}])])
    assert ann.mask_category_ids is None and ann.images[0].segmentations is None


def _sample(rng: np.random.Generator) -> Sample:
    """An image of filled rectangles whose masks are those rectangles."""
    h, w = 240, 300
    boxes, masks = [], []
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 60), rng.integers(0, h - 60)
        x1, y1 = x0 + rng.integers(10, 60), y0 + rng.integers(10, 60)
        m = np.zeros((h, w), np.uint8)
        m[y0:y1, x0:x1] = 1
        boxes.append([x0, y0, x1, y1])
        masks.append(m)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Sample(img, np.array(boxes, np.float32), np.zeros(4, np.int64), None,
                  np.zeros((0, 4), np.float32), masks=np.stack(masks),
                  has_mask=np.array([True, False, True, True]))


@pytest.mark.parametrize("transform", [ValTransform(160), TrainTransform(160, hflip_prob=1.0)])
def test_masks_move_with_their_boxes(transform) -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        s = _sample(rng)
        out = transform(s, rng)
        assert out.masks.shape == (len(out.boxes), *out.image.shape[:2])
        assert out.has_mask.dtype == bool and len(out.has_mask) == len(out.boxes)
        for box, m in zip(out.boxes, out.masks):
            ys, xs = np.nonzero(m)
            assert len(xs), "a kept box kept its mask"
            tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert np.abs(tight - box).max() <= 2.0  # a pixel of resizing either way


def test_hflip_mirrors_masks() -> None:
    s = _sample(np.random.default_rng(4))
    out = hflip(s, ())
    assert np.array_equal(out.masks, s.masks[:, :, ::-1])
