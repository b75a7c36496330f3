"""Classification head: per-anchor class logits, sigmoid focal loss."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from detect.evaluation.classification import accuracy_on_matched
from detect.heads.base import ScoreHead, Tower
from detect.losses import focal_loss
from detect.structures import Matches


class ClassificationHead(ScoreHead):
    """pred [B, A, C] logits. Loss: focal loss over positive and background anchors (ignored
    anchors excluded), summed and divided by the number of positives. Evaluated as the accuracy of
the classes of the detections matched to ground truth (`detect.evaluation.classification`)."""

    name = "cls"

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, tower: Tower | None,
                 prior_prob: float = 0.01, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__(in_channels, num_anchors, num_classes, tower)
        self.num_classes, self.alpha, self.gamma = num_classes, alpha, gamma
        torch.nn.init.constant_(self.predictor.bias, -math.log((1 - prior_prob) / prior_prob))

    def loss(self, pred: Tensor, matches: Matches, extra: Tensor | None = None
             ) -> dict[str, Tensor]:
        valid = matches.valid  # [B, A]
        labels = matches.labels.clamp(min=0)  # [B, A]
        onehot = F.one_hot(labels, self.num_classes).to(pred.dtype)  # [B, A, C]
        onehot = onehot * matches.positive[..., None]
        loss = focal_loss(pred[valid], onehot[valid], self.alpha, self.gamma)
        return {"loss_cls": loss / matches.num_positive}

    def decode(self, pred: Tensor, anchors: Tensor) -> Tensor:
        """[B, A, C] probabilities."""
        return pred.sigmoid()

    def evaluate(self, gt: dict, predictions: list[dict], backend: str,
                 class_names: dict[int, str]) -> dict[str, dict]:
        return {"classification": accuracy_on_matched(gt, predictions)}
