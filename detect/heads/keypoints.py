"""Keypoint head: per anchor, K offsets from the anchor centre (scaled by anchor size) and K
visibility logits. Loss: 1 - OKS plus BCE on visibility, over positives whose object has at least
one labelled keypoint (YOLO-Pose style), plus an L1 term on scale-normalised positions: 1 - OKS
alone has almost no gradient for keypoints far from their target (exp of a large negative), so
early training would barely move them."""
from __future__ import annotations

import torch
from torch import Tensor

from detect.box_coder import BoxCoder
from detect.heads.base import Head, Tower
from detect.losses import keypoint_l1, oks_loss, visibility_loss
from detect.structures import Matches


class KeypointHead(Head):
    """pred [B, A, K*3]: (dx, dy) per keypoint then K visibility logits.

    Losses (divided by the number of contributing positives, at least 1:
    `Matches.num_keypoint_positive`): ``loss_kpt`` (1 - OKS with per-keypoint ``sigmas`` and the
    matched box area as scale), ``loss_kpt_l1``
    (mean L1 distance of labelled keypoints divided by sqrt(area), times ``l1_weight``) and
    ``loss_kpt_vis`` (BCE of "labelled" on every keypoint). With no contributing positive all are
    ``0 * pred.sum()``: zero, finite, and still connected to the graph.
    """

    name = "keypoints"

    def __init__(self, in_channels: int, num_anchors: int, num_keypoints: int, tower: Tower | None,
                 coder: BoxCoder, sigmas: tuple[float, ...], l1_weight: float = 1.0) -> None:
        super().__init__(in_channels, num_anchors, num_keypoints * 3, tower)
        if len(sigmas) != num_keypoints:
            raise ValueError(f"{len(sigmas)} sigmas for {num_keypoints} keypoints")
        self.num_keypoints = num_keypoints
        self.l1_weight = l1_weight
        self.coder = coder
        self.register_buffer("sigmas", torch.tensor(sigmas, dtype=torch.float32), persistent=False)

    def _split(self, pred: Tensor) -> tuple[Tensor, Tensor]:
        k = self.num_keypoints
        offsets = pred[..., : 2 * k].unflatten(-1, (k, 2))  # [..., K, 2]
        return offsets, pred[..., 2 * k:]  # [..., K]

    def loss(self, pred: Tensor, matches: Matches) -> dict[str, Tensor]:
        zero = pred.sum() * 0.0
        empty = {"loss_kpt": zero, "loss_kpt_l1": zero, "loss_kpt_vis": zero}
        if matches.keypoints is None:
            return empty
        use = matches.keypoint_positive  # [B, A]
        if not bool(use.any()):
            return empty
        offsets, vis_logits = self._split(pred[use].float())  # [P, K, 2], [P, K]
        anchors = matches.anchors.expand(use.shape[0], -1, -1)[use]  # [P, 4]
        xy = self.coder.decode_points(offsets, anchors)  # [P, K, 2]
        gt = matches.keypoints[use]  # [P, K, 3]
        areas = matches.areas[use]  # [P]
        n = matches.num_keypoint_positive  # over DDP ranks too
        l_oks = oks_loss(xy, gt, areas, self.sigmas).sum() / n
        l_vis = visibility_loss(vis_logits, gt[..., 2]).mean(-1).sum() / n
        return {"loss_kpt": l_oks, "loss_kpt_l1": self.l1_weight * keypoint_l1(xy, gt, areas) / n,
                "loss_kpt_vis": l_vis}

    def decode(self, pred: Tensor, anchors: Tensor) -> Tensor:
        """[B, A, K, 3] keypoints (x, y, visibility probability)."""
        offsets, vis_logits = self._split(pred.float())
        xy = self.coder.decode_points(offsets, anchors[None])  # [B, A, K, 2]
        return torch.cat([xy, vis_logits.sigmoid()[..., None]], dim=-1)
