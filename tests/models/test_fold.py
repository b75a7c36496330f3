"""Frozen BatchNorm folded into the convolution before it: same outputs, same gradients, same
state-dict keys, and the BatchNorm buffers still drive the result after loading or copying."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detect.models.backbone import build_backbone
from detect.models.backbones.layers import FrozenBatchNorm2d, SameConv2d
from detect.models.fold import FoldedBatchNorm2d, FoldedConv2d

NAMES = ["resnet18", "mobilenet_v3_large", "efficientnet_lite0"]


def _randomise_frozen_bn(module: nn.Module) -> None:
    """Non-trivial statistics and affine, so that a wrong scale, shift or eps shows."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def _pair(name: str, frozen_stages: int = 0) -> tuple[nn.Module, nn.Module]:
    """(unfolded, folded) backbones with the same weights."""
    torch.manual_seed(0)
    plain = build_backbone(name, frozen_stages=frozen_stages, fold_bn=False)
    _randomise_frozen_bn(plain)
    folded = build_backbone(name, frozen_stages=frozen_stages)
    folded.load_state_dict(plain.state_dict())
    return plain, folded


@pytest.mark.parametrize("name", NAMES)
def test_every_frozen_batchnorm_is_folded_and_keys_are_unchanged(name: str) -> None:
    plain, folded = _pair(name)
    num_bn = sum(isinstance(m, FrozenBatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, FoldedConv2d) for m in folded.modules()) == num_bn > 0
    assert not any(type(m) is FrozenBatchNorm2d for m in folded.modules())
    assert list(folded.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in folded.named_parameters()] == [n for n, _ in plain.named_parameters()]


@pytest.mark.parametrize("name", NAMES)
def test_outputs_equal(name: str) -> None:
    plain, folded = _pair(name)
    images = torch.randn(2, 3, 70, 90)  # odd sizes: TF "SAME" padding differs per side
    with torch.no_grad():
        for a, b in zip(plain(images), folded(images), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_equal(name: str) -> None:
    # float64: in float32 a ReLU6 input within rounding of 0 or 6 may switch sides, and in a
    # random network that moves some weight gradients by a few percent
    plain, folded = (m.double() for m in _pair(name))
    images = torch.randn(1, 3, 38, 46, dtype=torch.float64)  # odd: asymmetric SAME padding
    for model in (plain, folded):
        feats = model(images)
        sum((f * torch.linspace(-1, 1, f.numel(), dtype=f.dtype).view_as(f)).sum()
            for f in feats).backward()
    grads = {n: p.grad for n, p in folded.named_parameters()}
    for n, p in plain.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-7, atol=1e-9, msg=n)


def test_lite0_keeps_dynamic_same_padding_and_relu6() -> None:
    _, folded = _pair("efficientnet_lite0")
    same = [m for m in folded.modules() if isinstance(m, FoldedConv2d) and m.same_padding]
    assert same and not any(isinstance(m, SameConv2d) for m in folded.modules())
    acts = {type(m.act) for m in folded.modules() if isinstance(m, FoldedBatchNorm2d)}
    assert acts == {nn.ReLU6, nn.Identity}


def test_frozen_stages_fold_and_stay_frozen() -> None:
    plain, folded = _pair("resnet18", frozen_stages=2)  # stem + layer1 frozen, the rest trainable
    assert isinstance(folded.conv1, FoldedConv2d) and not folded.conv1.weight.requires_grad
    assert folded.layer2[0].conv1.weight.requires_grad
    images = torch.randn(1, 3, 64, 64)
    for a, b in zip(plain(images), folded(images), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_live_batchnorm_is_not_folded() -> None:
    backbone = build_backbone("resnet18", freeze_bn=False, frozen_stages=2)
    assert isinstance(backbone.conv1, FoldedConv2d)  # frozen stage
    assert type(backbone.layer2[0].conv1) is nn.Conv2d
    assert type(backbone.layer2[0].bn1) is nn.BatchNorm2d


def test_buffers_loaded_after_folding_are_used() -> None:
    plain, folded = _pair("resnet18")
    fresh = build_backbone("resnet18")  # folded with default statistics
    images = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(fresh(images)[2], plain(images)[2], atol=1e-3)
    fresh.load_state_dict(plain.state_dict())
    torch.testing.assert_close(fresh(images)[2], plain(images)[2], rtol=1e-4, atol=1e-4)


def test_deepcopy_links_each_copied_conv_to_its_copied_batchnorm() -> None:
    _, folded = _pair("resnet18")
    twin = copy.deepcopy(folded)  # as the EMA model is made
    assert twin.conv1.bn is twin.bn1 and twin.conv1.bn is not folded.bn1
    assert isinstance(twin.bn1, FoldedBatchNorm2d)
    with torch.no_grad():
        twin.bn1.weight.mul_(2)
    images = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(twin(images)[0], folded(images)[0])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_same_padding_as_the_convolutions_own_equals_timms_padded_input(kernel, stride) -> None:
    """TF "SAME" padding as symmetric padding (and a leading zero tap where the padding after is
    one more) reads the same inputs: equal to timm's `pad_same` then an unpadded convolution,
    on even and odd sizes."""
    from timm.layers.padding import pad_same

    from detect.models.fold import same_as_symmetric

    g = torch.Generator().manual_seed(kernel * 10 + stride)
    for h, w in ((16, 16), (15, 17), (10, 9)):
        x = torch.randn(2, 4, h, w, generator=g)
        weight = torch.randn(4, 1, kernel, kernel, generator=g)
        want = F.conv2d(pad_same(x, (kernel, kernel), (stride, stride), (1, 1)), weight, None,
                        stride, 0, 1, 4)
        w2, padding = same_as_symmetric(weight, (h, w), (stride, stride), (1, 1))
        torch.testing.assert_close(F.conv2d(x, w2, None, stride, padding, 1, 4), want,
                                   rtol=0, atol=0)
        if stride == 2 and kernel > 1 and h % 2 == 0:  # the padding after is one more here
            assert w2.shape[-2] == kernel + 1 and (w2[..., 0, :] == 0).all()
