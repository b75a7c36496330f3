import torch
import torchvision

from detect.boxes import (
    box_area,
    box_centers,
    box_ioa,
    box_iou,
    centers_inside,
    clip_boxes,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def random_boxes(n: int, generator: torch.Generator, size: float = 100.0) -> torch.Tensor:
    """[n, 4] valid xyxy boxes with positive width and height."""
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_box_area_and_iou_match_torchvision():
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(7, g), random_boxes(5, g)
    torch.testing.assert_close(box_area(a), torchvision.ops.box_area(a))
    iou = box_iou(a, b)
    assert iou.shape == (7, 5)
    torch.testing.assert_close(iou, torchvision.ops.box_iou(a, b))


def test_box_area_of_inverted_box_is_zero():
    assert box_area(torch.tensor([[10.0, 10.0, 5.0, 20.0]])).item() == 0.0


def test_ioa_hand_computed():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 20.0, 30.0]])  # second has zero area
    b = torch.tensor([[5.0, 0.0, 15.0, 20.0], [100.0, 100.0, 110.0, 110.0], [-5.0, -5.0, 50.0, 50.0]])
    # a0 vs b0: intersection [5, 0, 10, 10] = 50 of a0's 100 -> 0.5; vs b1: none; vs b2: all of a0.
    expected = torch.tensor([[0.5, 0.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(box_ioa(a, b), expected)


def test_ioa_against_iou_when_b_contains_a():
    g = torch.Generator().manual_seed(1)
    a = random_boxes(6, g)
    big = torch.tensor([[-1000.0, -1000.0, 1000.0, 1000.0]])
    torch.testing.assert_close(box_ioa(a, big), torch.ones(6, 1))
    # when a == b, IoA == IoU == 1 on the diagonal
    torch.testing.assert_close(box_ioa(a, a).diagonal(), torch.ones(6))


def test_format_conversion_matches_torchvision_with_leading_dims():
    g = torch.Generator().manual_seed(2)
    xyxy = random_boxes(24, g).reshape(2, 3, 4, 4)  # [2, 3, 4, 4]: leading dims
    xywh = xyxy_to_xywh(xyxy)
    expected = torchvision.ops.box_convert(xyxy.reshape(-1, 4), "xyxy", "xywh").reshape(2, 3, 4, 4)
    torch.testing.assert_close(xywh, expected)
    torch.testing.assert_close(xywh_to_xyxy(xywh), xyxy)


def test_centers():
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(5, g)
    expected = torchvision.ops.box_convert(boxes, "xyxy", "cxcywh")[:, :2]
    torch.testing.assert_close(box_centers(boxes), expected)


def test_clip_matches_torchvision():
    g = torch.Generator().manual_seed(4)
    boxes = random_boxes(10, g, size=200.0) - 50  # some outside on every side
    size = (60, 90)  # (h, w)
    torch.testing.assert_close(clip_boxes(boxes, size), torchvision.ops.clip_boxes_to_image(boxes, size))
    batched = clip_boxes(boxes.reshape(2, 5, 4), size)  # [2, 5, 4]
    torch.testing.assert_close(batched.reshape(10, 4), torchvision.ops.clip_boxes_to_image(boxes, size))


def test_centers_inside_is_strict_and_respects_eps():
    points = torch.tensor([[5.0, 5.0], [0.0, 5.0], [10.0, 10.0], [9.995, 5.0], [20.0, 5.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [15.0, 0.0, 25.0, 10.0]])
    inside = centers_inside(points, boxes)
    assert inside.shape == (2, 5)
    assert inside.tolist() == [[True, False, False, True, False], [False, False, False, False, True]]
    # with eps = 0.01 the point 0.005 from the right edge is no longer inside
    assert centers_inside(points, boxes, eps=0.01)[0].tolist() == [True, False, False, False, False]
