"""Drawing masks: filled translucent in the detection's colour, under boxes and names."""
from __future__ import annotations

import numpy as np

from detect.prediction import Prediction, masked_field
from detect.vis import MASK_ALPHA, _color, draw_detections, draw_prediction

H, W = 60, 80
LABEL = 3
BOX = [10.0, 12.0, 60.0, 50.0]  # xyxy


def _image() -> np.ndarray:
    return np.random.default_rng().integers(0, 256, (H, W, 3), dtype=np.uint8)


def _disk() -> np.ndarray:
    """A disk well inside BOX (off its outline and name)."""
    yy, xx = np.mgrid[:H, :W]
    return (yy - 31) ** 2 + (xx - 35) ** 2 <= 12 ** 2  # [H, W]


def _prediction(masks: np.ndarray, present: list[bool], score: float = 0.9) -> Prediction:
    """Detections on BOX named "cat": no descender, so the name stays above the box."""
    n = len(masks)
    return Prediction(np.array([BOX] * n), np.full(n, score), np.full(n, LABEL), ["cat"] * n,
                      {"masks": masked_field(masks, np.array(present), "mask")})


def _without_masks(pred: Prediction) -> Prediction:
    return Prediction(pred.boxes, pred.scores, pred.labels, pred.names)


def test_mask_pixels_move_toward_the_colour_and_nothing_else_changes() -> None:
    image, disk = _image(), _disk()
    pred = _prediction(disk[None], [True])
    drawn = draw_prediction(image, pred)
    plain = draw_prediction(image, _without_masks(pred))
    np.testing.assert_array_equal(drawn[~disk], plain[~disk])
    color = np.array(_color(LABEL), np.float64)
    want = np.round(plain[disk] * (1 - MASK_ALPHA) + color * MASK_ALPHA)  # [P, 3]
    np.testing.assert_array_equal(drawn[disk], want)
    before = np.abs(plain[disk].astype(np.float64) - color)
    after = np.abs(drawn[disk].astype(np.float64) - color)
    moved = before > 2  # where the pixel is not already (about) the colour
    assert moved.any() and (after[moved] < before[moved]).all()
    assert not np.shares_memory(drawn, image)


def test_absent_or_unshown_masks_draw_nothing() -> None:
    image, disk = _image(), _disk()
    absent = _prediction(disk[None], [False])
    np.testing.assert_array_equal(draw_prediction(image, absent),
                                  draw_prediction(image, _without_masks(absent)))
    low = _prediction(disk[None], [True], score=0.1)
    np.testing.assert_array_equal(draw_prediction(image, low, min_score=0.3), image)


def test_mask_lies_under_the_box_and_name() -> None:
    """A mask over the whole image: the box outline keeps the pure colour, the name its black."""
    image = np.full((H, W, 3), 200, np.uint8)
    pred = _prediction(np.ones((1, H, W), bool), [True])
    drawn = draw_prediction(image, pred)
    plain = draw_prediction(image, _without_masks(pred))
    untouched = (plain == image).all(axis=2)  # [H, W]: no box, no name
    x0, y0, x1, y1 = (int(v) for v in BOX)
    assert (drawn[y1, x0:x1 + 1] == _color(LABEL)).all()  # the box's bottom edge
    np.testing.assert_array_equal(drawn[~untouched], plain[~untouched])
    assert (drawn[untouched] != image[untouched]).any(axis=1).all()


def test_draw_detections_takes_mask_sets() -> None:
    image, disk = _image(), _disk()
    pred = _prediction(np.stack([disk, ~disk]), [True, False])
    by_sets = draw_detections(image, pred.boxes, pred.labels, pred.names, pred.scores,
                              masks=[(pred.fields["masks"].values, pred.fields["masks"].present)])
    np.testing.assert_array_equal(by_sets, draw_prediction(image, pred))
