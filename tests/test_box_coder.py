import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from detect.box_coder import BoxCoder


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 4] valid xyxy boxes."""
    xy = torch.rand(n, 2, generator=generator) * 200
    wh = torch.rand(n, 2, generator=generator) * 150 + 2
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    boxes, anchors = random_boxes(50, g), random_boxes(50, g)
    coder = BoxCoder(weights)
    deltas = coder.encode(boxes, anchors)
    assert deltas.shape == (50, 4)
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, atol=1e-4, rtol=0)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_matches_torchvision(weights):
    g = torch.Generator().manual_seed(1)
    boxes, anchors = random_boxes(40, g), random_boxes(40, g)
    ours, theirs = BoxCoder(weights), TVBoxCoder(weights)
    torch.testing.assert_close(ours.encode(boxes, anchors), theirs.encode_single(boxes, anchors))
    deltas = torch.randn(40, 4, generator=g) * 3  # some beyond the clamp
    expected = theirs.decode_single(deltas, anchors)
    torch.testing.assert_close(ours.decode(deltas, anchors), expected, rtol=1e-5, atol=1e-3)


def test_broadcasting_leading_dims():
    g = torch.Generator().manual_seed(2)
    anchors = random_boxes(6, g)  # [A, 4]
    boxes = random_boxes(12, g).reshape(2, 6, 4)  # [B, A, 4]
    coder = BoxCoder()
    deltas = coder.encode(boxes, anchors)
    assert deltas.shape == (2, 6, 4)
    torch.testing.assert_close(deltas[1], coder.encode(boxes[1], anchors))
    torch.testing.assert_close(coder.decode(deltas, anchors), boxes, atol=1e-4, rtol=0)


def test_clamp_keeps_huge_deltas_finite():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 32.0]])
    coder = BoxCoder()
    boxes = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), anchors)
    assert torch.isfinite(boxes).all()
    w, h = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
    assert w.item() == pytest.approx(16 * math.exp(math.log(1000 / 16)), rel=1e-5)  # = 1000
    assert h.item() == pytest.approx(32 * 1000 / 16, rel=1e-5)
    # the box stays centred on the anchor centre (8, 16)
    assert ((boxes[0, 0] + boxes[0, 2]) / 2).item() == pytest.approx(8.0)


def test_encode_hand_computed():
    anchor = torch.tensor([0.0, 0.0, 10.0, 20.0])  # centre (5, 10), size (10, 20)
    box = torch.tensor([5.0, 10.0, 25.0, 30.0])  # centre (15, 20), size (20, 20)
    expected = torch.tensor([1.0, 0.5, math.log(2.0), 0.0])
    torch.testing.assert_close(BoxCoder().encode(box, anchor), expected)
    torch.testing.assert_close(BoxCoder((10, 10, 5, 5)).encode(box, anchor), expected * torch.tensor([10, 10, 5, 5]))


def test_points_hand_computed_and_round_trip():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # [A=1, 4]: centre (5, 10), size (10, 20)
    offsets = torch.tensor([[[1.0, 0.5], [-0.5, 0.0]]])  # [A=1, K=2, 2]
    points = BoxCoder().decode_points(offsets, anchors)
    assert points.shape == (1, 2, 2)
    torch.testing.assert_close(points, torch.tensor([[[15.0, 20.0], [0.0, 10.0]]]))

    g = torch.Generator().manual_seed(3)
    anchors = random_boxes(8, g).reshape(2, 4, 4)  # [B, A, 4]
    pts = torch.rand(2, 4, 17, 2, generator=g) * 300  # [B, A, K, 2]
    coder = BoxCoder()
    torch.testing.assert_close(coder.decode_points(coder.encode_points(pts, anchors), anchors), pts, atol=1e-4, rtol=0)
