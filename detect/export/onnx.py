"""Export a `Detector` to ONNX: normalisation, network, decoding, class-aware NMS
(``NonMaxSuppression``) and the keypoint gather in one graph, with `ExportMeta` as
``metadata_props``.

Uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs no extra package and lets
`detect.export.graph` map its NMS to the ONNX op through a symbolic function.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch

from detect.io import atomic_write_bytes
from detect.export.build import InputDtype, build_graph, build_meta, example_input
from detect.export.metadata import ExportMeta

if TYPE_CHECKING:
    from detect.api import Detector

OPSET = 17


def export_onnx(det: "Detector", path: str | Path, image_size: int | None = None,
                dynamic_batch: bool = False, input_dtype: InputDtype = "uint8",
                score_thresh: float | None = None) -> ExportMeta:
    """Write ``path``; input ``images`` [B, 3, S, S] (B = 1 unless ``dynamic_batch``).

    Returns the metadata stored in the file.
    """
    graph = build_graph(det, "onnx", image_size, score_thresh)
    meta = build_meta(det, graph, input_dtype)
    names = list(graph.output_names)
    dynamic = {n: {0: "batch"} for n in ["images", *names]} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy-exporter notice and tracer warnings
        torch.onnx.export(graph, (example_input(graph.image_size, input_dtype),), buffer,
                          dynamo=False, opset_version=OPSET, input_names=["images"],
                          output_names=names, dynamic_axes=dynamic)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = "detect: letterboxed RGB images in, detections out (see docs/EXPORT.md)"
    onnx.checker.check_model(model)
    atomic_write_bytes(path, lambda f: f.write(model.SerializeToString()))
    return meta


def read_meta(path: str | Path) -> ExportMeta:
    """The `ExportMeta` of an exported ONNX file (without loading the weights' graph twice)."""
    model = onnx.load(str(path), load_external_data=False)
    return ExportMeta.from_props({p.key: p.value for p in model.metadata_props}, str(path))
