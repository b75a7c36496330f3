"""Export a `Detector` to TorchScript: the same `ExportGraph` as ONNX, traced, with NMS as a
scripted ``torchvision.ops.batched_nms`` loop (so any batch size works). `ExportMeta` is stored in
the archive as ``metadata.json``; `detect.export.archive` reads both back.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from detect.io import atomic_write_bytes
from detect.export.archive import METADATA_FILE
from detect.export.build import InputDtype, build_graph, build_meta, example_input
from detect.export.metadata import ExportMeta

if TYPE_CHECKING:
    from detect.api import Detector


def export_torchscript(det: "Detector", path: str | Path, image_size: int | None = None,
                       input_dtype: InputDtype = "uint8",
                       score_thresh: float | None = None) -> ExportMeta:
    """Write ``path`` (``torch.jit.save``); returns the metadata stored in it."""
    graph = build_graph(det, "torch", image_size, score_thresh)
    meta = build_meta(det, graph, input_dtype)
    extra = {METADATA_FILE: json.dumps(asdict(meta))}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings; "torch.jit is deprecated"
        traced = torch.jit.trace(graph, example_input(graph.image_size, input_dtype),
                                 check_trace=False)
        atomic_write_bytes(path, lambda f: torch.jit.save(traced, f, _extra_files=extra))
    return meta
