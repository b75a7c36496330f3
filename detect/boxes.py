"""Pure box operations on tensors.

Every box here is absolute ``xyxy`` pixels unless the function name says otherwise
(``xywh`` exists only at the edges: COCO files in and out).
"""
from __future__ import annotations

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """Area of [N, 4] xyxy boxes -> [N]; degenerate (inverted) boxes have area 0."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)  # [N, 2]
    return wh[:, 0] * wh[:, 1]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of [N, 4] and [M, 4] xyxy boxes -> [N, M] (``torchvision.ops.box_iou``)."""
    from torchvision.ops import box_iou as iou  # on first use: its import costs a predictor ~1 s

    return iou(a, b)


def _intersection(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise intersection area of [N, 4] and [M, 4] xyxy boxes -> [N, M]."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])  # [N, M, 2]
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])  # [N, M, 2]
    wh = (rb - lt).clamp(min=0)  # [N, M, 2]
    return wh[..., 0] * wh[..., 1]


def box_ioa(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over the area of ``a``: [N, 4], [M, 4] xyxy -> [N, M].

    The fraction of each box of ``a`` that lies inside each box of ``b``; 0 where ``a`` has zero area.
    """
    inter = _intersection(a, b)  # [N, M]
    area_a = box_area(a)[:, None]  # [N, 1]
    return torch.where(area_a > 0, inter / area_a.clamp(min=torch.finfo(inter.dtype).tiny), 0.0)


def box_centers(boxes: Tensor) -> Tensor:
    """Centres of [N, 4] xyxy boxes -> [N, 2] (x, y)."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[..., 4] (x, y, w, h) with (x, y) the top-left corner -> [..., 4] xyxy."""
    xy, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([xy, xy + wh], dim=-1)


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """[..., 4] xyxy -> [..., 4] (x, y, w, h) with (x, y) the top-left corner."""
    xy0, xy1 = boxes[..., :2], boxes[..., 2:]
    return torch.cat([xy0, xy1 - xy0], dim=-1)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip [..., 4] xyxy boxes to an image of ``size = (height, width)``; returns a new tensor."""
    h, w = size
    x = boxes[..., 0::2].clamp(min=0, max=w)  # [..., 2]
    y = boxes[..., 1::2].clamp(min=0, max=h)  # [..., 2]
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def centers_inside(points: Tensor, boxes: Tensor, eps: float = 0.0) -> Tensor:
    """Whether each point lies strictly inside each box: [A, 2], [N, 4] -> [N, A] bool.

    A point counts as inside when its distance to every side of the box is greater than ``eps``.
    """
    x, y = points[None, :, 0], points[None, :, 1]  # [1, A]
    left = x - boxes[:, 0:1]  # [N, A]
    top = y - boxes[:, 1:2]  # [N, A]
    right = boxes[:, 2:3] - x  # [N, A]
    bottom = boxes[:, 3:4] - y  # [N, A]
    return torch.stack([left, top, right, bottom], dim=-1).amin(dim=-1) > eps
