"""The export graph: a `MultiHeadDetector` with decoding and post-processing, tensors in and out.

    images [B, 3, S, S] uint8 (or float 0-255) RGB, letterboxed to S x S
      -> model: normalisation, backbone, FPN, heads          [B, A, C], [B, A, 4], [B, A, D_h]
      -> per FPN level, top-k (anchor, class) scores          M candidates per image
      -> decode the candidates' boxes, clip to S x S         [B, M, 4]
      -> class-aware NMS                                      [B, M] kept
      -> the best D kept, each instance head's field decoded  padded to D = max_detections

Outputs (`DETECTION_OUTPUTS`, then one per instance head in the model's order, named as the
head): boxes [B, D, 4] xyxy in input pixels, scores [B, D], labels [B, D] original category ids
(-1 on padding), num_detections [B] int64, then each head's field [B, D, ...] (keypoints
[B, D, K, 3] (x, y, score)). Rows past ``num_detections`` are padding: zeros (labels -1).

The steps are those of `Detector.predict` (RetinaNet's recipe in `detect.nms`): the same per-level
top-k, strict score threshold, clipping and NMS IoU, so exported and eager detections agree. The
anchors are computed once for the fixed input size and held as a buffer.

NMS is class-aware by moving each class's boxes apart (by ``label * (S + 1)``; boxes are clipped to
S), so that one class-free NMS never lets two classes suppress each other, as in eager. It has two
implementations with the same result: ONNX ``NonMaxSuppression`` (boxes [B, M, 4], scores
[B, 1, M]) when exporting to ONNX, and `nms_reference` (``torchvision.ops.batched_nms`` per
image, scripted so that a traced TorchScript graph keeps its loop over the batch) otherwise.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detect.config import ConfigError, PostprocessConfig
from detect.heads.base import Selected
from detect.models.detector import MultiHeadDetector

NmsOp = Literal["onnx", "torch"]
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")


def nms_reference(boxes: Tensor, scores: Tensor, max_per_class: int, iou: float,
                  score_thresh: float) -> Tensor:
    """ONNX ``NonMaxSuppression`` semantics in PyTorch (``center_point_box=0``).

    Args:
        boxes: [B, M, 4] xyxy.
        scores: [B, C, M]; a (class, box) pair takes part when its score is above
            ``score_thresh``; pairs of different classes never suppress each other.
        max_per_class: most boxes kept per image and class.
        iou: a box is suppressed by a higher-scoring one of its class when IoU is above this.
    Returns:
        [S, 3] int64 (image, class, box) of the kept pairs.
    """
    selected = [torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)]
    for b in range(scores.shape[0]):
        pairs = torch.nonzero(scores[b] > score_thresh)  # [P, 2] (class, box)
        cls, box = pairs[:, 0], pairs[:, 1]
        keep = batched_nms(boxes[b, box], scores[b, cls, box], cls, iou)  # [P'] by score
        cls, box = cls[keep], box[keep]
        seen = F.one_hot(cls, scores.shape[1]).cumsum(0)  # [P', C]: boxes of each class so far
        rank = seen.gather(1, cls[:, None])[:, 0]  # [P'] 1-based rank within its class
        take = rank <= max_per_class
        image = torch.full_like(cls, b)
        selected.append(torch.stack([image[take], cls[take], box[take]], dim=1))
    return torch.cat(selected)


@functools.cache
def _scripted_nms():
    """`nms_reference` compiled once, on first use (compiling costs about a second)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated"
        return torch.jit.script(nms_reference)


class _OnnxNms(torch.autograd.Function):
    """`nms_reference` in PyTorch; the ONNX ``NonMaxSuppression`` op when exported."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float,
                score_thresh: float) -> Tensor:
        return nms_reference(boxes, scores, max_per_class, iou, score_thresh)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou: float, score_thresh: float):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op("NonMaxSuppression", boxes, scores, const(max_per_class, torch.int64),
                    const(iou, torch.float32), const(score_thresh, torch.float32),
                    center_point_box_i=0)


def _gather(values: Tensor, index: Tensor) -> Tensor:
    """values [B, N, D], index [B, M] -> [B, M, D]."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


class ExportGraph(nn.Module):
    """`MultiHeadDetector` + decoding + post-processing for one fixed square input size.

    Args:
        model: the detector (put in eval mode; its weights are shared, not copied).
        image_size: S, the side of the letterboxed input.
        params: post-processing settings (``soft_nms_sigma`` must be None).
        category_ids: original category id of each contiguous label; the graph outputs these.
        nms_op: "onnx" (``NonMaxSuppression`` when exported to ONNX) or "torch".
    """

    def __init__(self, model: MultiHeadDetector, image_size: int, params: PostprocessConfig,
                 category_ids: Sequence[int], nms_op: NmsOp = "torch") -> None:
        super().__init__()
        if params.soft_nms_sigma is not None:
            raise ConfigError("postprocess.soft_nms_sigma: soft-NMS cannot be exported; set it to "
                              "null (hard NMS) to export")
        self.model = model
        self.eval()  # inference only; exporters restore the wrapper's mode on exit, recursively
        self.image_size, self.params, self.nms_op = int(image_size), params, nms_op
        self.num_classes = len(category_ids)
        device = next(model.parameters()).device
        sizes = self.feature_sizes = self._feature_sizes(device)
        self.register_buffer("anchors", model.anchors(sizes, device).clone())  # [A, 4]
        self.per_level = model.anchor_generator.num_anchors_per_level(sizes)
        self.num_candidates = sum(min(params.topk_per_level, n * self.num_classes)
                                  for n in self.per_level)
        self.register_buffer("category_ids", torch.tensor(list(category_ids), dtype=torch.int64))

    def _feature_sizes(self, device: torch.device) -> list[tuple[int, int]]:
        """(H_l, W_l) of each FPN level for an S x S input: the network run once on a blank."""
        blank = torch.zeros(1, 3, self.image_size, self.image_size, dtype=torch.uint8)
        with torch.no_grad():
            return self.model(blank.to(device)).feature_sizes

    @property
    def output_names(self) -> tuple[str, ...]:
        return (*DETECTION_OUTPUTS, *self.model.instance_heads())

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """images [B, 3, S, S] -> (boxes, scores, labels, num_detections, *fields)."""
        m = self.model
        net = m(images)
        preds = net.preds
        scores = m.heads[m.score_head].decode(preds[m.score_head], self.anchors)  # [B, A, C]
        values, anchor_idx, labels = self._candidates(scores)  # [B, M] each
        deltas = _gather(preds[m.box_head], anchor_idx)  # [B, M, 4]
        boxes = m.heads[m.box_head].decode(deltas, self.anchors[anchor_idx])  # [B, M, 4]
        boxes = boxes.clamp(0, self.image_size)
        kept = self._nms(boxes, values, labels)  # [B, M] bool
        top, order = torch.where(kept, values, float("-inf")).topk(self._num_out(), dim=1)  # [B, D]
        valid = top > float("-inf")  # [B, D]
        out = {"boxes": _gather(boxes, order) * valid[..., None],
               "scores": torch.where(valid, top, 0.0),
               "labels": torch.where(valid, self.category_ids[labels.gather(1, order)], -1),
               "num_detections": valid.sum(1)}
        index = anchor_idx.gather(1, order)  # [B, D]
        sel = Selected(index, self.anchors[index], out["boxes"], labels.gather(1, order),
                       self.feature_sizes, list(m.anchor_generator.strides), self.per_level)
        for name, head in m.instance_heads().items():
            field = head.decode_detections(preds[name], net.maps.get(name), sel)  # [B, D, ...]
            out[name] = field * valid.view(*valid.shape, *([1] * (field.dim() - 2)))
        return tuple(v if k == "num_detections" else self._pad(v) for k, v in out.items())

    def _num_out(self) -> int:
        return min(self.params.max_detections, self.num_candidates)

    def _pad(self, x: Tensor) -> Tensor:
        """[B, D', ...] -> [B, max_detections, ...]: zeros (labels -1) after the D' rows."""
        missing = self.params.max_detections - x.shape[1]
        if missing == 0:
            return x
        fill = -1 if x.dtype == torch.int64 else 0
        pad = [0, 0] * (x.dim() - 2) + [0, missing]
        return F.pad(x, pad, value=fill)

    def _candidates(self, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per level, the top-k (anchor, class) pairs, as `detect.nms` takes them.

        scores [B, A, C] -> values [B, M] (-inf where not above the threshold), anchor indices
        [B, M] into A, labels [B, M].
        """
        values, anchors, labels = [], [], []
        start = 0
        for n in self.per_level:
            level = scores[:, start:start + n].flatten(1)  # [B, A_l * C]
            k = min(self.params.topk_per_level, n * self.num_classes)
            top, flat = level.topk(k, dim=1)  # [B, k]
            values.append(top)
            anchors.append(torch.div(flat, self.num_classes, rounding_mode="floor") + start)
            labels.append(flat % self.num_classes)
            start += n
        values_t = torch.cat(values, 1)  # [B, M]
        values_t = torch.where(values_t > self.params.score_thresh, values_t, float("-inf"))
        return values_t, torch.cat(anchors, 1), torch.cat(labels, 1)

    def _nms(self, boxes: Tensor, values: Tensor, labels: Tensor) -> Tensor:
        """Class-aware (or class-agnostic) NMS: boxes [B, M, 4], values, labels [B, M] ->
        kept [B, M] bool."""
        if not self.params.class_agnostic:  # classes moved apart, as `detect.nms.nms_keep`
            boxes = boxes + labels[..., None].to(boxes) * (self.image_size + 1)  # (clipped to S)
        class_scores = values[:, None, :]  # [B, 1, M]: one NMS (a [B, C, M] one cost 2 ms more)
        args = (boxes, class_scores, self._num_out(), self.params.nms_iou,
                self.params.score_thresh)
        selected = _OnnxNms.apply(*args) if self.nms_op == "onnx" else _scripted_nms()(*args)
        flat = selected[:, 0] * values.shape[1] + selected[:, 2]  # [S] into B * M
        kept = torch.zeros_like(values.flatten()).scatter(0, flat, 1.0)  # [B * M]
        return kept.view_as(values) > 0
