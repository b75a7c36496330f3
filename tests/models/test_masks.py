"""The mask head: its targets, loss and decoding by hand, and masks back in original pixels."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detect.heads.base import Selected
from detect.heads.masks import MaskHead, Prototypes, box_region, mask_targets
from detect.masks import masks_to_original
from detect.structures import Matches, Target


def _head(num_prototypes: int = 2, stride: int = 4) -> MaskHead:
    return MaskHead(8, 1, None, Prototypes(8, 4, num_prototypes, stride), num_prototypes, stride)


def test_box_region_takes_the_pixels_whose_centres_are_inside() -> None:
    # stride 4: centres at 2, 6, 10, 14; the box [5, 1, 11, 7) holds x centres 6 and 10, y 2 and 6
    region = box_region(torch.tensor([[5.0, 1.0, 11.0, 7.0]]), 4, 4, 4)[0]
    expected = torch.zeros(4, 4)
    expected[0:2, 1:3] = 1
    assert torch.equal(region, expected)


def test_mask_targets_are_the_covered_fraction_of_each_cell() -> None:
    m = torch.zeros(1, 6, 7, dtype=torch.uint8)  # an image of 7 x 6, not a multiple of 4
    m[0, 0:2, 0:4] = 1  # 8 of the 16 pixels of cell (0, 0)
    m[0, 4:6, 4:7] = 1  # 6 pixels of cell (1, 1), which reaches beyond the image
    t = mask_targets(m, 4, 2, 2)
    assert torch.allclose(t, torch.tensor([[[0.5, 0.0], [0.0, 6 / 16]]]))


def _matches(anchors: int, matched: list[int], target: Target) -> Matches:
    a = torch.zeros(anchors, 4)
    m = torch.tensor([matched])
    return Matches(a, m, torch.zeros(1, anchors, 4), torch.full((1, anchors), -1),
                   torch.ones(1, anchors), torch.tensor(1.0), (anchors,), [target])


def test_loss_by_hand_on_one_object() -> None:
    head = _head()
    # two prototypes of 2 x 2 cells (an 8 x 8 input at stride 4)
    protos = torch.tensor([[[1.0, -1.0], [2.0, 0.0]], [[0.5, 0.5], [-1.0, 3.0]]])[None]
    pred = torch.tensor([[[1.0, 2.0], [9.0, 9.0], [0.5, -1.0]]])  # [1, 3 anchors, 2]
    mask = torch.zeros(1, 8, 8, dtype=torch.uint8)
    mask[0, 0:4, 0:4] = 1  # the object fills cell (0, 0) only
    box = torch.tensor([[0.0, 0.0, 8.0, 4.0]])  # its box covers the top row of cells
    target = Target(box, torch.tensor([0]), masks=mask, has_mask=torch.tensor([True]))
    # anchors 0 and 2 are positives of object 0; anchor 1 background
    loss = head.loss(pred, _matches(3, [0, -1, 0], target), protos)["loss_mask"]

    def bce(logit: float, y: float) -> float:
        return -(y * math.log(1 / (1 + math.exp(-logit)))
                 + (1 - y) * math.log(1 - 1 / (1 + math.exp(-logit))))

    def one(c0: float, c1: float) -> float:  # the top row: cells (0, 0) target 1, (0, 1) target 0
        return (bce(c0 * 1.0 + c1 * 0.5, 1.0) + bce(c0 * -1.0 + c1 * 0.5, 0.0)) / 2

    expected = (one(1.0, 2.0) + one(0.5, -1.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_objects_without_a_mask_add_nothing_and_the_loss_still_reaches_every_parameter() -> None:
    head = _head()
    features = [torch.randn(1, 8, 2, 2)]
    pred = head(features)  # [1, 4, 2]
    protos = head.extra_map(features, [])
    target = Target(torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([0]),
                    masks=torch.ones(1, 8, 8, dtype=torch.uint8), has_mask=torch.tensor([False]))
    loss = head.loss(pred, _matches(4, [0, 0, -1, -1], target), protos)["loss_mask"]
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_decoded_masks_are_the_combination_cropped_to_the_box() -> None:
    head = _head()
    protos = torch.randn(1, 2, 4, 4)
    pred = torch.randn(1, 5, 2)
    sel = Selected(torch.tensor([[3, 1]]), torch.zeros(1, 2, 4), torch.tensor(
        [[[0.0, 0.0, 16.0, 16.0], [4.0, 8.0, 12.0, 16.0]]]), torch.tensor([[0, 0]]), [(4, 4)],
        [4], [5])
    out = head.decode_detections(pred, protos, sel)  # [1, 2, 4, 4]
    full = torch.einsum("np,phw->nhw", pred[0, [3, 1]], protos[0]).sigmoid()
    assert torch.allclose(out[0, 0], full[0])
    inside = torch.zeros(4, 4)
    inside[2:4, 1:3] = 1
    assert torch.allclose(out[0, 1], full[1] * inside)
    head.set_classes(torch.tensor([False]))
    assert head.decode_detections(pred, protos, sel).abs().sum() == 0


@pytest.mark.parametrize("stride,scale,offset", [(4, 1.0, (0.0, 0.0)), (4, 0.5, (0.0, 0.0)),
                                                 (8, 0.64, (3.0, 5.0)), (4, 2.0, (0.0, 0.0))])
def test_masks_to_original_lands_a_block_on_its_original_pixels(
        stride: int, scale: float, offset: tuple[float, float]) -> None:
    probs = np.zeros((1, 40, 40), np.float32)
    probs[0, 10:20, 5:15] = 1.0  # input pixels x [5s, 15s), y [10s, 20s)
    h, w = 1000, 900
    out = masks_to_original(probs, np.array([[0, 0, w, h]], np.float32), stride, scale,
                            offset, (h, w))
    ys, xs = np.nonzero(out[0])
    # the block's edges in original pixels: (input - offset) / scale
    x0, x1 = (5 * stride - offset[0]) / scale, (15 * stride - offset[0]) / scale
    y0, y1 = (10 * stride - offset[1]) / scale, (20 * stride - offset[1]) / scale
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1
    assert out[0].sum() == pytest.approx((x1 - x0) * (y1 - y0), rel=0.1)


def test_masks_to_original_stay_inside_the_box_and_match_interpolation() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((3, 20, 20)).astype(np.float32)
    boxes = np.array([[10, 12, 50, 70], [0, 0, 80, 80], [79.5, 0, 80, 80]], np.float32)
    out = masks_to_original(probs, boxes, 4, 1.0, (0.0, 0.0), (80, 80))
    # stride 4, scale 1: bilinear upsampling with half-pixel centres, as torch's interpolate
    ref = F.interpolate(torch.from_numpy(probs)[None], scale_factor=4, mode="bilinear",
                        align_corners=False)[0].numpy() > 0.5
    assert not out[0, :12].any() and not out[0, :, 50:].any()
    # torch clamps at the border where cv2 reads zeros beyond it: compare the interior
    assert (out[1, 2:-2, 2:-2] == ref[1, 2:-2, 2:-2]).mean() > 0.999
    assert (out[0, 12:70, 10:50] == ref[0, 12:70, 10:50]).mean() > 0.999
    assert out[2, :, :79].sum() == 0
