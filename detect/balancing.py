"""How per-head losses are combined and back-propagated: the one place where head weights live.

Each head returns a dict of ``loss_*`` terms; `head_totals` sums them into one loss per head
(or per group: `group_losses` can set terms apart), and a balancer turns those into gradients.
Every balancer offers the same three calls:

- ``balancer(head_losses) -> Tensor``: the weighted scalar ``sum_h w_h * loss_h`` (for logging,
  or for a plain ``.backward()`` with the strategies that need nothing more);
- ``balancer.backward(head_losses, shared_params, scale) -> dict[str, float]``: does the backward
  pass itself (PCGrad must edit gradients, GradNorm needs per-head gradient norms) and returns the
  numbers worth logging; ``scale`` multiplies every gradient (``1 / accumulate``, times the
  GradScaler's factor for fp16: pass ``scaler.scale(torch.tensor(1 / accumulate))``);
- ``balancer.effective_weights() -> dict[str, float]``: the weight each head's loss gets now.

``balancer.parameters()`` holds what the main optimiser must train (only `UncertaintyWeighting`
has any); every other state (EMAs, GradNorm's weights) is a buffer, so ``state_dict`` carries the
whole balancer into checkpoints.

Cost per training step, against a plain step's one backward pass (H = number of heads):

- ``fixed``: nothing extra.
- ``uncertainty``: H scalar parameters.
- ``loss_norm``: one all-reduce of H numbers under DDP.
- ``gradnorm``: H partial backwards, each from a head's loss down to ``shared_params`` only (pass
  the last shared layer and they are cheap).
- ``pcgrad``: H full backwards through ``shared_params`` (backbone + neck) instead of 1, and memory
  for H flattened copies of their gradients; single process only (its edited gradients bypass
  DDP's all-reduce).
"""
from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

BalanceKind = Literal["fixed", "uncertainty", "loss_norm", "gradnorm", "pcgrad"]


def head_totals(losses: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per head (or balancing group), the sum of its ``loss_*`` terms."""
    return {head: sum(terms.values()) for head, terms in losses.items()}


def own_terms_gradient_only(losses: dict[str, dict[str, Tensor]],
                            own: Collection[str]) -> dict[str, dict[str, Tensor]]:
    """``losses`` with each term named in ``own`` as ``v - v.detach()``: zero in value, the same
    gradient. Such a term (a head's ``own_terms``) trains parameters no other term reaches, so its
    magnitude must not enter any balancing statistic (under ``loss_norm`` it would dilute its
    head's other terms); its own parameters learn at any scale under Adam."""
    return {head: {k: (v - v.detach() if k in own else v) for k, v in terms.items()}
            for head, terms in losses.items()}


def group_losses(losses: dict[str, dict[str, Tensor]],
                 apart: Sequence[str]) -> dict[str, dict[str, Tensor]]:
    """The balancing groups: each head with its terms, except the terms named in ``apart``
    (``train.balance_apart``), which form groups of their own, named by the term. A head left
    without terms is no group. A balancer then weighs a term apart on its own: under
    ``loss_norm`` it contributes about its base weight whatever its head's other terms do."""
    groups = {}
    for head, terms in losses.items():
        if own := {k: v for k, v in terms.items() if k not in apart}:
            groups[head] = own
        groups |= {k: {k: v} for k, v in terms.items() if k in apart}
    return groups


def flat_grad(loss: Tensor, params: list[Tensor], retain_graph: bool = True) -> Tensor:
    """d loss / d params, flattened and concatenated: [sum(p.numel())]; unreached params give 0."""
    if not loss.requires_grad:  # a constant loss (e.g. a head with nothing to learn this batch)
        return torch.cat([torch.zeros_like(p).reshape(-1) for p in params])
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for p, g in zip(params, grads)])


def _positive_weights(heads: list[str], weights: dict[str, float] | None) -> list[float]:
    """Per head, its weight (default 1); learned strategies start from these and need them > 0."""
    values = [float((weights or {}).get(h, 1.0)) for h in heads]
    bad = [h for h, w in zip(heads, values) if not w > 0]
    if bad:
        raise ValueError(f"initial loss weights must be positive, got {bad} <= 0")
    return values


def _trainable(params: list[Tensor]) -> list[Tensor]:
    return [p for p in params if p.requires_grad]


class Balancer(nn.Module):
    """Common interface; subclasses define `forward` and `effective_weights`.

    The default `backward` is the plain one: ``(scale * balancer(head_losses)).backward()``.
    """

    def __init__(self, heads: list[str]) -> None:
        super().__init__()
        self.heads = list(heads)

    def _stack(self, head_losses: dict[str, Tensor]) -> Tensor:
        """Head losses in ``self.heads`` order: [H]."""
        if set(head_losses) != set(self.heads):
            raise KeyError(f"balancer expects losses for heads {self.heads}, "
                           f"got {sorted(head_losses)}")
        return torch.stack([head_losses[h] for h in self.heads])

    def effective_weights(self) -> dict[str, float]:
        raise NotImplementedError

    def backward(self, head_losses: dict[str, Tensor], shared_params: list[Tensor],
                 scale: float | Tensor = 1.0) -> dict[str, float]:
        """Back-propagate ``scale * balancer(head_losses)``; returns {"loss": unscaled total}."""
        total = self(head_losses)
        (total * scale).backward()
        return {"loss": float(total.detach())}


class FixedWeights(Balancer):
    """Hand-set per-head weights (default 1): ``L = sum_h w_h L_h``. Cost: nothing extra."""

    def __init__(self, heads: list[str], weights: dict[str, float] | None = None) -> None:
        super().__init__(heads)
        weights = weights or {}
        self.weights = {h: float(weights.get(h, 1.0)) for h in heads}

    def forward(self, head_losses: dict[str, Tensor]) -> Tensor:
        """head_losses: head name -> scalar loss. Returns the weighted sum."""
        return sum(self.weights[h] * loss for h, loss in head_losses.items())

    def effective_weights(self) -> dict[str, float]:
        return dict(self.weights)


class UncertaintyWeighting(Balancer):
    """Learned homoscedastic uncertainty (Kendall, Gal, Cipolla, CVPR 2018).

    ``L = sum_h exp(-s_h) * L_h + s_h`` with ``s_h = log sigma_h^2`` learned by the main optimiser;
    the effective weight is ``exp(-s_h)``. At the optimum over s, ``exp(-s_h) = 1 / L_h``: every
    head contributes about 1 to the loss, whatever its scale. (The paper's 1/2 factors for
    regression are dropped, as in most implementations.) ``s`` starts at ``-log(w_h)`` so the first
    steps use the hand-set weights.

    Training: add ``balancer.parameters()`` to the optimiser as its own group without weight decay,
    ``optimizer.add_param_group({"params": list(balancer.parameters()), "weight_decay": 0.0})``.
    Cost: H scalar parameters, nothing else.
    """

    def __init__(self, heads: list[str], weights: dict[str, float] | None = None) -> None:
        super().__init__(heads)
        init = [-math.log(w) for w in _positive_weights(heads, weights)]
        self.log_vars = nn.Parameter(torch.tensor(init))  # [H] s_h

    def forward(self, head_losses: dict[str, Tensor]) -> Tensor:
        losses = self._stack(head_losses)  # [H]
        s = self.log_vars.to(losses.dtype)
        return (torch.exp(-s) * losses + s).sum()

    def effective_weights(self) -> dict[str, float]:
        return {h: math.exp(-s) for h, s in zip(self.heads, self.log_vars.tolist())}


class LossNormWeighting(Balancer):
    """Each head's loss divided by a running estimate of its own magnitude.

    ``L = sum_h w_h * L_h / m_h`` where ``m_h`` is a bias-corrected EMA (as in Adam) of the detached
    ``L_h``, so every head contributes about ``w_h`` whatever its natural scale; the effective
    weight is ``w_h / m_h``. The EMA is updated on every call in training mode, with the current
    loss included (the first step gives each head exactly ``w_h``). A head whose loss is exactly 0
    (e.g. keypoints in a batch without any) does not update its EMA. Under DDP the losses are
    averaged over ranks first so every rank uses the same weights.
    Cost: one all-reduce of H numbers under DDP, otherwise nothing.
    """

    def __init__(self, heads: list[str], weights: dict[str, float] | None = None,
                 momentum: float = 0.99) -> None:
        super().__init__(heads)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        weights = weights or {}
        self.momentum = momentum
        self.register_buffer("base", torch.tensor([float(weights.get(h, 1.0)) for h in heads]))
        self.register_buffer("ema", torch.zeros(len(heads)))  # [H] biased EMA of L_h
        self.register_buffer("steps", torch.zeros(len(heads)))  # [H] updates per head

    @torch.no_grad()
    def _observe(self, losses: Tensor) -> None:
        values = losses.detach().float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(values)
            values /= dist.get_world_size()
        seen = values > 0
        self.ema.copy_(torch.where(seen, self.momentum * self.ema + (1 - self.momentum) * values,
                                   self.ema))
        self.steps += seen

    def magnitudes(self) -> Tensor:
        """Bias-corrected EMA per head, [H]; 1 for a head not seen yet."""
        corrected = self.ema / (1 - self.momentum ** self.steps).clamp_min(1e-12)
        return torch.where(self.steps > 0, corrected.clamp_min(1e-12), 1.0)

    def forward(self, head_losses: dict[str, Tensor]) -> Tensor:
        losses = self._stack(head_losses)  # [H]
        if self.training:
            self._observe(losses)
        return (self.base / self.magnitudes() * losses).sum()

    def effective_weights(self) -> dict[str, float]:
        return dict(zip(self.heads, (self.base / self.magnitudes()).tolist()))


class GradNorm(Balancer):
    """GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018).

    Learned weights ``w_h`` (sum fixed to H) such that each head's gradient norm on the last shared
    layer, ``G_h = w_h * ||d L_h / d W||``, tracks ``mean(G) * r_h^alpha``, where
    ``r_h = (L_h / L_h(0)) / mean_k(L_k / L_k(0))`` is the head's relative inverse training rate
    (``L_h(0)``: its first non-zero loss). The network gets ``sum_h w_h L_h`` with the current w;
    then w takes one SGD step on ``sum_h |G_h - target_h| / mean(G)`` (target and mean held
    constant, as in the paper) and is renormalised. Two choices make one ``lr`` fit any model: the
    loss is divided by mean(G) (independent of the loss and gradient scale) and the SGD step is
    taken on ``log w`` (relative changes, weights stay positive; a step on w itself would be
    ``lr / w_h`` relative to a small weight and oscillate).

    ``w`` is a buffer with its own update rule, not a parameter of the main optimiser; it lives in
    ``state_dict``. ``shared_params`` should be the last shared layer only: the extra backward
    passes then stop there. A step whose gradient norms are not finite (fp16 overflow) leaves w
    unchanged. Cost: H partial backwards (loss -> head -> last shared layer) per call.
    """

    def __init__(self, heads: list[str], weights: dict[str, float] | None = None,
                 alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(heads)
        w = torch.tensor(_positive_weights(heads, weights))
        self.alpha, self.lr = alpha, lr
        self.register_buffer("w", w * len(heads) / w.sum())  # [H]
        self.register_buffer("initial", torch.zeros(len(heads)))  # [H] L_h(0), 0 = not seen

    def forward(self, head_losses: dict[str, Tensor]) -> Tensor:
        return (self.w * self._stack(head_losses)).sum()

    def effective_weights(self) -> dict[str, float]:
        return dict(zip(self.heads, self.w.tolist()))

    def backward(self, head_losses: dict[str, Tensor], shared_params: list[Tensor],
                 scale: float | Tensor = 1.0) -> dict[str, float]:
        shared = _trainable(shared_params)
        norms = torch.stack([flat_grad(head_losses[h] * scale, shared).norm()
                             for h in self.heads])  # [H] ||d(scale L_h)/dW||
        total = self(head_losses)
        (total * scale).backward()
        gradnorm_loss = self.update(norms, self._stack(head_losses).detach())
        return {"loss": float(total.detach()), "gradnorm_loss": gradnorm_loss}

    @torch.no_grad()
    def update(self, norms: Tensor, losses: Tensor) -> float:
        """One step of w from per-head gradient norms [H] (of unweighted losses) and losses [H]."""
        if not bool(torch.isfinite(norms).all()):
            return math.nan
        losses = losses.float()
        self.initial.copy_(torch.where(self.initial > 0, self.initial, losses))
        ratio = torch.where(self.initial > 0, losses / self.initial.clamp_min(1e-12), 1.0)
        r = ratio / ratio.mean()  # [H] relative inverse training rate
        g = self.w * norms.float()  # [H] G_h
        mean = g.mean().clamp_min(1e-12)
        target = mean * r**self.alpha
        # d/d(log w_h) of sum_k |G_k - target_k| / mean, target and mean constant: w_h * dL/dw_h
        grad = torch.sign(g - target) * g / mean
        w = torch.exp(self.w.log() - self.lr * grad)
        self.w.copy_(w * len(self.heads) / w.sum())
        return float((g - target).abs().sum() / mean)


class PCGrad(Balancer):
    """Projecting conflicting gradients (Yu et al., NeurIPS 2020), on the shared parameters.

    Per head h, ``g_h = d(w_h L_h)/d shared``. For each head i, for every other head j in a random
    order: if ``g_i . g_j < 0``, ``g_i -= (g_i . g_j) / |g_j|^2 * g_j`` (projection onto the normal
    plane of the original g_j). The shared parameters get ``sum_i g_i`` (projected), added to any
    gradient already accumulated; every other parameter gets the plain gradient of
    ``sum_h w_h L_h`` (a parameter reached by one head only gets that head's gradient). With two
    heads no conflict remains; with more, a later projection can reintroduce a small one, as in the
    paper. The order is drawn from ``seed`` and the number of calls so far (kept in
    ``state_dict``), so a resumed run repeats it.

    Cost: H full backwards through ``shared_params`` (backbone + neck) instead of 1 (the last
    head's gradient is the total's minus the others') and H flattened gradient copies in memory.
    Single process only: the edited gradients bypass DDP's all-reduce. fp16 loss scaling is fine
    (the projection is scale-invariant; overflow shows as inf/nan in ``.grad`` for the GradScaler).
    """

    def __init__(self, heads: list[str], weights: dict[str, float] | None = None,
                 seed: int = 0) -> None:
        super().__init__(heads)
        weights = weights or {}
        self.weights = {h: float(weights.get(h, 1.0)) for h in heads}
        self.seed, self.calls = seed, 0

    def forward(self, head_losses: dict[str, Tensor]) -> Tensor:
        return sum(self.weights[h] * head_losses[h] for h in self.heads)

    def effective_weights(self) -> dict[str, float]:
        return dict(self.weights)

    def get_extra_state(self) -> dict:
        return {"calls": self.calls}

    def set_extra_state(self, state: dict) -> None:
        self.calls = int(state["calls"])

    def backward(self, head_losses: dict[str, Tensor], shared_params: list[Tensor],
                 scale: float | Tensor = 1.0) -> dict[str, float]:
        self._stack(head_losses)  # checks the head names
        shared = _trainable(shared_params)
        weighted = [self.weights[h] * head_losses[h] * scale for h in self.heads]
        grads = [flat_grad(loss, shared) for loss in weighted[:-1]]  # H-1 x [P]
        saved = [p.grad for p in shared]
        for p in shared:
            p.grad = None
        total = sum(weighted)
        total.backward()  # every parameter; the shared ones are overwritten below
        g_total = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)
                             for p in shared])  # [P]
        grads.append(g_total - sum(grads))
        order = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        projected, conflicts = pcgrad_project(torch.stack(grads), order)  # [H, P]
        _write_grads(shared, projected.sum(0), saved)
        unscaled = sum(self.weights[h] * head_losses[h].detach() for h in self.heads)
        return {"loss": float(unscaled), "pcgrad_conflicts": float(conflicts)}


def pcgrad_project(grads: Tensor,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """grads [H, P] -> (projected [H, P], number of conflicting (i, j) pairs met, a 0-d tensor).

    For each i, the other heads j in a random order (from ``generator``; ``None``: 0..H-1): when
    ``p_i . g_j < 0``, ``p_i -= (p_i . g_j) / |g_j|^2 g_j``. No host synchronisation.
    """
    out = grads.clone()
    sq = (grads * grads).sum(1).clamp_min(1e-30)  # [H]
    conflicts = grads.new_zeros(())
    for i in range(len(grads)):
        order = torch.randperm(len(grads), generator=generator) if generator is not None \
            else torch.arange(len(grads))
        for j in order.tolist():
            if j == i:
                continue
            dot = out[i] @ grads[j]
            conflicts += (dot < 0).to(conflicts.dtype)
            out[i] -= dot.clamp(max=0) / sq[j] * grads[j]
    return out, conflicts


def _write_grads(params: list[Tensor], flat: Tensor, saved: list[Tensor | None]) -> None:
    """Set each param's .grad to its slice of ``flat`` plus the gradient saved before."""
    offset = 0
    for p, old in zip(params, saved):
        g = flat[offset:offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        p.grad = g.clone() if old is None else old + g


def build_balancer(kind: BalanceKind, heads: list[str],
                   weights: dict[str, float] | None = None, *, ema_momentum: float = 0.99,
                   gradnorm_alpha: float = 1.5, gradnorm_lr: float = 0.025,
                   seed: int = 0) -> Balancer:
    """The balancer for ``kind``; ``weights`` (default 1 per head) are the base/initial weights."""
    match kind:
        case "fixed":
            return FixedWeights(heads, weights)
        case "uncertainty":
            return UncertaintyWeighting(heads, weights)
        case "loss_norm":
            return LossNormWeighting(heads, weights, ema_momentum)
        case "gradnorm":
            return GradNorm(heads, weights, gradnorm_alpha, gradnorm_lr)
        case "pcgrad":
            return PCGrad(heads, weights, seed)
    raise ValueError(f"unknown balancing kind {kind!r}; "
                     "expected fixed, uncertainty, loss_norm, gradnorm or pcgrad")


def group_mismatch(expected: tuple[str, ...], losses: dict[str, dict[str, Tensor]],
                   apart: tuple[str, ...]) -> str:
    """The one-line error for balancing groups that do not match the losses the heads return."""
    terms = sorted(k for g in losses.values() for k in g)
    missing = [k for k in apart if k not in losses]
    if missing:
        return (f"train.balance_apart: no trained head returns {', '.join(missing)} (the terms: "
                f"{', '.join(terms)})")
    empty = [h for h in expected if h not in losses]
    return f"train.balance_apart leaves head(s) {', '.join(empty)} without a loss term of their own"
