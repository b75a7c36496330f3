"""Box regression head: per-anchor deltas, GIoU and/or smooth L1 loss."""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from detect.box_coder import BoxCoder
from detect.evaluation.coco_eval import bbox_metrics, class_agnostic_metrics
from detect.heads.base import BoxRegressionHead, Tower
from detect.losses import giou_loss, smooth_l1_loss
from detect.structures import Matches

BoxLoss = Literal["giou", "smooth_l1"]


class BoxHead(BoxRegressionHead):
    """pred [B, A, 4] deltas against the anchors (see `BoxCoder`). Loss over positive anchors,
    divided by the number of positives: ``loss_box``, GIoU on decoded boxes or smooth L1 on
    deltas. Evaluated as COCO ``bbox`` (per class too) and ``box_class_agnostic``."""

    name = "box"

    def __init__(self, in_channels: int, num_anchors: int, tower: Tower | None, coder: BoxCoder,
                 loss: BoxLoss = "giou") -> None:
        super().__init__(in_channels, num_anchors, 4, tower)
        self.coder, self.loss_kind = coder, loss

    def loss(self, pred: Tensor, matches: Matches, extra: Tensor | None = None
             ) -> dict[str, Tensor]:
        pos = matches.positive  # [B, A]
        deltas = pred[pos]  # [P, 4]
        anchors = matches.anchors.expand(pos.shape[0], -1, -1)[pos]  # [P, 4]
        gt = matches.boxes[pos]  # [P, 4]
        if self.loss_kind == "giou":
            loss = giou_loss(self.coder.decode(deltas.float(), anchors), gt)
        else:
            loss = smooth_l1_loss(deltas, self.coder.encode(gt, anchors))
        return {"loss_box": loss.sum() / matches.num_positive}

    def decode(self, pred: Tensor, anchors: Tensor) -> Tensor:
        """[B, A, 4] xyxy boxes, in float32 or wider (half-precision predictions are upcast)."""
        return self.coder.decode(pred.to(torch.promote_types(pred.dtype, torch.float32)), anchors)

    def evaluate(self, gt: dict, predictions: list[dict], backend: str,
                 class_names: dict[int, str]) -> dict[str, dict]:
        return {"bbox": bbox_metrics(gt, predictions, backend, class_names),
                "box_class_agnostic": class_agnostic_metrics(gt, predictions, backend)}
