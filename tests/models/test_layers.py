"""Our backbone layers compute what timm's and torchvision's do, with the same state-dict keys."""
from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d as TimmBatchNormAct2d
from timm.layers import Conv2dSame
from torch import nn
from torchvision.ops import FrozenBatchNorm2d as TorchvisionFrozen

from detect.models.backbones.layers import (BatchNormAct2d, FrozenBatchNorm2d, SameConv2d,
                                            frozen_copy, tf_conv)


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (5, 2), (1, 1), (3, 1), (5, 1)])
def test_tf_same_convolution_equals_timms(kernel: int, stride: int) -> None:
    torch.manual_seed(kernel + stride)
    ours = tf_conv(6, 6, kernel, stride, groups=6)
    theirs = Conv2dSame(6, 6, kernel, stride, groups=6, bias=False)
    theirs.weight.data.copy_(ours.weight.data)
    assert isinstance(ours, SameConv2d) == (stride > 1)
    for h, w in ((16, 16), (15, 17), (10, 9)):
        x = torch.randn(2, 6, h, w)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)


def _random_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def test_batchnorm_with_activation_equals_timms_and_keeps_its_keys() -> None:
    torch.manual_seed(0)
    theirs = _random_bn(TimmBatchNormAct2d(8, eps=1e-3, act_layer=nn.ReLU6))
    ours = BatchNormAct2d(8, 1e-3, nn.ReLU6())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 8, 5, 5) * 4
    for train in (False, True):
        ours.train(train), theirs.train(train)
        torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)  # the same update


def test_frozen_batchnorm_equals_torchvisions_and_loads_a_live_state() -> None:
    torch.manual_seed(1)
    live = _random_bn(nn.BatchNorm2d(8, eps=1e-3))
    ours = FrozenBatchNorm2d(8, 1e-3)
    ours.load_state_dict(live.state_dict())  # its num_batches_tracked dropped, nothing missing
    theirs = TorchvisionFrozen(8, eps=1e-3)
    theirs.load_state_dict(live.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(3, 8, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert not list(ours.parameters())


def test_frozen_copy_keeps_statistics_eps_and_activation() -> None:
    torch.manual_seed(2)
    live = _random_bn(BatchNormAct2d(8, 1e-3, nn.ReLU6())).eval()
    frozen = frozen_copy(live)
    x = torch.randn(3, 8, 5, 5) * 4
    torch.testing.assert_close(frozen(x), live(x))
    assert frozen.eps == 1e-3 and isinstance(frozen.act, nn.ReLU6)
    assert frozen(x).max() <= 6
