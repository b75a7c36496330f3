"""torchvision's NMS and RoIAlign operators, without importing torchvision's Python package.

``import torchvision`` imports ``torch._dynamo`` (through ``torchvision.ops.roi_align``): about 1 s
of every command's start on a 2-core machine, for a predictor that needs two compiled operators
of torchvision's. They are registered by torchvision's extension library, which this loads the
way torchvision does (``torch.ops.load_library``), and are called as ``torchvision.ops.nms`` and
``torchvision.ops.roi_align`` call them: the same kernels, the same results (tests compare).

What the library does not hold, torchvision's Python package registers: the operators' autograd
and autocast rules. So a call that needs a gradient, or runs under autocast, imports torchvision
first (training does anyway), and so does any call where the library cannot be found or loaded.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util

import torch
from torch import Tensor

_registered = False
_LIBRARIES = ("_C_stable", "_C")  # the extension's name in torchvision >= 0.25, and before


def _extension_path() -> str | None:
    """Path of torchvision's compiled operator library, found without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    loader = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    finder = importlib.machinery.FileFinder(spec.submodule_search_locations[0], loader)
    found = [s for s in map(finder.find_spec, _LIBRARIES) if s is not None]
    return found[0].origin if found else None


def _has_ops() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 (raises until the library is loaded)
    except (AttributeError, RuntimeError):
        return False
    return True


def register(tensor: Tensor | None = None) -> None:
    """Make ``torch.ops.torchvision.*`` available; with torchvision's autograd and autocast rules
    when ``tensor`` needs a gradient or autocast is on."""
    global _registered
    if tensor is not None and ((tensor.requires_grad and torch.is_grad_enabled())
                               or torch.is_autocast_enabled(tensor.device.type)):
        import torchvision  # noqa: F401  (imported once; then a dictionary lookup)
    if _registered:
        return
    if not _has_ops():
        path = _extension_path()
        try:
            if path is None:
                raise OSError("torchvision's extension library not found")
            torch.ops.load_library(path)
        except OSError:
            import torchvision  # noqa: F401  (registers them, at the cost of its import)
    _registered = True


def nms(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    """``torchvision.ops.nms``: boxes [N, 4] xyxy, scores [N] -> [M] int64 indices of the kept
    boxes by decreasing score (a box is dropped when its IoU with a kept one is above ``iou``)."""
    register(boxes)
    return torch.ops.torchvision.nms(boxes, scores, iou)


def roi_align(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """``torchvision.ops.roi_align`` with a square output: features [K, C, H, W], rois [M, 5]
    (map index, x0, y0, x1, y1 in input pixels) -> [M, C, output_size, output_size]."""
    register(features)
    return torch.ops.torchvision.roi_align(features, rois, spatial_scale, output_size,
                                           output_size, sampling_ratio, aligned)
