"""The mask head: its targets, loss and decoding by hand, and masks back in original pixels."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detect.heads.base import Selected
from detect.heads.masks import MaskHead, Prototypes, box_region, sample_in_boxes
from detect.masks import masks_to_original
from detect.structures import Matches, Target


def _head(num_prototypes: int = 2, stride: int = 4) -> MaskHead:
    protos = Prototypes(8, 4, num_prototypes, stride, fine_channels=3)
    return MaskHead(8, 1, None, protos, num_prototypes, stride)


def test_box_region_takes_the_pixels_whose_centres_are_inside() -> None:
    # stride 4: centres at 2, 6, 10, 14; the box [5, 1, 11, 7) holds x centres 6 and 10, y 2 and 6
    region = box_region(torch.tensor([[5.0, 1.0, 11.0, 7.0]]), 4, 4, 4)[0]
    expected = torch.zeros(4, 4)
    expected[0:2, 1:3] = 1
    assert torch.equal(region, expected)


def test_boxes_are_read_at_the_centres_of_a_grid_of_28() -> None:
    ramp = torch.arange(8.0).expand(8, 8)[None, None]  # [1, 1, 8, 8]: value = column index
    out = sample_in_boxes(ramp.expand(2, 1, 8, 8), torch.tensor([1, 0]),
                          torch.tensor([[2.0, 0.0, 6.0, 8.0], [8.0, 4.0, 24.0, 20.0]]), 1)
    centres = 2 + (torch.arange(28) + 0.5) * 4 / 28  # pixel j's centre is at j + 0.5
    assert out.shape == (2, 1, 28, 28)
    assert torch.allclose(out[0, 0], (centres - 0.5).expand(28, 28), atol=1e-5)
    # stride 4: a box of 16 input pixels covers 4 map pixels from map x = 2
    centres = (8 + (torch.arange(28) + 0.5) * 16 / 28) / 4
    assert torch.allclose(sample_in_boxes(ramp, torch.tensor([0]), torch.tensor(
        [[8.0, 4.0, 24.0, 20.0]]), 4)[0, 0], (centres - 0.5).expand(28, 28), atol=1e-5)


def _matches(anchors: int, matched: list[int], target: Target) -> Matches:
    a = torch.zeros(anchors, 4)
    m = torch.tensor([matched])
    return Matches(a, m, torch.zeros(1, anchors, 4), torch.full((1, anchors), -1),
                   torch.ones(1, anchors), torch.tensor(1.0), (anchors,), [target])


def test_loss_by_hand_on_one_object() -> None:
    head = _head()
    head.dice_weight = 0.0  # the BCE alone first
    # two constant prototypes, 1 and 2, on a 4 x 4 map (a 16 x 16 input at stride 4)
    protos = torch.stack([torch.ones(4, 4), torch.full((4, 4), 2.0)])[None]
    pred = torch.tensor([[[1.0, 2.0], [9.0, 9.0], [0.5, -1.0]]])  # [1, 3 anchors, 2]
    # object 0's mask covers its box and more: every sample in the box reads 1
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    masks[0, :10] = 1
    boxes = torch.tensor([[0.0, 0.0, 16.0, 8.0], [0.0, 8.0, 16.0, 16.0]])
    target = Target(boxes, torch.tensor([0, 0]), masks=masks, has_mask=torch.tensor([True, False]))
    # anchors 0 and 2 are positives of object 0; anchor 1 of object 1, which has no mask
    loss = head.loss(pred, _matches(3, [0, 1, 0], target), protos)["loss_mask"]
    # logit c0 * 1 + c1 * 2 everywhere, target 1: BCE = softplus(-logit)
    expected = (F.softplus(torch.tensor(-5.0)) + F.softplus(torch.tensor(1.5))) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    head.dice_weight = 1.0  # plus dice: 1 - (2 p * 1 + 1) / (p + 1 + 1) per sample grid
    p = torch.sigmoid(torch.tensor([5.0, -1.5])) * 28 * 28
    dice = 1 - (2 * p + 1) / (p + 28 * 28 + 1)
    loss = head.loss(pred, _matches(3, [0, 1, 0], target), protos)["loss_mask"]
    assert loss.item() == pytest.approx(expected.item() + dice.mean().item(), rel=1e-5)


def test_objects_without_a_mask_add_nothing_and_the_loss_still_reaches_every_parameter() -> None:
    head = _head()
    features = [torch.randn(1, 8, 2, 2)]
    pred = head(features)  # [1, 4, 2]
    protos = head.extra_map(features, [torch.randn(1, 3, 4, 4)])  # P3 and C2
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


def test_masks_to_original_stay_inside_the_box_and_resample_the_logits() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((3, 20, 20)).astype(np.float32)
    boxes = np.array([[10, 12, 50, 70], [0, 0, 80, 80], [79.5, 0, 80, 80]], np.float32)
    out = masks_to_original(probs, boxes, 4, 1.0, (0.0, 0.0), (80, 80))
    # stride 4, scale 1: bilinear upsampling of the logits with half-pixel centres, as torch's
    logits = torch.special.logit(torch.from_numpy(probs))
    ref = F.interpolate(logits[None], scale_factor=4, mode="bilinear",
                        align_corners=False)[0].numpy() > 0
    assert not out[0, :12].any() and not out[0, :, 50:].any()
    assert (out[1] == ref[1]).mean() > 0.999
    assert (out[0, 12:70, 10:50] == ref[0, 12:70, 10:50]).mean() > 0.999
    assert out[2, :, :79].sum() == 0


def test_prototypes_at_stride_4_read_the_backbones_c2() -> None:
    """Two inputs differing only in C2 give other prototypes (the fine map is used), at C2's size;
    at stride 8 there is no C2 branch and P3's size is kept."""
    protos = Prototypes(8, 4, 2, 4, fine_channels=3).eval()
    p3, c2 = torch.randn(1, 8, 3, 5), torch.randn(2, 3, 6, 10)
    out = protos(p3.expand(2, -1, -1, -1), c2)
    assert out.shape == (2, 2, 6, 10)
    assert not torch.allclose(out[0], out[1])
    assert Prototypes(8, 4, 2, 8)(p3, c2).shape == (1, 2, 3, 5)
    with pytest.raises(ValueError, match="C2"):
        Prototypes(8, 4, 2, 4)
