"""torchvision MobileNetV3-Large as a `Backbone`."""
from __future__ import annotations

import bisect

import torchvision
from torch import Tensor
from torchvision.ops.misc import Conv2dNormActivation

from detect.models.backbones.base import Backbone


class MobileNetV3Backbone(Backbone):
    """torchvision MobileNetV3-Large ``features``; C2..C5 = outputs of features[3], [6], [12], [16].

    C2 [24 ch], C3 [40 ch] and C4 [112 ch] are the last blocks at strides 4, 8 and 16, C5 the
    final 1x1 conv [960 ch]. Stages for ``frozen_stages``: 0 stem features[0], then one stage per stride:
    features[1] (2), [2:4] (4), [4:7] (8), [7:13] (16), [13:17] (32).
    """

    skip_prefixes = ("classifier.",)
    _out_indices = (3, 6, 12, 16)
    _stage_bounds = (0, 1, 2, 4, 7, 13, 17)

    def __init__(self) -> None:
        super().__init__()
        self.features = torchvision.models.mobilenet_v3_large(weights=None).features
        self.out_channels = [24, 40, 112, 960]
        self.strides = [4, 8, 16, 32]

    def stages(self) -> list[tuple[str, ...]]:
        bounds = self._stage_bounds
        return [tuple(f"features.{i}" for i in range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [(f"features.{name}.0", f"features.{name}.1")  # Sequential(conv, BatchNorm, act)
                for name, m in self.features.named_modules() if isinstance(m, Conv2dNormActivation)]

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [C2 [B, 24, H/4, W/4], C3 [B, 40, H/8, W/8], C4 [B, 112, H/16, W/16],
        C5 [B, 960, H/32, W/32]]."""
        outs = []
        x = images
        for i, layer in enumerate(self.features):
            x = self.stage(bisect.bisect_right(self._stage_bounds, i) - 1, layer, x)
            if i in self._out_indices:
                outs.append(x)
        return outs
