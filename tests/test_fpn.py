"""FPN: shapes and strides per configuration, and equality with torchvision's FPN + LastLevelP6P7."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detect.models.fpn import FPN

IN_CHANNELS = [40, 112, 320]


def _features(h: int, w: int, batch: int = 2) -> list[Tensor]:
    """C3..C5 of an h x w image: sizes ceil(h / s) as a stride-s backbone gives."""
    sizes = [(-(-h // s), -(-w // s)) for s in (8, 16, 32)]
    return [torch.randn(batch, c, hh, ww) for c, (hh, ww) in zip(IN_CHANNELS, sizes)]


@pytest.mark.parametrize("extra_from", ["c5", "p5"])
@pytest.mark.parametrize(("extra_levels", "strides"), [(0, [8, 16, 32]), (1, [8, 16, 32, 64]), (2, [8, 16, 32, 64, 128])])
def test_shapes_and_strides(extra_from: str, extra_levels: int, strides: list[int]) -> None:
    fpn = FPN(IN_CHANNELS, out_channels=64, extra_levels=extra_levels, extra_from=extra_from)  # type: ignore[arg-type]
    outs = fpn(_features(128, 96))
    assert fpn.strides == strides
    assert [tuple(p.shape) for p in outs] == [(2, 64, -(-128 // s), -(-96 // s)) for s in strides]  # ceil


def test_extra_from_chooses_p6_input() -> None:
    assert FPN(IN_CHANNELS, 64, extra_from="c5").extra[0].in_channels == 320
    assert FPN(IN_CHANNELS, 64, extra_from="p5").extra[0].in_channels == 64


def test_odd_sizes() -> None:
    fpn = FPN(IN_CHANNELS, out_channels=32)
    outs = fpn(_features(100, 75))  # C3 13x10, C4 7x5, C5 4x3
    assert [tuple(p.shape[-2:]) for p in outs] == [(13, 10), (7, 5), (4, 3), (2, 2), (1, 1)]


@pytest.mark.parametrize(("norm", "depthwise"), [("gn", False), ("bn", False), ("none", True), ("gn", True)])
def test_norm_and_depthwise_shapes(norm: str, depthwise: bool) -> None:
    fpn = FPN(IN_CHANNELS, out_channels=64, norm=norm, depthwise=depthwise)  # type: ignore[arg-type]
    outs = fpn(_features(64, 64))
    assert [tuple(p.shape) for p in outs] == [(2, 64, -(-64 // s), -(-64 // s)) for s in fpn.strides]  # ceil
    has_norm = any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in fpn.modules())
    assert has_norm == (norm != "none")
    grouped = [m for m in fpn.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(grouped) == (3 if depthwise else 0)


def test_init_zero_bias() -> None:
    fpn = FPN(IN_CHANNELS, out_channels=64)
    convs = [m for m in fpn.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(torch.count_nonzero(m.bias) == 0 for m in convs)


def test_top_down_flow() -> None:
    """P3 sees C5 through the top-down path; P5 never sees C3."""
    fpn = FPN(IN_CHANNELS, out_channels=32, extra_levels=0)
    feats = [f.requires_grad_() for f in _features(64, 64)]
    p3, _, p5 = fpn(feats)
    assert torch.autograd.grad(p3.sum(), feats[2], retain_graph=True)[0].abs().sum() > 0
    assert torch.autograd.grad(p5.sum(), feats[0], allow_unused=True)[0] is None


@pytest.mark.parametrize("extra_from", ["c5", "p5"])
def test_matches_torchvision(extra_from: str) -> None:
    torch.manual_seed(0)
    ours = FPN(IN_CHANNELS, out_channels=64, extra_from=extra_from)  # type: ignore[arg-type]
    p6_in = 320 if extra_from == "c5" else 64  # torchvision takes P5 iff in == out channels
    ref = FeaturePyramidNetwork(IN_CHANNELS, 64, extra_blocks=LastLevelP6P7(p6_in, 64))
    with torch.no_grad():
        for i in range(3):
            ref.inner_blocks[i][0].weight.copy_(ours.lateral[i].weight)
            ref.inner_blocks[i][0].bias.copy_(ours.lateral[i].bias)
            ref.layer_blocks[i][0].weight.copy_(ours.output[i].weight)
            ref.layer_blocks[i][0].bias.copy_(ours.output[i].bias)
        for name, conv in zip(["p6", "p7"], ours.extra):
            getattr(ref.extra_blocks, name).weight.copy_(conv.weight)
            getattr(ref.extra_blocks, name).bias.copy_(conv.bias)
        feats = _features(96, 80)
        expected = list(ref(OrderedDict((f"c{i + 3}", f) for i, f in enumerate(feats))).values())
        got = ours(feats)
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="extra_levels"):
        FPN(IN_CHANNELS, extra_levels=3)
    with pytest.raises(ValueError, match="extra_from"):
        FPN(IN_CHANNELS, extra_from="c4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expects 3 feature maps"):
        FPN(IN_CHANNELS, 32)(_features(64, 64)[:2])
