"""Box regression head: per-anchor deltas, GIoU and/or smooth L1 loss."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from detect.box_coder import BoxCoder
from detect.heads.base import Head, Tower
from detect.losses import giou_loss, smooth_l1_loss
from detect.structures import Matches

BoxLoss = Literal["giou", "smooth_l1", "giou+l1"]


class BoxHead(Head):
    """pred [B, A, 4] deltas against the anchors (see `BoxCoder`). Losses over positive anchors,
    divided by the number of positives: ``loss_box`` (GIoU on decoded boxes, or smooth L1 on
    deltas) and, for "giou+l1", ``loss_box_l1`` too."""

    name = "box"

    def __init__(self, in_channels: int, num_anchors: int, tower: Tower | None, coder: BoxCoder,
                 loss: BoxLoss = "giou") -> None:
        super().__init__(in_channels, num_anchors, 4, tower)
        self.coder, self.loss_kind = coder, loss

    def loss(self, pred: Tensor, matches: Matches) -> dict[str, Tensor]:
        pos = matches.positive  # [B, A]
        deltas = pred[pos]  # [P, 4]
        anchors = matches.anchors.expand(pos.shape[0], -1, -1)[pos]  # [P, 4]
        gt = matches.boxes[pos]  # [P, 4]
        n = matches.num_positive
        out = {}
        if self.loss_kind in ("giou", "giou+l1"):
            boxes = self.coder.decode(deltas.float(), anchors)
            out["loss_box"] = giou_loss(boxes, gt).sum() / n
        if self.loss_kind in ("smooth_l1", "giou+l1"):
            key = "loss_box" if self.loss_kind == "smooth_l1" else "loss_box_l1"
            out[key] = smooth_l1_loss(deltas, self.coder.encode(gt, anchors)).sum() / n
        return out

    def decode(self, pred: Tensor, anchors: Tensor) -> Tensor:
        """[B, A, 4] xyxy boxes, in float32 or wider (half-precision predictions are upcast)."""
        return self.coder.decode(pred.to(torch.promote_types(pred.dtype, torch.float32)), anchors)
