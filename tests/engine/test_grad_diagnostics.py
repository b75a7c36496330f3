import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detect.engine.grad_diagnostics import ConflictSummary, head_gradient_stats


def tiny_losses(frozen_bias: bool = False):
    """A shared linear layer and three heads with random targets: -> (losses, shared params)."""
    torch.manual_seed(0)
    shared = nn.Linear(5, 4)
    if frozen_bias:
        shared.bias.requires_grad_(False)
    heads = {h: nn.Linear(4, 1) for h in ("cls", "box", "keypoints")}
    x, y = torch.randn(6, 5), torch.randn(6)
    f = torch.tanh(shared(x))  # [6, 4]
    losses = {h: F.mse_loss(m(f)[:, 0], y * (i + 1)) for i, (h, m) in enumerate(heads.items())}
    return losses, list(shared.parameters())


def direct(losses, params):
    params = [p for p in params if p.requires_grad]
    return {h: torch.cat([g.reshape(-1) for g in torch.autograd.grad(v, params, retain_graph=True)])
            for h, v in losses.items()}


@pytest.mark.parametrize("frozen_bias", [False, True])
def test_stats_equal_a_direct_autograd_computation(frozen_bias):
    losses, params = tiny_losses(frozen_bias)
    stats = head_gradient_stats(losses, params)
    grads = direct(losses, params)
    assert list(stats["grad_norm"]) == ["cls", "box", "keypoints"]
    assert list(stats["grad_cosine"]) == ["cls|box", "cls|keypoints", "box|keypoints"]
    for h, g in grads.items():
        assert stats["grad_norm"][h] == pytest.approx(float(g.norm()), rel=1e-5)
    for pair, c in stats["grad_cosine"].items():
        a, b = pair.split("|")
        assert c == pytest.approx(float(F.cosine_similarity(grads[a], grads[b], dim=0)), abs=1e-5)
    assert all(p.grad is None for p in params)  # diagnostics leave .grad alone
    sum(losses.values()).backward()  # and keep the graph for the step's own backward


def test_zero_gradient_head_has_cosine_zero():
    shared = nn.Linear(2, 2)
    f = shared(torch.ones(1, 2))
    stats = head_gradient_stats({"a": f.sum(), "b": f.sum() * 0.0}, list(shared.parameters()))
    assert stats["grad_norm"]["b"] == 0.0
    assert stats["grad_cosine"] == {"a|b": 0.0}


def test_conflict_summary_hand_made():
    summary = ConflictSummary()
    summary.add({"grad_norm": {"a": 1.0, "b": 3.0}, "grad_cosine": {"a|b": 0.5}})
    summary.add({"grad_norm": {"a": 3.0, "b": 1.0}, "grad_cosine": {"a|b": -0.25}})
    summary.add({"grad_norm": {"a": 2.0, "b": 5.0, "c": 4.0},
                 "grad_cosine": {"a|b": -0.5, "a|c": 0.0, "b|c": -1.0}})
    s = summary.summary()
    assert s["pairs"]["a|b"] == {"mean_cosine": pytest.approx(-0.25 / 3),
                                 "frac_negative": pytest.approx(2 / 3), "samples": 3}
    assert s["pairs"]["a|c"] == {"mean_cosine": 0.0, "frac_negative": 0.0, "samples": 1}
    assert s["pairs"]["b|c"] == {"mean_cosine": -1.0, "frac_negative": 1.0, "samples": 1}
    assert s["heads"] == {"a": {"mean_grad_norm": 2.0, "samples": 3},
                          "b": {"mean_grad_norm": 3.0, "samples": 3},
                          "c": {"mean_grad_norm": 4.0, "samples": 1}}
    assert ConflictSummary().summary() == {"pairs": {}, "heads": {}}
