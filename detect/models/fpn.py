"""Feature Pyramid Network (Lin et al. 2017) with RetinaNet's extra levels.

[C3, C4, C5] at strides 8, 16, 32 -> [P3, ..., P(5 + extra_levels)] at strides 8 ... 128, all with
``out_channels`` channels. P6 is a 3x3 stride-2 conv on C5 or P5, P7 a 3x3 stride-2 conv on ReLU(P6).
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["none", "gn", "bn"]


def _norm_layer(norm: Norm, channels: int) -> nn.Module:
    if norm == "gn":
        return nn.GroupNorm(32, channels)
    return nn.BatchNorm2d(channels)


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: Norm) -> nn.Module:
    """kxk conv (stride 1, same size) followed by the norm; the conv has a bias only without norm."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm == "none")
    return conv if norm == "none" else nn.Sequential(conv, _norm_layer(norm, out_channels))


def _separable_conv_norm(channels: int, norm: Norm) -> nn.Module:
    """Depthwise 3x3 + pointwise 1x1 (+ norm): about 9x fewer multiply-adds than a full 3x3."""
    depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    return nn.Sequential(depthwise, _conv_norm(channels, channels, 1, norm))


class FPN(nn.Module):
    """Lateral 1x1 convs, top-down nearest upsampling and sum, 3x3 output convs, extra P6/P7.

    Args:
        in_channels: channels of [C3, C4, C5] (inputs at strides 8, 16, 32, each twice the last).
        out_channels: channels of every output level.
        extra_levels: 0 (P3-P5), 1 (+P6) or 2 (+P6, P7, RetinaNet).
        extra_from: P6 from "c5" (RetinaNet paper, torchvision's RetinaNet v2) or "p5" (torchvision's
            RetinaNet v1, FCOS).
        norm: norm after the lateral and output convs ("gn": 32 groups); extra levels have none.
        depthwise: depthwise-separable output convs (light mode for CPU).

    Attributes:
        strides: stride of each output level, e.g. [8, 16, 32, 64, 128].
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int = 256,
        extra_levels: int = 2,
        extra_from: Literal["c5", "p5"] = "p5",
        norm: Norm = "none",
        depthwise: bool = False,
    ) -> None:
        super().__init__()
        if extra_levels not in (0, 1, 2):
            raise ValueError(f"extra_levels must be 0, 1 or 2, got {extra_levels}")
        if extra_from not in ("c5", "p5"):
            raise ValueError(f"extra_from must be 'c5' or 'p5', got {extra_from!r}")
        if norm not in ("none", "gn", "bn"):
            raise ValueError(f"norm must be 'none', 'gn' or 'bn', got {norm!r}")
        self.extra_from = extra_from
        self.lateral = nn.ModuleList(_conv_norm(c, out_channels, 1, norm) for c in in_channels)
        self.output = nn.ModuleList(
            _separable_conv_norm(out_channels, norm) if depthwise else _conv_norm(out_channels, out_channels, 3, norm)
            for _ in in_channels
        )
        extra_in = in_channels[-1] if extra_from == "c5" else out_channels
        self.extra = nn.ModuleList(
            nn.Conv2d(extra_in if i == 0 else out_channels, out_channels, 3, stride=2, padding=1)
            for i in range(extra_levels)
        )
        self.strides = [8 * 2**i for i in range(len(in_channels) + extra_levels)]
        self._init_weights()

    def _init_weights(self) -> None:
        # as torchvision's FPN and LastLevelP6P7
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """[C3, C4, C5], Ci [B, in_channels[i], Hi, Wi] -> [P3, ..., P7], Pl [B, out_channels, Hl, Wl].

        H6 = ceil(H5 / 2), H7 = ceil(H6 / 2); any input sizes work (upsampling uses each size).
        """
        if len(features) != len(self.lateral):
            raise ValueError(f"FPN expects {len(self.lateral)} feature maps, got {len(features)}")
        laterals = [conv(f) for conv, f in zip(self.lateral, features)]  # each [B, C, Hi, Wi]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            top_down = F.interpolate(merged[0], size=lateral.shape[-2:], mode="nearest")  # [B, C, Hi, Wi]
            merged.insert(0, lateral + top_down)
        outs = [conv(m) for conv, m in zip(self.output, merged)]  # P3..P5
        x = features[-1] if self.extra_from == "c5" else outs[-1]
        for i, conv in enumerate(self.extra):
            x = conv(x if i == 0 else F.relu(x))  # P6 from C5/P5, P7 from ReLU(P6)
            outs.append(x)
        return outs
