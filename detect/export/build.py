"""A `Detector` -> the graph to export, its metadata and an example input: the one place where
export options meet the model."""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from detect.config import ConfigError
from detect.export.graph import ExportGraph, NmsOp
from detect.export.metadata import ExportMeta

if TYPE_CHECKING:
    from detect.api import Detector

InputDtype = Literal["uint8", "float32"]


def build_graph(det: "Detector", nms_op: NmsOp, image_size: int | None = None,
                score_thresh: float | None = None) -> ExportGraph:
    """The detector's model (shared, or copied to the CPU) and post-processing as an
    `ExportGraph` on the CPU.

    ``image_size`` defaults to the detector's (``data.image_size``), ``score_thresh`` to its
    post-processing threshold.
    """
    size = det.image_size if image_size is None else image_size
    if size <= 0:
        raise ConfigError(f"image size must be positive, got {size}")
    params = det.params if score_thresh is None else replace(det.params, score_thresh=score_thresh)
    model = det.model
    if next(model.parameters()).device.type != "cpu":  # export on the CPU, leave det as it is
        model = copy.deepcopy(model).cpu()
    return ExportGraph(model, size, params, det.categories.ids, nms_op)


def build_meta(det: "Detector", graph: ExportGraph, input_dtype: InputDtype) -> ExportMeta:
    p, kmeta = graph.params, det.keypoints
    ids = list(det.categories.ids)
    fields = {name: {"geometry": head.geometry, "category_ids": head.class_ids(ids),
                     **({"stride": head.stride} if head.geometry == "mask" else {})}
              for name, head in graph.model.instance_heads().items()}
    return ExportMeta(
        input_size=graph.image_size, input_dtype=input_dtype,
        class_names=list(det.categories.names), category_ids=list(det.categories.ids),
        keypoint_names=list(kmeta.names) if kmeta else [],
        skeleton=[list(e) for e in kmeta.skeleton] if kmeta else [],
        score_threshold=p.score_thresh, nms_iou=p.nms_iou, max_detections=p.max_detections,
        topk_per_level=p.topk_per_level, class_agnostic=p.class_agnostic,
        max_pixels=det.cfg.data.max_pixels, outputs=list(graph.output_names), fields=fields)


def example_input(size: int, input_dtype: InputDtype) -> Tensor:
    """[1, 3, size, size] noise: what tracing runs the graph on."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1, 3, size, size), generator=g, dtype=torch.uint8)
    return images if input_dtype == "uint8" else images.float()
