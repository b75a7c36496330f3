"""How per-head losses are combined into the one scalar that is back-propagated.

This is the only place where head loss weights are applied. Each head returns a dict of
``loss_*`` terms; a head's loss is the sum of its terms, and the total is
``sum_h w_h * loss_h``.
"""
from __future__ import annotations

from torch import Tensor, nn


class FixedWeights(nn.Module):
    """Hand-set per-head weights (default 1 for every head)."""

    def __init__(self, heads: list[str], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        weights = weights or {}
        self.weights = {h: float(weights.get(h, 1.0)) for h in heads}

    def forward(self, head_losses: dict[str, Tensor]) -> Tensor:
        """head_losses: head name -> scalar loss. Returns the weighted sum."""
        return sum(self.weights[h] * loss for h, loss in head_losses.items())

    def effective_weights(self) -> dict[str, float]:
        return dict(self.weights)


def head_totals(losses: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per head, the sum of its ``loss_*`` terms."""
    return {head: sum(terms.values()) for head, terms in losses.items()}
