"""Instance-mask head: prototypes and per-anchor coefficients (YOLACT; Ultralytics' ``Segment``).

A small network on P3 makes ``P`` prototype maps at ``stride`` (8: P3's resolution; 4: upsampled
once and joined by the backbone's C2, whose detail P3 no longer has), kept as the head's extra map
(`Head.extra_map`). Per anchor the head predicts ``P``
coefficients. A detection's mask is ``sigmoid(coefficients . prototypes)``, zero outside its box:
probabilities at the mask resolution, in the network's input pixels. They become the original
image's boolean masks in `detect.masks.masks_to_original` (logits resampled bilinearly,
thresholded at probability 0.5).

Loss ``loss_mask``: per positive anchor whose object has a mask, its mask logits and the object's
mask (at the input's resolution) are both read on a 28 x 28 grid in the object's box (RoIAlign,
bilinear: the logits between mask pixels as decoding resamples them, so a limb thinner than a
mask pixel still has its edges), and their BCE is averaged there (a small object weighs as much
as a large one), plus ``dice_weight`` times their dice loss; summed over those positives and
divided by their number over DDP ranks (at least 1).
Objects without a mask and images of a batch without masks add nothing; with none in the batch
the loss is zero and still reaches every parameter of the head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.distributed import loss_normalizers
from detect.kernels import roi_align
from detect.heads.base import InstanceHead, Selected, Tower, predictor_conv
from detect.structures import Matches, Target


class Prototypes(nn.Module):
    """P3 [B, F, H, W] (and C2 [B, F2, 2H, 2W] for stride 4) -> [B, P, H * 8 / stride,
    W * 8 / stride] prototype maps: conv 3x3; for stride 4 nearest 2x upsampling plus a 1x1
    conv of C2 (the backbone's stride-4 map: edges and thin parts that P3 has averaged away);
    conv 3x3, conv 1x1. Each conv but the last with BatchNorm, the 3x3s with ReLU.

    C2 lifted segm AP at the demo budget by 2-6 AP per seed (docs/MASKS.md)."""

    def __init__(self, in_channels: int, channels: int, num_prototypes: int, stride: int,
                 fine_channels: int = 0) -> None:
        super().__init__()
        self.upsample = stride == 4
        if self.upsample and not fine_channels:
            raise ValueError("prototypes at stride 4 read the backbone's C2: give its channels")
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.fine = nn.Sequential(nn.Conv2d(fine_channels, channels, 1, bias=False),
                                  nn.BatchNorm2d(channels)) if self.upsample else None
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(channels, num_prototypes, 1)

    def forward(self, p3: Tensor, c2: Tensor) -> Tensor:
        x = self.conv1(p3)
        if self.fine is not None:
            x = F.interpolate(x, size=c2.shape[-2:], mode="nearest") + self.fine(c2)
        return self.out(self.conv2(x))


def box_region(boxes: Tensor, height: int, width: int, stride: int) -> Tensor:
    """[..., 4] xyxy input-pixel boxes -> [..., height, width] float 0/1: the mask pixels whose
    centres ``(j + 0.5) * stride`` lie inside the box (``x0 <= c < x1``)."""
    xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride  # [W]
    ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride  # [H]
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))  # [..., 1]
    inside_x = ((xs >= x0) & (xs < x1)).to(boxes.dtype)  # [..., W]
    inside_y = ((ys >= y0) & (ys < y1)).to(boxes.dtype)  # [..., H]
    return inside_y[..., :, None] * inside_x[..., None, :]


SAMPLES = 28  # the mask loss reads logits and targets on a SAMPLES x SAMPLES grid in each box


def sample_in_boxes(maps: Tensor, index: Tensor, boxes: Tensor, stride: int) -> Tensor:
    """maps [K, C, H, W] at ``stride`` input pixels per pixel, boxes [M, 4] xyxy input pixels
    on maps ``index`` [M] -> [M, C, S, S]: the map read bilinearly at the centres of an S x S
    grid over each box (RoIAlign, one sample per bin, pixel centres at half pixels)."""
    rois = torch.cat([index[:, None].to(boxes.dtype), boxes], 1)  # [M, 5]
    return roi_align(maps, rois, SAMPLES, 1.0 / stride, sampling_ratio=1, aligned=True)


class MaskHead(InstanceHead):
    """pred [B, A, P]: the coefficients of each anchor's mask over the ``P`` prototypes of
    `extra_map` ([B, P, H_m, W_m], see the module docstring for the loss and decoding), from the
    tower and a 1x1 predictor."""

    name = "masks"
    geometry = "mask"

    def __init__(self, in_channels: int, num_anchors: int, tower: Tower | None,
                 prototypes: Prototypes, num_prototypes: int, stride: int,
                 dice_weight: float = 1.0) -> None:
        super().__init__(in_channels, num_anchors, num_prototypes, tower)
        # coefficients from a 1x1 predictor (as Ultralytics' Segment) in place of the base's 3x3
        # one, which cost 3 % of a call with 20 masks and gave worse masks (docs/MASKS.md)
        self.predictor = predictor_conv(in_channels, num_anchors * num_prototypes, 1)
        self.prototypes = prototypes
        self.stride = stride
        self.dice_weight = dice_weight

    def extra_map(self, features: list[Tensor], levels: list[Tensor]) -> Tensor:
        """[B, P, H_m, W_m] prototypes from P3 (and C2)."""
        return self.prototypes(features[0], levels[0])

    def loss(self, pred: Tensor, matches: Matches, extra: Tensor | None = None
             ) -> dict[str, Tensor]:
        if extra is None:
            raise ValueError("the mask head's loss needs its prototypes (extra_map)")
        total = pred.sum() * 0.0 + extra.sum() * 0.0  # reaches every parameter
        count = 0
        for b, target in enumerate(matches.targets):
            terms = self._image_loss(pred[b], extra[b], matches.matched[b], target)
            if terms is not None:
                total = total + terms.sum()
                count += len(terms)
        n = loss_normalizers(pred.new_tensor([float(count)]))[0]
        return {"loss_mask": total / n}

    def _image_loss(self, coef: Tensor, protos: Tensor, matched: Tensor, target: Target
                    ) -> Tensor | None:
        """coef [A, P], protos [P, H_m, W_m], matched [A] -> [M] the loss of each positive whose
        object has a mask (None: none)."""
        if target.masks is None or target.has_mask is None:
            return None
        pos = (matched >= 0).nonzero()[:, 0]
        obj = matched[pos]
        keep = target.has_mask[obj]
        pos, obj = pos[keep], obj[keep]
        if not len(pos):
            return None
        boxes = target.boxes.float()  # [N, 4]: each object's mask is read in its box
        every = torch.arange(len(boxes), device=boxes.device)
        gt = sample_in_boxes(target.masks.float()[:, None], every, boxes, 1)[obj, 0]  # [M, S, S]
        # sampling is linear: the prototypes sampled in each object's box, then combined
        protos = sample_in_boxes(protos.float()[None], every * 0, boxes, self.stride)  # [N, P, S, S]
        logits = torch.einsum("mp,mpij->mij", coef[pos].float(), protos[obj])  # [M, S, S]
        loss = F.binary_cross_entropy_with_logits(logits, gt, reduction="none").mean((1, 2))
        if self.dice_weight:
            p = logits.sigmoid()
            dice = 1 - (2 * (p * gt).sum((1, 2)) + 1) / (p.sum((1, 2)) + gt.sum((1, 2)) + 1)
            loss = loss + self.dice_weight * dice
        return loss

    def decode_detections(self, pred: Tensor, extra: Tensor | None, sel: Selected) -> Tensor:
        """[B, N, H_m, W_m] mask probabilities of the detections, zero outside their boxes and
        for classes without masks."""
        if extra is None:
            raise ValueError("the mask head's decoding needs its prototypes (extra_map)")
        b, p, h, w = extra.shape
        index = sel.anchor_index[..., None].expand(-1, -1, pred.shape[-1])  # [B, N, P]
        coef = pred.gather(1, index).float()  # [B, N, P]
        masks = torch.bmm(coef, extra.float().flatten(2)).sigmoid().view(b, -1, h, w)
        masks = masks * box_region(sel.boxes.float(), h, w, self.stride)
        return self.mask_detections(masks, sel.labels)

    def evaluate(self, gt: dict, predictions: list[dict], backend: str,
                 class_names: dict[int, str]) -> dict[str, dict]:
        """COCO ``segm`` on the categories this head serves that have masks in ``gt``
        (`detect.evaluation.segm`); none when ``gt`` has no segmentation of them."""
        from detect.evaluation.segm import mask_categories, segm_metrics

        ids = set(self.class_ids(list(class_names)) or class_names) & set(mask_categories(gt))
        if not ids:
            return {}
        return {"segm": segm_metrics(gt, predictions, backend, sorted(ids), class_names)}
