"""Keypoint head: per anchor, K offsets from the anchor centre (in anchor sizes), K visibility
logits and, optionally, a handedness logit and F short-range offset fields
(`detect.heads.keypoint_field`: the regression finds the joint, the field, read on the finest
level, places it). It decodes the final detections only and is evaluated as COCO ``keypoints``.

Offsets are relative to the anchor, not to the detected box: relative to the box, training (on
ground-truth boxes) and inference (on predicted ones) would disagree, and a box a few pixels off
would move every keypoint with it (docs/KEYPOINTS.md).

Loss: 1 - OKS plus BCE on visibility, over positives whose object has at least one labelled
keypoint (YOLO-Pose style), plus an L1 term on scale-normalised positions: 1 - OKS alone has
almost no gradient for keypoints far from their target (exp of a large negative).

Handedness (``handedness_pairs``): which of a person's two wrists is the left one depends on
whether the person faces the camera, which a young network cannot yet see; regressed directly,
each pair then collapses onto its midpoint (the average of the two answers). With handedness the
head regresses every left/right pair as (image-left, image-right), a geometry the image shows,
and predicts one logit per object for "its left keypoints lie on the image's right" (a person
facing the camera); decoding swaps the pairs back where that logit is positive (`swap_pairs`).
The logit is one more output per anchor, or, per detected person, comes from its crop of the
backbone's C4 map (``side_crop``, `detect.heads.keypoint_side`), which trains no shared layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detect.box_coder import BoxCoder
from detect.distributed import loss_normalizers
from detect.evaluation.coco_eval import keypoint_categories, keypoint_metrics
from detect.heads.base import InstanceHead, Selected, Tower, flatten_levels, predictor_conv
from detect.heads.fused import FoldCache, inference_form, sources
from detect.heads.keypoint_field import field_targets, refine_with_field, type_members
from detect.heads.keypoint_side import CropHandedness, handedness
from detect.losses import keypoint_l1, oks_loss, visibility_loss
from detect.structures import Matches, partner_index


def swap_pairs(x: Tensor, swap: Tensor, where: Tensor) -> Tensor:
    """``x`` [..., K, D] with every keypoint exchanged with its partner (``swap`` [K], from
    `detect.structures.partner_index`) in the rows where ``where`` [...] is True."""
    return torch.where(where[..., None, None], x[..., swap, :], x)


class KeypointHead(InstanceHead):
    """pred [B, A, 3K + S + 2F]: (dx, dy) per keypoint, from the anchor centre in anchor sizes,
    then K visibility logits, then S = 1 handedness logit with ``handedness_pairs`` and no crop
    classifier (else 0), then F (dx, dy) offset fields (``field_groups``: the field of each
    keypoint, `detect.heads.keypoint_field`; none without them). Fields are predicted and read on
    the finest level only, by their own ``map_predictor`` (3x3); their channels are zero on the
    other levels.

    Losses (divided by the number of contributing positives, at least 1, over DDP ranks):
    ``loss_kpt`` (1 - OKS with per-keypoint ``sigmas`` and the matched object's area as scale),
    ``loss_kpt_l1`` (mean L1 distance of labelled keypoints divided by sqrt(area), times
    ``l1_weight``) and ``loss_kpt_vis`` (BCE of "labelled" on every keypoint); with handedness
    ``loss_kpt_side`` (BCE of `handedness` on the objects it is known for, times
    ``side_weight``; positions and visibilities are then compared with the targets in
    image-left, image-right order; with the crop classifier its BCE on the batch's persons,
    `CropHandedness.loss`); with fields ``loss_kpt_field`` (mean L1 in cells over the finest
    level's cells within reach of a joint, times ``field_weight``). With no contributing positive
    all are ``0 * pred.sum()``: zero, finite, and still connected to the graph.
    """

    name = "keypoints"
    geometry = "points"

    def __init__(self, in_channels: int, num_anchors: int, num_keypoints: int, tower: Tower | None,
                 coder: BoxCoder, sigmas: tuple[float, ...], l1_weight: float = 1.0,
                 handedness_pairs: tuple[tuple[int, int], ...] = (), side_weight: float = 1.0,
                 field_groups: list[int] | None = None, field_weight: float = 1.0,
                 side_crop: CropHandedness | None = None, crop_level: int = 2) -> None:
        fields = field_groups or []
        if side_crop is not None and not handedness_pairs:
            raise ValueError("a crop handedness classifier needs handedness_pairs")
        # S: the per-anchor handedness logit; none with the crop classifier (per detection)
        sides = 1 if handedness_pairs and side_crop is None else 0
        super().__init__(in_channels, num_anchors, num_keypoints * 3 + sides, tower)
        num_maps = 2 * len(set(fields))
        self.outputs_per_anchor += num_maps
        self.map_predictor = predictor_conv(in_channels, num_maps) if num_maps else None
        self.side_crop, self.crop_level = side_crop, crop_level
        # the crop classifier reads the backbone detached: its term trains it alone
        self.own_terms = ("loss_kpt_side",) if side_crop is not None else ()
        if len(sigmas) != num_keypoints:
            raise ValueError(f"{len(sigmas)} sigmas for {num_keypoints} keypoints")
        if fields and (len(fields) != num_keypoints or num_anchors != 1):
            raise ValueError(f"keypoint offset fields need one group per keypoint and one anchor "
                             f"per location (got {len(fields)} groups, {num_anchors} anchors)")
        self.num_keypoints, self.num_fields, self.num_sides = num_keypoints, len(set(fields)), sides
        self.handed = bool(handedness_pairs)  # pairs in image order, swapped back in decoding
        self.l1_weight, self.side_weight, self.field_weight = l1_weight, side_weight, field_weight
        self.coder = coder
        self.register_buffer("sigmas", torch.tensor(sigmas, dtype=torch.float32), persistent=False)
        self.sigma_values = tuple(float(s) for s in sigmas)  # for evaluation, as configured
        self.register_buffer("field_groups", torch.tensor(fields, dtype=torch.int64),
                             persistent=False)
        members = type_members(fields)  # [F, G]
        self.register_buffer("field_members", torch.tensor(members, dtype=torch.int64) if members
                             else torch.zeros(0, 0, dtype=torch.int64), persistent=False)
        self.register_buffer("pairs", torch.tensor(handedness_pairs, dtype=torch.int64).view(-1, 2),
                             persistent=False)
        swap = torch.tensor(partner_index(num_keypoints, handedness_pairs), dtype=torch.int64)
        self.register_buffer("swap", swap, persistent=False)
        self.fold_cache = FoldCache()  # the finest level's joined predictors (`forward`)

    def forward(self, features: list[Tensor]) -> Tensor:
        """features: per level [B, C, H_l, W_l] -> [B, A, 3K + S + 2F]; the 2F field channels
        are predicted on the finest level and zero on the others (never read there). In
        evaluation without autograd the finest level's two predictors run as one convolution
        (`detect.heads.fused`)."""
        if self.tower is not None:
            features = self.tower(features)
        per_anchor = self.predictor.out_channels // self.num_anchors
        if self.map_predictor is None:
            return flatten_levels([self.predictor(f) for f in features], per_anchor)
        if inference_form(self):
            weight, bias = self.fold_cache.get(
                0, sources(self.predictor, self.map_predictor), lambda: (
                    torch.cat([self.predictor.weight, self.map_predictor.weight]),
                    torch.cat([self.predictor.bias, self.map_predictor.bias])))
            finest = F.conv2d(features[0], weight, bias, padding=self.predictor.padding)
            first, maps = finest.split([self.predictor.out_channels,
                                        self.map_predictor.out_channels], 1)
        else:
            first, maps = self.predictor(features[0]), self.map_predictor(features[0])
        pred = flatten_levels([first] + [self.predictor(f) for f in features[1:]], per_anchor)
        maps = flatten_levels([maps], self.map_predictor.out_channels)  # [B, A_0, 2F]
        return torch.cat([pred, F.pad(maps, (0, 0, 0, pred.shape[1] - maps.shape[1]))], -1)

    def extra_map(self, features: list[Tensor], levels: list[Tensor]) -> Tensor | None:
        """With the crop classifier, the backbone map it reads (C4; read detached there)."""
        return levels[self.crop_level] if self.side_crop is not None else None

    @property
    def own_lr_scale(self) -> float:
        return 1.0 if self.side_crop is None else self.side_crop.lr_scale

    def own_parameters(self) -> list[torch.nn.Parameter]:
        """The crop classifier's parameters: only ``loss_kpt_side`` trains them."""
        return [] if self.side_crop is None else list(self.side_crop.parameters())

    def _split(self, pred: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """pred [..., 3K + S + 2F] -> offsets [..., K, 2], visibility logits [..., K],
        handedness logits [..., S]."""
        k = self.num_keypoints
        offsets = pred[..., : 2 * k].unflatten(-1, (k, 2))  # [..., K, 2]
        return offsets, pred[..., 2 * k:3 * k], pred[..., 3 * k:3 * k + self.num_sides]

    def fields_of(self, pred: Tensor, num_finest: int) -> Tensor:
        """[B, A_0, F, 2] offset fields of the finest level's ``num_finest`` rows of ``pred``."""
        start = 3 * self.num_keypoints + self.num_sides
        return pred[:, :num_finest, start:].float().unflatten(-1, (self.num_fields, 2))

    def loss(self, pred: Tensor, matches: Matches, extra: Tensor | None = None
             ) -> dict[str, Tensor]:
        """The losses above; with the crop classifier ``extra`` is the map it reads
        (`extra_map`)."""
        zero = pred.sum() * 0.0
        # the normalisers are collectives under DDP: computed on every call, on every rank
        always = ({"loss_kpt_field": self.field_weight * self._field_loss(pred, matches)}
                  if self.num_fields else {})
        if self.side_crop is not None:
            if extra is None:
                raise ValueError("this keypoint head's handedness reads its extra map")
            always["loss_kpt_side"] = self.side_weight * self.side_crop.loss(
                extra, matches.targets, self.pairs)
        gt_all = self._matched_keypoints(matches)  # [B, A, K, 3] or None
        # [B, A]: positives whose object has at least one labelled keypoint
        use = (torch.zeros_like(matches.positive) if gt_all is None
               else matches.positive & (gt_all[..., 2] > 0).any(-1))
        n = loss_normalizers(use.sum()[None])[0]
        empty = {"loss_kpt": zero, "loss_kpt_l1": zero, "loss_kpt_vis": zero}
        if self.num_sides:
            empty["loss_kpt_side"] = zero
        if gt_all is None or not bool(use.any()):
            return empty | always
        offsets, vis_logits, side_logits = self._split(pred[use].float())  # [P, K, 2], [P, K], [P, S]
        anchors = matches.anchors.expand(use.shape[0], -1, -1)[use]  # [P, 4]
        xy = self.coder.decode_points(offsets, anchors)  # [P, K, 2]
        gt, areas = gt_all[use], matches.areas[use]  # [P, K, 3], [P]
        losses = {}
        if self.handed:  # compare in image-left, image-right order; learn which side is left
            mirrored, known = handedness(gt, self.pairs)  # [P], [P]
            gt = swap_pairs(gt, self.swap, mirrored)
        if self.num_sides:
            side = F.binary_cross_entropy_with_logits(side_logits[:, 0], mirrored.float(),
                                                      reduction="none")  # [P]
            losses["loss_kpt_side"] = self.side_weight * (side * known).sum() / n
        losses["loss_kpt"] = oks_loss(xy, gt, areas, self.sigmas).sum() / n
        losses["loss_kpt_l1"] = self.l1_weight * keypoint_l1(xy, gt, areas) / n
        losses["loss_kpt_vis"] = visibility_loss(vis_logits, gt[..., 2]).mean(-1).sum() / n
        return losses | always

    def _matched_keypoints(self, matches: Matches) -> Tensor | None:
        """[B, A, K, 3] the matched objects' keypoints (zeros where not positive or the image has
        none), or None when no image of the batch has keypoints."""
        if all(t.keypoints is None for t in matches.targets):
            return None
        dev = matches.anchors.device
        kpts = [t.keypoints if t.keypoints is not None
                else torch.zeros(len(t.boxes), self.num_keypoints, 3)  # visibility 0
                for t in matches.targets]
        return matches.gather([k.to(device=dev, dtype=torch.float32) for k in kpts], 0.0)

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
        m = matches.num_anchors_per_level[0]
        field = self.fields_of(pred, m)  # [B, M, F, 2]
        anchors = matches.anchors[:m]  # [M, 4]: one per cell
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2  # [M, 2]
        stride = float(centres[1, 0] - centres[0, 0]) if m > 1 else 1.0
        none = centres.new_zeros(0, self.num_keypoints, 3)
        targets, trained = zip(*[
            field_targets(centres, self._image_order(
                none if t.keypoints is None else t.keypoints.to(centres)),
                self.field_members, stride)
            for t in matches.targets])
        mask = torch.stack(trained)  # [B, M, F]
        error = (field - torch.stack(targets)).abs().sum(-1)  # [B, M, F]
        return (error * mask).sum() / loss_normalizers(mask.sum()[None])[0]

    def decode(self, pred: Tensor, anchors: Tensor, sides: Tensor | None = None) -> Tensor:
        """pred [..., 3K + S + 2F] and their anchors [..., 4] xyxy (broadcast) -> [..., K, 3]
        keypoints (x, y, visibility probability), with handedness each pair swapped back from
        image-left, image-right order where the object's handedness logit is positive (its logit
        in ``pred``, or ``sides`` [...] from the crop classifier; without, pairs stay in image
        order). Not refined on the offset fields (`decode_detections` is)."""
        offsets, vis_logits, side_logits = self._split(pred.float())
        xy = self.coder.decode_points(offsets, anchors)  # [..., K, 2]
        keypoints = torch.cat([xy, vis_logits.sigmoid()[..., None]], dim=-1)  # [..., K, 3]
        return self._orient(keypoints, side_logits[..., 0] if self.num_sides else sides)

    def _orient(self, keypoints: Tensor, sides: Tensor | None) -> Tensor:
        if self.handed and sides is not None:
            return swap_pairs(keypoints, self.swap, sides > 0)
        return keypoints

    def decode_detections(self, pred: Tensor, extra: Tensor | None, sel: Selected) -> Tensor:
        """Keypoints [B, N, K, 3] of the detections: decoded at their anchors, walked along the
        finest level's offset fields (`refine_with_field`), oriented by the handedness logit or
        the crop classifier's logits on the detections' boxes (on ``extra``), and zeros for
        classes without keypoints."""
        if sel.anchor_index.numel() == 0:  # no detections: nothing to decode or crop
            return pred.new_zeros(*sel.anchor_index.shape, self.num_keypoints, 3, dtype=torch.float32)
        picked = pred.gather(1, sel.anchor_index[..., None].expand(-1, -1, pred.shape[-1]))
        offsets, vis_logits, side_logits = self._split(picked.float())  # [B, N, ...]
        xy = self.coder.decode_points(offsets, sel.anchors)  # [B, N, K, 2]
        kpts = torch.cat([xy, vis_logits.sigmoid()[..., None]], dim=-1)  # [B, N, K, 3]
        if self.num_fields:
            field = self.fields_of(pred, sel.num_anchors_per_level[0])  # [B, H_0 W_0, F, 2]
            kpts = refine_with_field(kpts, field, self.field_groups, sel.feature_sizes[0],
                                     sel.strides[0])
        sides = side_logits[..., 0] if self.num_sides else None
        if self.side_crop is not None:
            if extra is None:
                raise ValueError("this keypoint head's handedness reads its extra map")
            sides = self.side_crop(extra, sel.boxes)  # [B, N]
        return self.mask_detections(self._orient(kpts, sides), sel.labels)

    def evaluate(self, gt: dict, predictions: list[dict], backend: str,
                 class_names: dict[int, str]) -> dict[str, dict]:
        """COCO ``keypoints`` with this head's sigmas, where the ground truth has keypoints."""
        if not keypoint_categories(gt):
            return {}
        return {"keypoints": keypoint_metrics(gt, predictions, backend, self.sigma_values)}
