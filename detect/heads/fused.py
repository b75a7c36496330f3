"""The towers' inference form: BatchNorm folded into the convolutions, and towers that read the
same features run as one.

In training a tower block is conv -> BatchNorm (one per level with ``norm: bn``) -> ReLU. In
evaluation without autograd each BatchNorm is a fixed affine map per channel, so a (conv,
BatchNorm, level) triple is one convolution with scaled weights and a bias (`fold_layers`). And T
towers of the same shape that read the same input are one tower: their first convolutions
concatenated along the outputs, their later ones a grouped convolution (groups = T). The outputs are the same to float rounding; the calls are fewer and
larger, which is what a CPU pays for at these sizes (docs/BENCHMARKS.md, "keypoint-cost").

The folded weights are built on first use and kept while the tensors they come from are the same
objects with the same storage and version counter (`FoldCache`): an optimiser step,
`load_state_dict`, `.to()` or replacing a parameter all rebuild them (an in-place edit through
``.data`` bumps no version counter and is not seen). Traced graphs (exports, `Detector.optimize()`)
keep the training form, which reads the parameters.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# a folded convolution: weight [O, I / groups, kh, kw], bias [O], groups
Layer = tuple[Tensor, Tensor, int]


def inference_form(module: nn.Module) -> bool:
    """Whether ``module`` runs its folded form: evaluation mode without autograd, and not while
    being traced (exports and `Detector.optimize()` trace the training form, whose graph reads
    the parameters; ``torch.jit.freeze`` folds BatchNorm there itself)."""
    return not (module.training or torch.is_grad_enabled() or torch.jit.is_tracing())


def _plain(conv: nn.Module) -> bool:
    """A 3x3-style convolution `run_layers` reproduces: stride 1, "same" zero padding."""
    return (type(conv) is nn.Conv2d and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.padding == (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
            and conv.padding_mode == "zeros")


def _foldable_norm(norm: nn.Module) -> bool:
    return type(norm) is nn.Identity or (type(norm) is nn.BatchNorm2d and norm.affine
                                         and norm.track_running_stats and not norm.training)


def can_fold(towers: Sequence[nn.Module]) -> bool:
    """Whether `fold_layers` applies, and gains: plain convolutions, frozen BatchNorm or no
    norm, at least one block; several towers of the same depth, width and input width. One tower
    without BatchNorm has nothing to fold."""
    first = towers[0]
    if not first.convs:
        return False
    for t in towers:
        if not all(_plain(c) for c in t.convs):
            return False
        if not all(_foldable_norm(n) for ns in t.norms for n in ns):
            return False
        if (len(t.convs), t.channels, t.convs[0].in_channels) != (
                len(first.convs), first.channels, first.convs[0].in_channels):
            return False
    return len(towers) > 1 or any(type(n) is nn.BatchNorm2d
                                             for ns in first.norms for n in ns)


def fold_levels(towers: Sequence[nn.Module], num_levels: int) -> list[list[Layer]]:
    """`fold_layers` for each of ``num_levels`` levels; levels without a BatchNorm of their own
    (one norm shared by every level, or none) share one folded set."""
    distinct = min(num_levels, max(len(ns) for t in towers for ns in t.norms))
    layers = [fold_layers(towers, level) for level in range(distinct)]
    return [layers[min(level, distinct - 1)] for level in range(num_levels)]


def _folded(conv: nn.Conv2d, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``conv`` followed by ``norm`` (BatchNorm in evaluation, or identity) as one convolution:
    weight [O, I, kh, kw], bias [O], in the convolution's dtype."""
    w = conv.weight
    b = conv.bias if conv.bias is not None else w.new_zeros(w.shape[0])
    if isinstance(norm, nn.BatchNorm2d):
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)  # [O]
        w, b = w * scale.view(-1, 1, 1, 1), (b - norm.running_mean) * scale + norm.bias
    return w.to(conv.weight.dtype), b.to(conv.weight.dtype)


def _like(weight: Tensor, source: Tensor) -> Tensor:
    """``weight`` in ``source``'s memory format (channels_last or contiguous)."""
    fmt = (torch.channels_last if source.is_contiguous(memory_format=torch.channels_last)
           and not source.is_contiguous() else torch.contiguous_format)
    return weight.contiguous(memory_format=fmt)


def fold_layers(towers: Sequence[nn.Module], level: int) -> list[Layer]:
    """The blocks of ``towers`` (`detect.heads.base.Tower`s, `can_fold`) on FPN level ``level``
    as one tower of folded convolutions: output channels tower by tower, [T * C]."""
    layers = []
    for i in range(len(towers[0].convs)):
        parts = [_folded(t.convs[i], t.norms[i][min(level, len(t.norms[i]) - 1)]) for t in towers]
        weight = torch.cat([w for w, _ in parts])  # [T*C, I or C, kh, kw]
        layers.append((_like(weight, towers[0].convs[i].weight), torch.cat([b for _, b in parts]),
                       1 if i == 0 else len(towers)))
    return layers


def run_layers(x: Tensor, layers: list[Layer]) -> Tensor:
    """[B, I, H, W] -> [B, T * C, H, W]: the folded blocks, each conv + ReLU."""
    for weight, bias, groups in layers:
        x = torch.relu(F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=groups))
    return x


class FoldCache:
    """Values built from tensors, kept while those tensors are unchanged: the same objects, the
    same storage and the same version counter (in-place updates bump it)."""

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[list[Tensor], list[tuple[int, int]], Any]] = {}

    def get(self, key: Any, sources: list[Tensor], build: Callable[[], Any]) -> Any:
        if any(t.is_inference() for t in sources):  # no version counter: build every time
            return build()
        stamp = [(t.data_ptr(), t._version) for t in sources]
        entry = self._entries.get(key)
        if (entry is None or len(entry[0]) != len(sources)
                or any(a is not b for a, b in zip(entry[0], sources)) or entry[1] != stamp):
            entry = (list(sources), stamp, build())
            self._entries[key] = entry
        return entry[2]


def sources(*modules: nn.Module) -> list[Tensor]:
    """Every parameter and buffer of ``modules``: what their folded form is built from."""
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]
