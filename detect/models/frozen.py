"""The network of a detector (images -> per-head predictions) as a frozen TorchScript graph for CPU
inference.

``torch.jit.freeze`` turns the weights into constants (so the folded BatchNorm scales are computed
once); ``torch.jit.optimize_for_inference`` also fuses convolution + ReLU / + add and pre-packs
the convolution weights for oneDNN. Which is fastest depends on the model: on 2 CPU threads the
R50 RetinaNet at 640 ran 1.10x faster than eager with ``optimize_for_inference`` and slower with
``freeze`` alone, the light EfficientNet-Lite0 model at 320 1.8x faster with ``freeze`` alone and
1.4x with ``optimize_for_inference``. So the first call for an input shape traces the network,
builds both graphs, times them against eager on that input and keeps the fastest (for R50 about
ten forward passes: seconds). Outputs equal the eager model's to float rounding.

A choice is kept per input shape and dtype (a letterboxed batch has one shape per batch size).
The graphs hold the weights as constants: build a `FrozenForward` after loading the weights and a
new one after changing them. Anchors, decoding and NMS stay in eager PyTorch
(`MultiHeadDetector.detect`).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from detect.models.detector import HeadOutputs, MultiHeadDetector


class _Dense(nn.Module):
    """``MultiHeadDetector.forward`` with tensors only: predictions in head order, then the
    heads' extra maps in their order (`HeadOutputs.maps`)."""

    def __init__(self, model: MultiHeadDetector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        return (*out.preds.values(), *out.maps.values())


class FrozenForward:
    """Callable like ``model(images) -> HeadOutputs``; the model must be in eval mode on the CPU.

    The model is switched to channels_last memory (in place; outputs unchanged): for inference it
    was as fast or faster for every config measured (1.04x eager, 1.09x frozen for R50 at 640),
    while R50 training prefers NCHW (``model.channels_last`` in the config is about training).
    """

    def __init__(self, model: MultiHeadDetector) -> None:
        if model.training:
            raise ValueError("FrozenForward needs a model in eval mode")
        self.model = model.set_memory_format(channels_last=True)
        self.names = list(model.heads)
        # input key -> (graph, feature sizes, names of the extra maps)
        self.graphs: dict[tuple, tuple[Callable[[Tensor], tuple[Tensor, ...]],
                                       list[tuple[int, int]], list[str]]] = {}
        self.chosen: dict[tuple, str] = {}  # input key -> "eager", "freeze" or "optimize_for_inference"

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> HeadOutputs:
        key = (tuple(images.shape), images.dtype)
        if key not in self.graphs:
            self.chosen[key], self.graphs[key] = self._build(images)
        graph, sizes, map_names = self.graphs[key]
        outs = graph(images)
        n = len(self.names)
        return HeadOutputs(dict(zip(self.names, outs[:n])), sizes, dict(zip(map_names, outs[n:])))

    def _build(self, images: Tensor) -> tuple[str, tuple[Callable, list[tuple[int, int]], list[str]]]:
        out = self.model(images)
        candidates = self.candidates(images)
        name = min(candidates, key=lambda n: _seconds(candidates[n], images))
        return name, (candidates[name], out.feature_sizes, list(out.maps))

    def candidates(self, images: Tensor) -> dict[str, Callable[[Tensor], tuple[Tensor, ...]]]:
        """Eager, frozen and frozen + optimised versions of the network, traced on ``images``."""
        eager = _Dense(self.model).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings; "torch.jit is deprecated"
            traced = torch.jit.trace(eager, images, check_trace=False)
            frozen = torch.jit.freeze(traced)  # each freeze returns a new module
            optimized = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        return {"eager": eager, "freeze": frozen, "optimize_for_inference": optimized}


def _seconds(fn: Callable, images: Tensor, runs: int = 2) -> float:
    """Best of ``runs`` timed calls after one warm-up call."""
    fn(images)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn(images)
        best = min(best, time.perf_counter() - start)
    return best
