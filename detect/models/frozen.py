"""The network of a detector (images -> per-head predictions) as a frozen TorchScript graph for CPU
inference.

``torch.jit.freeze`` turns the weights into constants (so the folded BatchNorm scales are computed
once); ``torch.jit.optimize_for_inference`` also fuses convolution + ReLU / + add and pre-packs
the convolution weights for oneDNN. Which is faster depends on the backbone, so each says which
it takes (`Backbone.inference_graph`), measured once on 2 CPU threads (docs/BENCHMARKS.md): the
light EfficientNet-Lite0 model at 320 ran 1.2x faster than eager with ``freeze`` alone and
0.85-1.07x with ``optimize_for_inference``; the R50 RetinaNet at 640 1.10x faster with
``optimize_for_inference`` and 0.90x with ``freeze`` alone. Nothing is timed at start: the first
call for an input shape traces the network, builds its graph and runs it a few times (the
TorchScript executor specialises the graph over its first calls; until then it is slower than
eager). Outputs equal the eager model's to float rounding.

A graph is kept per input shape and dtype (a letterboxed batch has one shape per batch size and
orientation). The graphs hold the weights as constants: build a `FrozenForward` after loading the
weights and a new one after changing them. Anchors, decoding and NMS stay in eager PyTorch
(`MultiHeadDetector.detect`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from detect.models.detector import HeadOutputs, MultiHeadDetector

GraphKind = Literal["freeze", "optimize_for_inference"]
WARM_UP = 3  # calls of a new graph before it is used: the executor's profiling runs, then one


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
        self.kind: GraphKind = getattr(model.backbone, "inference_graph", "freeze")
        # input key -> (graph, feature sizes, names of the extra maps)
        self.graphs: dict[tuple, tuple[Callable[[Tensor], tuple[Tensor, ...]],
                                       list[tuple[int, int]], list[str]]] = {}

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> HeadOutputs:
        key = (tuple(images.shape), images.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._build(images)
        graph, sizes, map_names = self.graphs[key]
        outs = graph(images)
        n = len(self.names)
        return HeadOutputs(dict(zip(self.names, outs[:n])), sizes, dict(zip(map_names, outs[n:])))

    def _build(self, images: Tensor) -> tuple[Callable, list[tuple[int, int]], list[str]]:
        out = self.model(images)
        graph = self.graph(images, self.kind)
        for _ in range(WARM_UP):
            graph(images)
        return graph, out.feature_sizes, list(out.maps)

    def graph(self, images: Tensor, kind: GraphKind) -> Callable[[Tensor], tuple[Tensor, ...]]:
        """The network traced on ``images`` and frozen (``kind``), tensors out."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings; "torch.jit is deprecated"
            frozen = torch.jit.freeze(torch.jit.trace(_Dense(self.model).eval(), images,
                                                      check_trace=False))
            return torch.jit.optimize_for_inference(frozen) if kind != "freeze" else frozen
