"""COCO segmentation fields: validation in front of pycocotools, areas and RLE encoding."""
from __future__ import annotations

import re

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detect.data.segmentation import (SegmentationError, _string_counts, decode, encode_mask,
                                      mask_area, segmentation_kind, to_rle)



def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO run lengths, written out by hand: column-major, background first."""
    flat = mask.T.ravel().astype(np.int64)  # column-major
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [len(flat)]])).tolist()
    return ([0] + runs) if flat[0] else runs


def test_string_counts_read_pycocotools_encoding_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        rle = encode_mask(mask)
        assert isinstance(rle["counts"], str) and rle["size"] == [h, w]
        assert _string_counts(rle["counts"]) == _runs(mask)
        assert np.array_equal(decode(rle), mask)
        assert mask_area(rle, h, w) == mask.sum()
        uncompressed = {"size": [int(h), int(w)], "counts": _runs(mask)}
        assert np.array_equal(decode(to_rle(uncompressed, h, w)), mask)


def test_polygon_area_is_pycocotools_rasterised_area() -> None:
    poly = [[1.0, 1.0, 9.0, 1.0, 9.0, 5.0, 1.0, 5.0], [20, 20, 30, 20, 25, 30]]
    want = mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(poly, 40, 40)))
    assert mask_area(poly, 40, 40) == want and mask_area([poly[0]], 40, 40) == 32


@pytest.mark.parametrize("seg, kind", [(None, None), ([], None), ([[0, 0, 1, 0, 1, 1]], "polygon"),
                                       ({"size": [2, 2], "counts": [4]}, "rle")])
def test_kind(seg, kind) -> None:
    assert segmentation_kind(seg) == kind


@pytest.mark.parametrize("seg, message", [
    ("abc", "must be a list of polygons or an RLE dict, got str"),
    ([[0, 0, 1, 0]], "polygon 0 has 4 numbers"),  # pycocotools would read this as a box
    ([[0, 0, 1, 0, 1, 1], [0, 0, 1, 0, 1]], "polygon 1 has 5 numbers"),
    ([[0, 0, 1, float("nan"), 1, 1]], "polygon 0 has a non-finite coordinate"),
    ([[0, 0, "1", 0, 1, 1]], "polygon 0 must be a list of numbers"),
    ([[0, 0, 1e12, 0, 1, 1]], "polygon 0 has a point far outside the image"),
    ({"counts": "PP"}, "RLE 'size' must be [height, width]"),
    ({"size": [4, 5], "counts": [20]}, "RLE size [4, 5] differs from the image's [5, 4]"),
    ({"size": [5, 4], "counts": [3, 4]}, "RLE runs cover 7 pixels, the image has 20"),
    ({"size": [5, 4], "counts": [30, -10]}, "negative run length"),
    ({"size": [5, 4], "counts": "0\x7f"}, "invalid character"),
    ({"size": [5, 4], "counts": "0P"}, "ends inside a number"),  # "P" - 48 sets the "more" bit
    ({"size": [5, 4], "counts": 20}, "RLE 'counts' must be a str or a list of integers"),
])
def test_malformed_segmentations_are_named_not_passed_to_pycocotools(seg, message) -> None:
    with pytest.raises(SegmentationError, match=re.escape(message)):
        to_rle(seg, 5, 4)
