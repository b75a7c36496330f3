"""Keypoint head: per anchor, K offsets from the anchor centre (in anchor sizes), K visibility
logits and, optionally, a handedness logit, J heatmap logits (`detect.heads.keypoint_heatmap`)
and F short-range offset fields (`detect.heads.keypoint_field`: the regression finds the joint,
the field, read on the finest level, places it).

Offsets are relative to the anchor, not to the detected box: relative to the box, training (on
ground-truth boxes) and inference (on predicted ones) would disagree, and a box a few pixels off
would move every keypoint with it (measured: docs/KEYPOINTS.md).

Loss: 1 - OKS plus BCE on visibility, over positives whose object has at least one labelled
keypoint (YOLO-Pose style), plus an L1 term on scale-normalised positions: 1 - OKS alone has
almost no gradient for keypoints far from their target (exp of a large negative).

Handedness (``handedness_pairs``, option ``model.heads.keypoint_handedness``): which of a person's
two wrists is the left one depends on whether the person faces the camera, which a young network
cannot yet see; regressed directly, each pair then collapses onto its midpoint (the average of
the two answers). With handedness the head regresses every left/right pair as (image-left,
image-right), a geometry the image shows, and predicts one logit per object for "its left
keypoints lie on the image's right" (a person facing the camera); decoding swaps the pairs back
where that logit is positive (`swap_pairs`). The logit may come from a second tower of the
keypoint head (``side_tower``) or from the classification tower (``side_channels``), option
``model.heads.keypoint_side_tower``: there it does not compete with the positions for one tower;
or, per detected person rather than per anchor, from its crop of the backbone's C4 map
(``side_crop``, `detect.heads.keypoint_side`), which trains no shared layer at all."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from detect.box_coder import BoxCoder
from detect.distributed import loss_normalizers
from detect.heads.base import Head, Tower, flatten_levels, predictor_conv
from detect.heads.fused import (FoldCache, Layer, block_predictor, can_fold, fold_levels,
                                inference_form, run_layers, sources)
from detect.heads.keypoint_field import field_targets, refine_with_field, type_members
from detect.heads.keypoint_heatmap import HEATMAP_WEIGHT, heatmap_targets, refine_keypoints
from detect.heads.keypoint_side import CropHandedness, handedness
from detect.losses import keypoint_l1, oks_loss, quality_focal_loss, visibility_loss
from detect.structures import Matches, partner_index


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged in the forward pass; its gradient multiplied by ``scale`` in backward."""
    detached = x.detach()
    return detached + scale * (x - detached)  # x - detached is exactly 0: the value is x's


def swap_pairs(x: Tensor, swap: Tensor, where: Tensor) -> Tensor:
    """``x`` [..., K, D] with every keypoint exchanged with its partner (``swap`` [K], from
    `detect.structures.partner_index`) in the rows where ``where`` [...] is True."""
    return torch.where(where[..., None, None], x[..., swap, :], x)


class KeypointHead(Head):
    """pred [B, A, 3K + S + J + 2F]: (dx, dy) per keypoint, from the anchor centre in anchor
    sizes, then K visibility logits, then S = 1 handedness logit with ``handedness_pairs`` (else
    0), then J heatmap logits (``heatmap_groups``: the heatmap of each keypoint,
    `detect.heads.keypoint_heatmap`; none without them), then F (dx, dy) offset fields
    (``field_groups``: the field of each keypoint, `detect.heads.keypoint_field`; none without
    them). Heatmaps and fields are predicted and read on the finest level only, by their own
    ``map_predictor`` (3x3; a 1x1 one lost 5-9 AP: docs/KEYPOINTS.md); their channels are zero
    on the other levels.

    Losses (divided by the number of contributing positives, at least 1:
    `Matches.num_keypoint_positive`): ``loss_kpt`` (1 - OKS with per-keypoint ``sigmas`` and the
    matched box area as scale), ``loss_kpt_l1``
    (mean L1 distance of labelled keypoints divided by sqrt(area), times ``l1_weight``) and
    ``loss_kpt_vis`` (BCE of "labelled" on every keypoint), with handedness ``loss_kpt_side``
    (BCE of `handedness` on the objects it is known for; positions and visibilities are then
    compared with the targets in image-left, image-right order), and with heatmaps ``loss_kpt_heat``
    (quality focal loss on the finest level, divided by the number of labelled keypoints,
    `Matches.num_labelled_keypoints`), and with fields ``loss_kpt_field`` (mean L1 in cells over
    the finest level's cells within reach of a joint, times ``field_weight``; targets in image
    order with handedness). With no contributing positive all are
    ``0 * pred.sum()``: zero, finite, and still connected to the graph.

    With ``side_tower`` or ``side_channels`` the handedness logit has a 3x3 ``side_predictor`` of
    its own that reads the side tower's output, or ``side_features`` (another head's tower output
    with that many channels), and ``predictor`` has 3K outputs; the prediction's layout is the
    same.
    """

    name = "keypoints"

    def __init__(self, in_channels: int, num_anchors: int, num_keypoints: int, tower: Tower | None,
                 coder: BoxCoder, sigmas: tuple[float, ...], l1_weight: float = 1.0,
                 heatmap_groups: list[int] | None = None,
                 handedness_pairs: tuple[tuple[int, int], ...] = (), side_weight: float = 1.0,
                 field_groups: list[int] | None = None, field_weight: float = 1.0,
                 prior_prob: float = 0.01, side_channels: int | None = None,
                 side_grad: float = 1.0, side_tower: Tower | None = None,
                 side_crop: CropHandedness | None = None) -> None:
        groups, fields = heatmap_groups or [], field_groups or []
        if side_crop is not None and (not handedness_pairs or side_tower is not None
                                      or side_channels is not None):
            raise ValueError("a crop handedness classifier needs handedness_pairs and replaces "
                             "the per-anchor handedness logit")
        # S: the per-anchor handedness logit in pred; none with the crop classifier (`decode`'s
        # sides come from it, per detection)
        sides = 1 if handedness_pairs and side_crop is None else 0
        if side_tower is not None:
            side_channels = side_tower.channels
        if side_channels is not None and not sides:
            raise ValueError("a handedness predictor of its own needs handedness_pairs")
        num_maps = len(set(groups)) + 2 * len(set(fields))
        # the predictor computes 3K + S outputs on every level (3K when the handedness logit has a
        # predictor of its own); the maps, read on the finest level only, have their own small
        # predictor there (`forward`)
        own_sides = 0 if side_channels is not None else sides
        super().__init__(in_channels, num_anchors, num_keypoints * 3 + own_sides, tower)
        self.outputs_per_anchor += num_maps + sides - own_sides
        self.map_predictor = predictor_conv(in_channels, num_maps) if num_maps else None
        # the handedness logit from a tower of its own, or from another head's (`forward`'s
        # side_features)
        self.side_tower = side_tower
        self.side_predictor = (predictor_conv(side_channels, num_anchors)
                               if side_channels is not None else None)
        self.side_grad = side_grad
        self.side_crop = side_crop
        # the crop classifier reads the backbone detached: its term trains it alone
        self.own_terms = ("loss_kpt_side",) if side_crop is not None else ()
        if len(sigmas) != num_keypoints:
            raise ValueError(f"{len(sigmas)} sigmas for {num_keypoints} keypoints")
        for what, g in (("heatmaps", groups), ("offset fields", fields)):
            if g and (len(g) != num_keypoints or num_anchors != 1):
                raise ValueError(f"keypoint {what} need one group per keypoint and one anchor per "
                                 f"location (got {len(g)} groups, {num_anchors} anchors)")
        self.num_keypoints = num_keypoints
        self.num_heatmaps, self.num_fields = len(set(groups)), len(set(fields))
        self.num_sides = sides
        self.handed = bool(handedness_pairs)  # pairs in image order, swapped back in `decode`
        self.l1_weight, self.side_weight, self.field_weight = l1_weight, side_weight, field_weight
        self.coder = coder
        self.register_buffer("sigmas", torch.tensor(sigmas, dtype=torch.float32), persistent=False)
        self.register_buffer("groups", torch.tensor(groups, dtype=torch.int64), persistent=False)
        self.register_buffer("field_groups", torch.tensor(fields, dtype=torch.int64),
                             persistent=False)
        members = type_members(fields)  # [F, G]
        self.register_buffer("field_members", torch.tensor(members, dtype=torch.int64) if members
                             else torch.zeros(0, 0, dtype=torch.int64), persistent=False)
        self.register_buffer("pairs", torch.tensor(handedness_pairs, dtype=torch.int64).view(-1, 2),
                             persistent=False)
        swap = torch.tensor(partner_index(num_keypoints, handedness_pairs), dtype=torch.int64)
        self.register_buffer("swap", swap, persistent=False)
        if self.num_heatmaps:  # heatmaps start at a low probability everywhere, as focal logits
            with torch.no_grad():
                self.map_predictor.bias[:self.num_heatmaps] = -math.log((1 - prior_prob) / prior_prob)
        # [C] bool: the classes whose detections carry keypoints (`set_classes`; default all)
        self.register_buffer("classes", torch.ones(0, dtype=torch.bool), persistent=False)
        self.fold_cache = FoldCache()  # `_forward_folded`'s weights

    def forward(self, features: list[Tensor],
                side_features: list[Tensor] | None = None) -> Tensor:
        """features: per level [B, C, H_l, W_l] -> [B, A, 3K + S + J + 2F]; the J + 2F map
        channels are predicted on the finest level and zero on the others (never read there).

        With a side tower the handedness logit is computed from its output on ``features``; with
        a side predictor only (``side_channels``), from ``side_features`` (per level
        [B, C_s, H_l, W_l]: the classification tower's output, see `MultiHeadDetector.forward`),
        whose gradient from it is scaled by ``side_grad``."""
        towers = [t for t in (self.tower, self.side_tower) if t is not None]
        if inference_form(self) and self.tower is not None and can_fold(towers, merging=True):
            return self._forward_folded(features, towers, side_features)
        if self.side_tower is not None:
            side_features = self.side_tower(features)
        if self.tower is not None:
            features = self.tower(features)
        parts = [flatten_levels([self.predictor(f) for f in features], self.predictor.out_channels
                                // self.num_anchors)]  # [B, A, 3K (+ S)]
        if self.side_predictor is not None:
            parts.append(self._side_logits(side_features))
        return self._join(parts, None if self.map_predictor is None
                          else self.map_predictor(features[0]))

    def _side_logits(self, side_features: list[Tensor] | None) -> Tensor:
        """The side predictor on ``side_features`` (its tower's or another head's output, whose
        gradient from it is scaled by ``side_grad``) -> [B, A, 1]."""
        if side_features is None:
            raise ValueError("this keypoint head reads its handedness logit from side_features")
        if self.side_grad != 1.0 and torch.is_grad_enabled():
            side_features = [scale_grad(f, self.side_grad) for f in side_features]
        return flatten_levels([self.side_predictor(f) for f in side_features], 1)

    def _join(self, parts: list[Tensor], finest_maps: Tensor | None) -> Tensor:
        """parts [B, A, .] and the map predictor's output on the finest level [B, J + 2F, H_0,
        W_0] (zeros on the other levels) -> [B, A, 3K + S + J + 2F]."""
        if finest_maps is not None:
            maps = flatten_levels([finest_maps], self.map_predictor.out_channels)
            parts.append(F.pad(maps, (0, 0, 0, parts[0].shape[1] - maps.shape[1])))
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def _forward_folded(self, features: list[Tensor], towers: list[Tower],
                        side_features: list[Tensor] | None) -> Tensor:
        """`forward` in evaluation without autograd: the keypoint tower and the side tower as one
        tower of folded convolutions (`detect.heads.fused`), their predictors as one convolution
        (on the finest level with the map predictor's rows too). Same outputs, fewer calls."""
        modules = [m for m in (self.predictor, self.side_predictor, self.map_predictor) if m is not None]
        levels = self.fold_cache.get(len(features), sources(*towers, *modules),
                                     lambda: self._folded(towers, len(features)))
        split = [self.predictor.out_channels]  # the block predictor's outputs, maps aside
        if self.side_tower is not None:
            split.append(self.side_predictor.out_channels)
        outs = [F.conv2d(run_layers(f, layers), w, b, padding=w.shape[-1] // 2)
                for f, (layers, w, b) in zip(features, levels)]  # [B, sum(split) (+ maps), H, W]
        parts = [flatten_levels([o[:, :split[0]] for o in outs], split[0] // self.num_anchors)]
        if self.side_tower is not None:
            parts.append(flatten_levels([o[:, split[0]:sum(split)] for o in outs], 1))
        elif self.side_predictor is not None:  # on the classification tower's output
            parts.append(self._side_logits(side_features))
        return self._join(parts, None if self.map_predictor is None else outs[0][:, sum(split):])

    def _folded(self, towers: list[Tower], num_levels: int) -> list[tuple[list[Layer], Tensor, Tensor]]:
        """Per level: the towers' folded blocks, and the predictors' block weight and bias (the
        keypoint predictor on tower 0, the side predictor on tower 1 when it has one, the map
        predictor on tower 0 on the finest level)."""
        parts = [(self.predictor, 0)]
        if self.side_tower is not None:
            parts.append((self.side_predictor, 1))
        finest = parts + ([(self.map_predictor, 0)] if self.map_predictor is not None else [])
        predictors = [block_predictor(finest, len(towers)), block_predictor(parts, len(towers))]
        return [(layers, *predictors[min(level, 1)])
                for level, layers in enumerate(fold_levels(towers, num_levels))]

    @property
    def own_lr_scale(self) -> float:
        return 1.0 if self.side_crop is None else self.side_crop.lr_scale

    def own_parameters(self) -> list[torch.nn.Parameter]:
        """The crop classifier's parameters: only ``loss_kpt_side`` trains them."""
        return [] if self.side_crop is None else list(self.side_crop.parameters())

    def predict(self, tower_features: list[Tensor]) -> Tensor:
        raise NotImplementedError("KeypointHead's outputs come from several predictors: use "
                                  "forward")

    @property
    def reads_side_features(self) -> bool:
        """Whether `forward` needs ``side_features``: the handedness logit on another head's
        tower."""
        return self.side_predictor is not None and self.side_tower is None

    def set_classes(self, mask: Tensor) -> None:
        """Only detections of classes with ``mask`` [C] True carry keypoints; the others get
        zeros (x, y and score) from `mask_detections`."""
        self.classes = mask.to(device=self.classes.device, dtype=torch.bool)

    def mask_detections(self, keypoints: Tensor, labels: Tensor) -> Tensor:
        """keypoints [..., K, 3] of detections with ``labels`` [...] -> zeros for detections of
        classes without keypoints."""
        if self.classes.numel() == 0:
            return keypoints
        keep = self.classes[labels.clamp(min=0)]  # [...]
        return keypoints * keep[..., None, None].to(keypoints.dtype)

    def _split(self, pred: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """pred [..., 3K + S + J] -> offsets [..., K, 2], visibility logits [..., K], handedness
        logits [..., S]."""
        k = self.num_keypoints
        offsets = pred[..., : 2 * k].unflatten(-1, (k, 2))  # [..., K, 2]
        return offsets, pred[..., 2 * k:3 * k], pred[..., 3 * k:3 * k + self.num_sides]

    @property
    def refines(self) -> bool:
        """Whether decoded keypoints are refined on the finest level's maps (`refine`)."""
        return bool(self.num_heatmaps or self.num_fields)

    def maps(self, pred: Tensor, num_finest: int) -> Tensor:
        """[B, A_0, J + 2F] heatmap logits and offset fields of the finest level's
        ``num_finest`` rows of ``pred`` (what `refine` reads)."""
        return pred[:, :num_finest, 3 * self.num_keypoints + self.num_sides:].float()

    def _split_maps(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """[B, M, J + 2F] -> heatmap logits [B, M, J], offset fields [B, M, F, 2]."""
        j = self.num_heatmaps
        return maps[..., :j], maps[..., j:].unflatten(-1, (self.num_fields, 2))

    def loss(self, pred: Tensor, matches: Matches,
             crop_features: Tensor | None = None) -> dict[str, Tensor]:
        """The losses above; with the crop classifier ``crop_features`` is the backbone map it
        reads (`HeadOutputs.crop_features`) and ``loss_kpt_side`` its BCE on the persons of the
        batch (`CropHandedness.loss`)."""
        zero = pred.sum() * 0.0
        # the field's and the crops' normalisers are collectives under DDP: computed on every call,
        # on every rank
        always = ({"loss_kpt_field": self.field_weight * self._field_loss(pred, matches)}
                  if self.num_fields else {})
        if self.side_crop is not None:
            if crop_features is None:
                raise ValueError("this keypoint head's handedness reads crop_features")
            always["loss_kpt_side"] = self.side_weight * self.side_crop.loss(
                crop_features, matches.targets, self.pairs)
        empty = {"loss_kpt": zero, "loss_kpt_l1": zero, "loss_kpt_vis": zero}
        if self.num_sides:
            empty["loss_kpt_side"] = zero
        if self.num_heatmaps:
            empty["loss_kpt_heat"] = zero
        if matches.keypoints is None:
            return empty | always
        use = matches.keypoint_positive  # [B, A]
        if not bool(use.any()):
            return empty | always
        # [P, K, 2], [P, K], [P, S]
        offsets, vis_logits, side_logits = self._split(pred[use].float())
        anchors = matches.anchors.expand(use.shape[0], -1, -1)[use]  # [P, 4]
        xy = self.coder.decode_points(offsets, anchors)  # [P, K, 2]
        gt = matches.keypoints[use]  # [P, K, 3]
        areas = matches.areas[use]  # [P]
        n = matches.num_keypoint_positive  # over DDP ranks too
        losses = {}
        if self.handed:  # compare in image-left, image-right order; learn which side is left
            mirrored, known = handedness(gt, self.pairs)  # [P], [P]
            gt = swap_pairs(gt, self.swap, mirrored)
        if self.num_sides:
            side = F.binary_cross_entropy_with_logits(side_logits[:, 0], mirrored.float(),
                                                      reduction="none")  # [P]
            losses["loss_kpt_side"] = self.side_weight * (side * known).sum() / n
        l_oks = oks_loss(xy, gt, areas, self.sigmas).sum() / n
        l_vis = visibility_loss(vis_logits, gt[..., 2]).mean(-1).sum() / n
        l_l1 = self.l1_weight * keypoint_l1(xy, gt, areas) / n
        losses |= {"loss_kpt": l_oks, "loss_kpt_l1": l_l1, "loss_kpt_vis": l_vis}
        if self.num_heatmaps:
            heat_loss = self._heatmap_loss(pred, matches) / matches.num_labelled_keypoints
            losses["loss_kpt_heat"] = HEATMAP_WEIGHT * heat_loss
        return losses | always

    def _finest(self, pred: Tensor, matches: Matches) -> tuple[Tensor, Tensor, Tensor, float]:
        """The finest level's heatmap logits [B, M, J] and fields [B, M, F, 2] (`maps`), its
        cell centres [M, 2] (pixels) and its stride."""
        m = matches.num_anchors_per_level[0]
        heat, field = self._split_maps(self.maps(pred, m))
        anchors = matches.anchors[:m]  # [M, 4]: one per cell
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2  # [M, 2]
        stride = float(centres[1, 0] - centres[0, 0]) if m > 1 else 1.0
        return heat, field, centres, stride

    def _image_order(self, keypoints: Tensor) -> Tensor:
        """Ground truth [N, K, 3] with each pair in image-left, image-right order where
        handedness is on (what the head regresses and refines); unchanged otherwise."""
        if not self.handed:
            return keypoints
        return swap_pairs(keypoints, self.swap, handedness(keypoints, self.pairs)[0])

    def _field_loss(self, pred: Tensor, matches: Matches) -> Tensor:
        """Mean L1 (cells) of the finest level's offset fields over the cells within reach of a
        labelled joint of their keypoint (`field_targets`; the count of those cells is summed
        over DDP ranks, as the other normalisers)."""
        if not matches.targets:
            return pred.sum() * 0.0
        _, field, centres, stride = self._finest(pred, matches)  # field [B, M, F, 2]
        none = centres.new_zeros(0, self.num_keypoints, 3)
        targets, trained = zip(*[
            field_targets(centres, self._image_order(
                none if t.keypoints is None else t.keypoints.to(centres)),
                self.field_members, stride)
            for t in matches.targets])
        mask = torch.stack(trained)  # [B, M, F]
        error = (field - torch.stack(targets)).abs().sum(-1)  # [B, M, F]
        return (error * mask).sum() / loss_normalizers(mask.sum()[None])[0]

    def _heatmap_loss(self, pred: Tensor, matches: Matches) -> Tensor:
        """Quality focal loss of the finest level's heatmap logits against Gaussians at every
        labelled keypoint of the batch (`heatmap_targets`), summed."""
        logits, _, centres, stride = self._finest(pred, matches)  # [B, M, J]
        m = len(centres)
        targets = torch.stack([
            heatmap_targets(centres, t.keypoints.to(centres), t.areas.to(centres), self.sigmas,
                            self.groups, self.num_heatmaps, stride)
            if t.keypoints is not None else logits.new_zeros(m, self.num_heatmaps)
            for t in matches.targets])  # [B, M, J]
        return quality_focal_loss(logits, targets).sum()

    def decode(self, pred: Tensor, anchors: Tensor, maps: Tensor | None = None,
               size: tuple[int, int] = (0, 0), stride: float = 1.0,
               sides: Tensor | None = None) -> Tensor:
        """pred [..., 3K + S + J + 2F] and their anchors [..., 4] xyxy (broadcast) -> [..., K, 3]
        keypoints (x, y, visibility probability).

        With ``maps`` (`maps` of the finest level, size (H, W) and stride; pred and anchors then
        [B, N, ...], maps [B, H * W, J + 2F]), refined on them (`refine`); then, with
        handedness, each pair swapped back from image-left, image-right order where the object's
        handedness logit is positive: its logit in ``pred``, or with the crop classifier
        ``sides`` [...] (`crop_sides`; without them the pairs stay in image order)."""
        offsets, vis_logits, side_logits = self._split(pred.float())
        xy = self.coder.decode_points(offsets, anchors)  # [..., K, 2]
        keypoints = torch.cat([xy, vis_logits.sigmoid()[..., None]], dim=-1)  # [..., K, 3]
        if maps is not None:
            keypoints = self.refine(keypoints, maps, size, stride)
        if self.num_sides:
            sides = side_logits[..., 0]
        if self.handed and sides is not None:
            keypoints = swap_pairs(keypoints, self.swap, sides > 0)
        return keypoints

    def crop_sides(self, crop_features: Tensor | None, boxes: Tensor) -> Tensor | None:
        """The crop classifier's handedness logits [B, N] of detections with ``boxes``
        [B, N, 4] (input pixels) on ``crop_features`` [B, C, H, W]; None without it."""
        if self.side_crop is None:
            return None
        if crop_features is None:
            raise ValueError("this keypoint head's handedness reads crop_features")
        return self.side_crop(crop_features, boxes)

    def refine(self, keypoints: Tensor, maps: Tensor, size: tuple[int, int],
               stride: float) -> Tensor:
        """``keypoints`` [B, N, K, 3] (in image-left, image-right order with handedness) snapped
        onto the finest level's heatmaps (`refine_keypoints`), then walked along its offset
        fields (`refine_with_field`); ``maps`` [B, H * W, J + 2F] from `maps`. Unchanged when
        the head has neither."""
        heat, field = self._split_maps(maps)
        if self.num_heatmaps:
            keypoints = refine_keypoints(keypoints, heat, self.groups, size, stride)
        if self.num_fields:
            keypoints = refine_with_field(keypoints, field, self.field_groups, size, stride)
        return keypoints
