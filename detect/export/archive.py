"""The TorchScript archive read back: the module and the `ExportMeta` stored beside it as
``metadata.json``::

    files = {"metadata.json": ""}
    module = torch.jit.load(path, _extra_files=files)
    boxes, scores, labels, num_detections, keypoints = module(images)   # keypoints if K > 0

The reading side only, so `detect.export.runtime` does not import the writer
(`detect.export.torchscript`).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from detect.export.metadata import ExportMeta

METADATA_FILE = "metadata.json"


def load_torchscript(path: str | Path, device: str | torch.device = "cpu"
                     ) -> tuple[torch.jit.ScriptModule, ExportMeta]:
    """The module and its metadata; raises ValueError naming ``path`` without detect metadata."""
    files = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        module = torch.jit.load(str(path), map_location=device, _extra_files=files)
    if not files[METADATA_FILE]:
        raise ValueError(f"{path}: no detect export metadata ({METADATA_FILE})")
    return module.eval(), ExportMeta.from_dict(json.loads(files[METADATA_FILE]), str(path))
