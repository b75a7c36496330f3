"""Do the heads pull the shared layers in different directions? Per-head gradient norms and cosines.

`head_gradient_stats` takes each head's loss, computes its gradient on the shared parameters
(backbone + neck) with ``torch.autograd.grad(retain_graph=True)`` and reports its norm and the
pairwise cosines; a negative cosine means two heads conflict on that step (what PCGrad removes).
`ConflictSummary` accumulates these over a run.

Cost: one extra backward per head through the shared parameters (about H times the backward pass
of a plain step) and H flattened gradients in memory, so call it every N steps, before the step's
own backward (the graph is kept). It neither changes nor accumulates ``.grad``.
"""
from __future__ import annotations

from itertools import combinations

import torch
from torch import Tensor

from detect.balancing import flat_grad


def pair_name(a: str, b: str) -> str:
    return f"{a}|{b}"


@torch.no_grad()
def _cosines(grads: Tensor) -> Tensor:
    """grads [H, P] -> cosine matrix [H, H]; a zero gradient has cosine 0 with everything."""
    norms = grads.norm(dim=1)  # [H]
    return (grads @ grads.T) / (norms[:, None] * norms[None, :]).clamp_min(1e-30)


def head_gradient_stats(head_losses: dict[str, Tensor], shared_params: list[Tensor]) -> dict:
    """Per-head gradient norms and pairwise cosines on ``shared_params`` (flattened, concatenated).

    Returns ``{"grad_norm": {head: float}, "grad_cosine": {"a|b": float}}`` with pairs in the
    order of ``head_losses`` (a before b). Parameters that do not require grad are ignored.
    """
    params = [p for p in shared_params if p.requires_grad]
    heads = list(head_losses)
    grads = torch.stack([flat_grad(head_losses[h], params, retain_graph=True).float()
                         for h in heads])  # [H, P]
    norms = grads.norm(dim=1).tolist()
    cos = _cosines(grads).tolist()
    return {"grad_norm": dict(zip(heads, norms)),
            "grad_cosine": {pair_name(heads[i], heads[j]): cos[i][j]
                            for i, j in combinations(range(len(heads)), 2)}}


class ConflictSummary:
    """Accumulates `head_gradient_stats` results; `summary` gives means over the samples added.

    Per pair: mean cosine, fraction of samples with cosine < 0, number of samples. Per head: mean
    gradient norm and number of samples. A pair or head missing from some samples is averaged over
    the samples that have it.
    """

    def __init__(self) -> None:
        self.cosines: dict[str, list[float]] = {}
        self.norms: dict[str, list[float]] = {}

    def add(self, stats: dict) -> None:
        for pair, c in stats["grad_cosine"].items():
            self.cosines.setdefault(pair, []).append(float(c))
        for head, n in stats["grad_norm"].items():
            self.norms.setdefault(head, []).append(float(n))

    def summary(self) -> dict:
        """``{"pairs": {"a|b": {"mean_cosine", "frac_negative", "samples"}},
        "heads": {h: {"mean_grad_norm", "samples"}}}``."""
        pairs = {p: {"mean_cosine": sum(v) / len(v),
                     "frac_negative": sum(c < 0 for c in v) / len(v),
                     "samples": len(v)} for p, v in self.cosines.items()}
        heads = {h: {"mean_grad_norm": sum(v) / len(v), "samples": len(v)}
                 for h, v in self.norms.items()}
        return {"pairs": pairs, "heads": heads}


def format_conflicts(summary: dict) -> str:
    """The run's gradient-conflict summary (`ConflictSummary.summary`) as printed lines."""
    lines = ["gradient conflict on shared parameters (backbone + neck):"]
    for pair, v in summary["pairs"].items():
        lines.append(f"  {pair:24s} mean cosine {v['mean_cosine']:+.3f}  in conflict "
                     f"{100 * v['frac_negative']:.0f}% of {v['samples']} steps")
    for head, v in summary["heads"].items():
        lines.append(f"  {head:24s} mean grad norm {v['mean_grad_norm']:.4g}")
    return "\n".join(lines)
