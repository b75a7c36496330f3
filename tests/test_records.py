"""JSON records of predictions: masks as COCO RLE, and `masked_field` keeping masks bool."""
from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_utils

from detect.prediction import Prediction, masked_field
from detect.records import detection_records, frame_record, image_records


def _prediction(masks: np.ndarray, present: np.ndarray) -> Prediction:
    n = len(masks)
    boxes = np.tile(np.array([[1.0, 2.0, 9.0, 7.0]], np.float32), (n, 1))  # [N, 4]
    return Prediction(boxes, np.linspace(0.9, 0.5, n), np.arange(1, n + 1), ["a"] * n,
                      {"masks": masked_field(masks, present, "mask")})


def test_masked_field_keeps_bool_and_clears_absent_rows() -> None:
    rng = np.random.default_rng()
    masks = rng.random((3, 5, 7)) > 0.5  # [N, H, W]
    present = np.array([True, False, True])
    f = masked_field(masks, present, "mask")
    assert f.values.dtype == np.bool_ and f.values.shape == (3, 5, 7)
    np.testing.assert_array_equal(f.values[[0, 2]], masks[[0, 2]])
    assert not f.values[1].any()
    points = masked_field(rng.random((3, 4, 3)), present, "points")
    assert points.values.dtype == np.float32 and not points.values[1].any()
    ints = masked_field(np.ones((3, 2), np.int64), present, "value")
    assert ints.values.dtype == np.float32 and ints.values[:, 0].tolist() == [1, 0, 1]


def test_mask_records_are_rle_that_decode_to_the_mask() -> None:
    rng = np.random.default_rng()
    h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
    masks = rng.random((3, h, w)) > 0.6  # [N, H, W]
    recs = detection_records(_prediction(masks, np.array([True, False, True])))
    json.dumps(recs)  # plain JSON: counts are str, size ints
    assert "segmentation" not in recs[1] and all("masks" not in r for r in recs)
    for i in (0, 2):
        segm = recs[i]["segmentation"]
        assert set(segm) == {"size", "counts"} and segm["size"] == [h, w]
        assert isinstance(segm["counts"], str)
        decoded = mask_utils.decode({"size": segm["size"], "counts": segm["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), masks[i])


def test_hand_made_rle() -> None:
    """A 2x3 mask read column by column (COCO's order): one False, two True, three False, so
    uncompressed counts [1, 2, 3]; a row-major encoding would give [1, 1, 2, 2]."""
    mask = np.zeros((2, 3), bool)
    mask[1, 0] = mask[0, 1] = True
    segm = detection_records(_prediction(mask[None], np.array([True])))[0]["segmentation"]
    want = mask_utils.frPyObjects({"size": [2, 3], "counts": [1, 2, 3]}, 2, 3)
    assert segm == {"size": [2, 3], "counts": want["counts"].decode()}


def test_image_and_frame_records_carry_the_segmentation() -> None:
    masks = np.zeros((2, 6, 10), bool)
    masks[0, 2:4, 3:8] = True
    pred = _prediction(masks, np.array([True, False]))
    image = image_records(pred, "000000000042.jpg")
    frame = frame_record(3, 0.1, pred)["detections"]
    assert image[0]["image_id"] == 42 and image[0]["segmentation"] == frame[0]["segmentation"]
    assert "segmentation" not in image[1] and "segmentation" not in frame[1]
    assert mask_utils.area(image[0]["segmentation"]) == 10
