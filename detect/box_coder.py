"""Encode boxes and keypoints as offsets from anchors, and decode them back.

Box deltas (R-CNN parameterisation, as in torchvision's ``BoxCoder``)::

    dx = wx * (x - xa) / wa      dw = ww * log(w / wa)
    dy = wy * (y - ya) / ha      dh = wh * log(h / ha)

with (x, y, w, h) the centre and size of the box, (xa, ya, wa, ha) those of the anchor and
(wx, wy, ww, wh) the ``weights``. Decoding clamps dw, dh (after dividing by the weights) at
``clamp`` before ``exp`` so that a huge prediction never produces ``inf``.

Keypoint offsets: ``x = xa + dx * wa``, ``y = ya + dy * ha`` (no weights, no clamp).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _center_size(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """[..., 4] xyxy -> centres [..., 2] and sizes [..., 2]."""
    size = boxes[..., 2:] - boxes[..., :2]  # [..., 2]
    return boxes[..., :2] + 0.5 * size, size


@dataclass(frozen=True)
class BoxCoder:
    """Encodes xyxy boxes as deltas from xyxy anchors and back.

    Attributes:
        weights: (wx, wy, ww, wh) multiplied into the deltas on encode, divided out on decode.
            RetinaNet uses (1, 1, 1, 1), Faster R-CNN (10, 10, 5, 5).
        clamp: upper bound on dw, dh (unweighted) before ``exp`` when decoding.
    """

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    clamp: float = math.log(1000.0 / 16)

    def _weights(self, like: Tensor) -> Tensor:
        return torch.tensor(self.weights, dtype=like.dtype, device=like.device)  # [4]

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Deltas of ``boxes`` [..., 4] relative to ``anchors`` [..., 4] (broadcast) -> [..., 4]."""
        ctr, size = _center_size(boxes)
        actr, asize = _center_size(anchors)
        dxy = (ctr - actr) / asize  # [..., 2]
        dwh = torch.log(size / asize)  # [..., 2]
        return torch.cat([dxy, dwh], dim=-1) * self._weights(dxy)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes [..., 4] xyxy from ``deltas`` [..., 4] and ``anchors`` [..., 4] (broadcast)."""
        deltas = deltas / self._weights(deltas)
        actr, asize = _center_size(anchors.to(deltas.dtype))
        ctr = actr + deltas[..., :2] * asize  # [..., 2]
        size = asize * torch.exp(deltas[..., 2:].clamp(max=self.clamp))  # [..., 2]
        return torch.cat([ctr - 0.5 * size, ctr + 0.5 * size], dim=-1)

    def encode_points(self, points: Tensor, anchors: Tensor) -> Tensor:
        """Offsets [..., K, 2] of ``points`` [..., K, 2] (x, y) from ``anchors`` [..., 4].

        ``dx = (x - xa) / wa``, ``dy = (y - ya) / ha``; the inverse of `decode_points`.
        """
        actr, asize = _center_size(anchors)
        return (points - actr[..., None, :]) / asize[..., None, :]  # [..., K, 2]

    def decode_points(self, offsets: Tensor, anchors: Tensor) -> Tensor:
        """Points [..., K, 2] (x, y) from ``offsets`` [..., K, 2] and ``anchors`` [..., 4].

        ``x = xa + dx * wa``, ``y = ya + dy * ha`` with (xa, ya) the anchor centre.
        """
        actr, asize = _center_size(anchors.to(offsets.dtype))
        return actr[..., None, :] + offsets * asize[..., None, :]  # [..., K, 2]
