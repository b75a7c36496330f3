"""The layers backbones are built from beyond ``torch.nn``: TF "SAME" convolution, BatchNorm with
its activation, and frozen BatchNorm.

They are ours, not timm's or torchvision's, so that building a model (as every prediction does)
imports neither (`detect.kernels`: torchvision's import alone is about 1 s of a 2-core machine's
start). They compute what timm's ``Conv2dSame``, ``BatchNormAct2d``, ``FrozenBatchNormAct2d`` and
torchvision's ``FrozenBatchNorm2d`` compute (tests compare), with the same state-dict keys.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding TF "SAME" adds along one dimension of ``size`` (half before, the rest after)."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def pad_same(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int] = (1, 1)) -> Tensor:
    """[B, C, H, W] zero-padded as TF "SAME" pads for a convolution of these settings.

    The zero is passed explicitly: an exported Pad node then carries its constant value, which
    ONNX Runtime needs to fuse the Pad into the convolution after it (without it, the light
    model's graph ran 15.6 -> 20.5 ms, Pad and layout reorders around it)."""
    ph, pw = (same_padding(n, k, s, d) for n, k, s, d in zip(x.shape[-2:], kernel, stride, dilation))
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)


class SameConv2d(nn.Conv2d):
    """A convolution with TF "SAME" padding computed from each input's size (for strided
    convolutions, where it is asymmetric: the TensorFlow-trained weights expect it)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)  # type: ignore[arg-type]
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def tf_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
            groups: int = 1) -> nn.Conv2d:
    """A bias-free convolution with TF "SAME" padding: static (``k // 2``) at stride 1,
    `SameConv2d` otherwise."""
    if stride == 1:
        return nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2,
                         groups=groups, bias=False)
    return SameConv2d(in_channels, out_channels, kernel_size, stride, groups)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by ``act`` (a module without parameters: the keys are BatchNorm's)."""

    def __init__(self, num_features: int, eps: float = 1e-5, act: nn.Module | None = None) -> None:
        super().__init__(num_features, eps=eps)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(super().forward(x))


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine (buffers, no parameters), then ``act``:
    ``act(x * scale + shift)``, ``scale = weight / sqrt(running_var + eps)``,
    ``shift = bias - running_mean * scale``. Loads a live BatchNorm's state dict (its
    ``num_batches_tracked`` is dropped)."""

    def __init__(self, num_features: int, eps: float = 1e-5, act: nn.Module | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.act = act if act is not None else nn.Identity()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """The affine map: scale [C], shift [C]."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift()
        return self.act(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


def frozen_copy(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    """A `FrozenBatchNorm2d` with ``bn``'s statistics, affine, eps and activation."""
    frozen = FrozenBatchNorm2d(bn.num_features, bn.eps, getattr(bn, "act", None))
    with torch.no_grad():
        frozen.weight.copy_(bn.weight)
        frozen.bias.copy_(bn.bias)
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
    return frozen
