"""Fold frozen BatchNorm into the convolution before it, for training and inference.

A frozen BatchNorm is a fixed per-channel affine map ``y = x * scale + shift`` with
``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale``. Applied
after a convolution it costs two full passes over the feature map (and two more in backward);
folded into the convolution it costs nothing: ``conv(x, W * scale[:, None, None, None]) + shift``,
the shift being the convolution's bias. ``W`` stays the trainable parameter and the gradient flows
through ``W * scale``, so training is unchanged (to float rounding).

State-dict keys do not change: the convolution keeps ``weight`` (it must have no bias) and the
BatchNorm keeps its four buffers, it only stops applying them (its activation, e.g. Lite0's ReLU6,
still runs). Checkpoints and weight files load into a folded model as they are, and a later
``load_state_dict`` is picked up because the scale is computed from the buffers on every call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detect.models.backbones.layers import FrozenBatchNorm2d, SameConv2d, pad_same


class FoldedBatchNorm2d(FrozenBatchNorm2d):
    """A frozen BatchNorm whose affine map the preceding `FoldedConv2d` applies: only its
    activation remains; the same buffers (and state-dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x)


class FoldedConv2d(nn.Conv2d):
    """A bias-free convolution followed by a frozen BatchNorm, computed as one convolution.

    Shares the ``weight`` Parameter of the convolution it replaces. ``same_padding`` reproduces
    `SameConv2d` (TF "SAME" padding computed from the input size on every call).
    The BatchNorm is held as a plain attribute, not a submodule: it stays where it was in the
    module tree (its buffers keep their keys) and only its activation runs there.
    """

    def __init__(self, conv: nn.Conv2d, bn: FoldedBatchNorm2d) -> None:
        if conv.bias is not None or conv.padding_mode != "zeros":
            raise ValueError(f"cannot fold BatchNorm into {conv}: it has a bias or non-zero padding")
        if conv.out_channels != bn.weight.numel():
            raise ValueError(f"cannot fold BatchNorm({bn.weight.numel()}) into {conv}")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         conv.padding, conv.dilation, conv.groups, bias=False, device="meta")
        self.weight = conv.weight
        self.same_padding = isinstance(conv, SameConv2d)
        self.__dict__["bn"] = bn  # not registered: the BatchNorm keeps its place in the tree

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.bn.scale_shift()
        weight = self.weight * scale.view(-1, 1, 1, 1)  # [O, I/g, kh, kw]
        padding = self.padding
        if self.same_padding and not torch.jit.is_tracing():
            weight, padding = same_as_symmetric(weight, tuple(x.shape[-2:]), self.stride,
                                                self.dilation)
        if self.same_padding and (torch.jit.is_tracing() or padding is None):
            # as `SameConv2d` pads: traced graphs (exports: a kernel of fixed shape), dilated kernels
            x, padding = pad_same(x, self.kernel_size, self.stride, self.dilation), 0
        return F.conv2d(x, weight, shift, self.stride, padding, self.dilation, self.groups)


def same_as_symmetric(weight: Tensor, size: tuple[int, int], stride: tuple[int, int],
                      dilation: tuple[int, int]) -> tuple[Tensor, tuple[int, int] | None]:
    """TF "SAME" padding (``pad_same``: ``p`` before, ``p`` or ``p + 1`` after, per dimension)
    as a convolution's own symmetric padding, without a padded copy of the input: where the
    padding after is one more, the kernel gets a leading zero row (or column) and both sides
    ``p + 1``, which reads the same inputs with the same weights (the extra tap multiplies a
    zero). ``weight`` [O, I/g, kh, kw], ``size`` the input's (H, W) -> (weight, padding); padding
    None for a dilated convolution (not rewritten). Saves the copy's memory traffic: on the
    light backbone's stride-2 layers 25-45 % of their forward and backward time."""
    if dilation != (1, 1):
        return weight, None
    pads, lead = [], [0, 0]
    for d, (n, k, s) in enumerate(zip(size, weight.shape[-2:], stride)):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        before, after = total // 2, total - total // 2
        lead[d] = after - before  # 0 or 1
        pads.append(after)
    if any(lead):
        weight = F.pad(weight, (lead[1], 0, lead[0], 0))  # zero first column / row
    return weight, (pads[0], pads[1])


def _folded_bn(bn: nn.Module) -> FoldedBatchNorm2d:
    """A folded BatchNorm sharing ``bn``'s buffers and activation."""
    if not isinstance(bn, FrozenBatchNorm2d):
        raise TypeError(f"only frozen BatchNorm can be folded, got {type(bn).__name__}")
    folded = FoldedBatchNorm2d(bn.weight.numel(), bn.eps, bn.act)
    for name in ("weight", "bias", "running_mean", "running_var"):
        setattr(folded, name, getattr(bn, name))  # the same tensors: buffers, not copies
    return folded


def _is_frozen_bn(m: nn.Module) -> bool:
    return isinstance(m, FrozenBatchNorm2d) and not isinstance(m, FoldedBatchNorm2d)


@torch.no_grad()
def fold_frozen_batchnorm(module: nn.Module, pairs: list[tuple[str, str]]) -> int:
    """Fold, in place, each (conv, bn) pair of module names whose BatchNorm is frozen.

    Pairs whose BatchNorm is trainable (``nn.BatchNorm2d``) are left alone: batch statistics
    cannot be folded. Returns the number of pairs folded.
    """
    count = 0
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        if not _is_frozen_bn(bn) or type(conv) not in (nn.Conv2d, SameConv2d):
            continue
        folded_bn = _folded_bn(bn)
        _replace(module, bn_name, folded_bn)
        _replace(module, conv_name, FoldedConv2d(conv, folded_bn))
        count += 1
    return count


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent), child, new)
