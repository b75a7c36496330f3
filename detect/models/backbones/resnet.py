"""torchvision ResNet-18/34/50 as a `Backbone`."""
from __future__ import annotations

from typing import Literal

import torchvision
from torch import Tensor

from detect.models.backbones.base import Backbone


class ResNetBackbone(Backbone):
    """torchvision ResNet-18/34/50; C2..C5 are the outputs of layer1..layer4.

    Stages for ``frozen_stages``: 0 stem (conv1, bn1), 1..4 layer1..layer4; so ``frozen_stages=2``
    freezes stem + layer1 (torchvision's ``trainable_layers=3``).
    """

    skip_prefixes = ("fc.",)
    inference_graph = "optimize_for_inference"  # R50 at 640: 1.10x eager, `freeze` alone 0.90x

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
        self.out_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.strides = [4, 8, 16, 32]

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

    def _stem(self, images: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(images))))

    def forward(self, images: Tensor) -> list[Tensor]:
        """[B, 3, H, W] -> [C2 [B, C, H/4, W/4], C3 [.., H/8, W/8], C4 [.., H/16, W/16],
        C5 [.., H/32, W/32]]."""
        x = self.stage(0, self._stem, images)  # [B, 64, H/4, W/4]
        c2 = self.stage(1, self.layer1, x)  # [B, 64 * e, H/4, W/4]
        c3 = self.stage(2, self.layer2, c2)  # [B, 128 * e, H/8, W/8]
        c4 = self.stage(3, self.layer3, c3)  # [B, 256 * e, H/16, W/16]
        c5 = self.stage(4, self.layer4, c4)  # [B, 512 * e, H/32, W/32]
        return [c2, c3, c4, c5]
