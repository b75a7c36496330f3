import math

import pytest
import torch
from torch import nn

from detect.balancing import (FixedWeights, GradNorm, LossNormWeighting, PCGrad,
                              UncertaintyWeighting, build_balancer, flat_grad, group_losses,
                              head_totals, own_terms_gradient_only,
                              pcgrad_project)


class TwoHeads(nn.Module):
    """A shared linear layer feeding two linear heads; head "big"'s loss is 100x "small"'s."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(4, 8)
        self.big, self.small = nn.Linear(8, 1), nn.Linear(8, 1)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        f = torch.relu(self.shared(x))  # [N, 8]
        return {"big": 100 * ((self.big(f)[:, 0] - y) ** 2).mean(),
                "small": ((self.small(f)[:, 0] - y) ** 2).mean()}


def toy_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g)
    return x, x.sum(1) + 0.5 * torch.randn(32, generator=g)


def contributions(balancer, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    w = balancer.effective_weights()
    return {h: w[h] * float(v.detach()) for h, v in losses.items()}


def spread(c: dict[str, float]) -> float:
    return max(c.values()) / min(c.values())


def train(balancer, steps: int, lr: float = 0.01) -> tuple[TwoHeads, dict[str, torch.Tensor]]:
    model, (x, y) = TwoHeads(), toy_data()
    opt = torch.optim.SGD(list(model.parameters()) + list(balancer.parameters()), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        balancer.backward(model.losses(x, y), list(model.shared.parameters()))
        opt.step()
    return model, model.losses(x, y)


def test_head_totals():
    t = head_totals({"a": {"loss_x": torch.tensor(1.0), "loss_y": torch.tensor(2.5)},
                     "b": {"loss_z": torch.tensor(4.0)}})
    assert {h: float(v) for h, v in t.items()} == {"a": 3.5, "b": 4.0}


def test_group_losses_sets_terms_apart_and_loss_norm_weighs_them_on_their_own():
    losses = {"cls": {"loss_cls": torch.tensor(1.0)},
              "keypoints": {"loss_kpt": torch.tensor(3.0), "loss_kpt_side": torch.tensor(1.0)}}
    groups = group_losses(losses, ("loss_kpt_side",))
    assert {g: {k: float(v) for k, v in t.items()} for g, t in groups.items()} == {
        "cls": {"loss_cls": 1.0}, "keypoints": {"loss_kpt": 3.0},
        "loss_kpt_side": {"loss_kpt_side": 1.0}}
    assert group_losses(losses, ()) == losses
    assert set(group_losses({"cls": {"loss_cls": torch.tensor(1.0)}}, ("loss_cls",))) == {"loss_cls"}
    # together the side term gets 1/4 of the keypoint head's one unit; apart, a unit of its own
    together = LossNormWeighting(["cls", "keypoints"])
    apart = LossNormWeighting(["cls", "keypoints", "loss_kpt_side"])
    side = torch.tensor(1.0, requires_grad=True)
    losses["keypoints"]["loss_kpt_side"] = side
    together(head_totals(losses)).backward()
    assert float(side.grad) == pytest.approx(1 / 4)
    side.grad = None
    apart(head_totals(group_losses(losses, ("loss_kpt_side",)))).backward()
    assert float(side.grad) == pytest.approx(1.0)


def test_own_terms_keep_their_gradient_and_leave_the_balancing_alone():
    """A term that trains parameters of its own only (`Head.own_terms`) is zero in value: under
    loss_norm the keypoint head's other term gets its whole unit, as without the term, and the
    own term still sends a gradient (scaled by its head's weight) to its parameters."""
    kpt = torch.tensor(3.0, requires_grad=True)
    side = torch.tensor(0.7, requires_grad=True)
    losses = {"cls": {"loss_cls": torch.tensor(1.0)},
              "keypoints": {"loss_kpt": kpt, "loss_kpt_side": side}}
    masked = own_terms_gradient_only(losses, {"loss_kpt_side"})
    assert float(masked["keypoints"]["loss_kpt_side"].detach()) == 0.0
    assert masked["keypoints"]["loss_kpt"] is kpt and masked["cls"] == losses["cls"]
    LossNormWeighting(["cls", "keypoints"])(head_totals(masked)).backward()
    assert float(kpt.grad) == pytest.approx(1 / 3)  # 1 / its own magnitude: the side term adds none
    assert float(side.grad) == pytest.approx(1 / 3)  # the head's weight
    assert own_terms_gradient_only(losses, ()) == losses


def test_fixed_weights_reproduce_weighted_sum_and_gradient():
    model, (x, y) = TwoHeads(), toy_data()
    balancer = FixedWeights(["big", "small"], {"big": 0.3})
    out = balancer.backward(model.losses(x, y), list(model.shared.parameters()), scale=0.5)
    got = [p.grad.clone() for p in model.parameters()]
    losses = model.losses(x, y)
    expected_total = 0.3 * losses["big"] + 1.0 * losses["small"]
    expected = torch.autograd.grad(0.5 * expected_total, list(model.parameters()))
    expected_total = float(expected_total.detach())
    assert out["loss"] == pytest.approx(expected_total, rel=1e-6)
    assert float(balancer(losses).detach()) == pytest.approx(expected_total, rel=1e-6)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    assert balancer.effective_weights() == {"big": 0.3, "small": 1.0}


def test_fixed_weights_leave_the_100x_imbalance():
    # the baseline the two tests below must beat
    losses = TwoHeads().losses(*toy_data())
    assert spread(contributions(FixedWeights(["big", "small"]), losses)) > 30


def test_loss_norm_brings_contributions_within_3x():
    balancer = LossNormWeighting(["big", "small"], momentum=0.9)
    _, losses = train(balancer, 50)
    assert spread(contributions(balancer, losses)) < 3


def test_loss_norm_bias_corrected_ema_by_hand():
    m = 0.9
    balancer = LossNormWeighting(["a", "b"], {"a": 2.0}, momentum=m)
    first = balancer({"a": torch.tensor(4.0), "b": torch.tensor(10.0)})
    assert float(first) == pytest.approx(2.0 + 1.0)  # the first step gives each head its base
    balancer({"a": torch.tensor(8.0), "b": torch.tensor(0.0)})  # b's zero loss is not observed
    ema_a = (m * (1 - m) * 4 + (1 - m) * 8) / (1 - m**2)
    w = balancer.effective_weights()
    assert w["a"] == pytest.approx(2.0 / ema_a)
    assert w["b"] == pytest.approx(1.0 / 10.0)
    balancer.eval()
    balancer({"a": torch.tensor(100.0), "b": torch.tensor(100.0)})  # eval: statistics frozen
    assert balancer.effective_weights() == pytest.approx(w)
    restored = LossNormWeighting(["a", "b"], momentum=m)
    restored.load_state_dict(balancer.state_dict())
    assert restored.effective_weights()["b"] == pytest.approx(0.1)


def test_uncertainty_brings_contributions_within_3x():
    balancer = UncertaintyWeighting(["big", "small"])
    assert [p.shape for p in balancer.parameters()] == [torch.Size([2])]
    _, losses = train(balancer, 300)
    assert spread(contributions(balancer, losses)) < 3


def test_uncertainty_loss_and_initial_weights():
    balancer = UncertaintyWeighting(["a", "b"], {"a": 0.5})
    assert balancer.effective_weights() == pytest.approx({"a": 0.5, "b": 1.0})
    s = -math.log(0.5)
    total = balancer({"a": torch.tensor(3.0), "b": torch.tensor(2.0)})
    assert float(total.detach()) == pytest.approx(0.5 * 3.0 + s + 2.0)


def test_pcgrad_project_hand_computed():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    projected, conflicts = pcgrad_project(g)
    torch.testing.assert_close(projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert int(conflicts) == 2


def test_pcgrad_project_removes_conflicts_and_keeps_agreeing_gradients():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = torch.randn(50, generator=gen)
        b = -a + 0.5 * torch.randn(50, generator=gen)  # conflicting
        assert a @ b < 0
        p, _ = pcgrad_project(torch.stack([a, b]), gen)
        assert p[0] @ b > -1e-4 and p[1] @ a > -1e-4 and p[0] @ p[1] > -1e-4
        c = a + 0.5 * torch.randn(50, generator=gen).abs() * a.sign()  # agreeing
        assert a @ c > 0
        p, n = pcgrad_project(torch.stack([a, c]), gen)
        torch.testing.assert_close(p, torch.stack([a, c]))
        assert int(n) == 0


class Conflicting(nn.Module):
    """Shared layer W; head "a" pulls W's output towards +c, head "b" towards -c (+ noise)."""

    def __init__(self, conflict: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.shared = nn.Linear(3, 6)
        self.head_a, self.head_b = nn.Linear(6, 1), nn.Linear(6, 1)
        self.sign = -1.0 if conflict else 1.0

    def losses(self) -> dict[str, torch.Tensor]:
        f = self.shared(torch.ones(2, 3))  # [2, 6]
        c = torch.arange(6.0)
        return {"a": -(f * c).sum() + self.head_a(f).pow(2).mean(),
                "b": -self.sign * (f * (c + 0.3)).sum() + self.head_b(f).pow(2).mean()}


def per_head_shared_grads(model: Conflicting) -> torch.Tensor:
    losses, shared = model.losses(), list(model.shared.parameters())
    return torch.stack([flat_grad(losses[h], shared) for h in ("a", "b")])  # [2, P]


def test_pcgrad_backward_projects_shared_and_keeps_head_gradients():
    model = Conflicting(conflict=True)
    grads = per_head_shared_grads(model)
    assert grads[0] @ grads[1] < 0
    plain = torch.autograd.grad(sum(model.losses().values()),
                                list(model.head_a.parameters()) + list(model.head_b.parameters()))
    balancer = PCGrad(["a", "b"])
    out = balancer.backward(model.losses(), list(model.shared.parameters()))
    assert out["pcgrad_conflicts"] == 2
    projected, _ = pcgrad_project(grads)  # two heads: the order does not matter
    got = torch.cat([p.grad.reshape(-1) for p in model.shared.parameters()])
    torch.testing.assert_close(got, projected.sum(0))
    assert projected[0] @ projected[1] >= -1e-4
    head_grads = [p.grad for p in list(model.head_a.parameters()) + list(model.head_b.parameters())]
    for g, e in zip(head_grads, plain):
        torch.testing.assert_close(g, e)


def test_pcgrad_backward_equals_plain_sum_without_conflict_and_accumulates():
    model = Conflicting(conflict=False)
    assert (lambda g: g[0] @ g[1])(per_head_shared_grads(model)) > 0
    expected = torch.autograd.grad(sum(model.losses().values()), list(model.parameters()))
    balancer = PCGrad(["a", "b"], seed=3)
    for _ in range(2):  # two micro-batches accumulate
        out = balancer.backward(model.losses(), list(model.shared.parameters()), scale=0.5)
    assert out["pcgrad_conflicts"] == 0
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)
    restored = PCGrad(["a", "b"], seed=3)
    restored.load_state_dict(balancer.state_dict())
    assert restored.calls == 2


def test_gradnorm_moves_weights_towards_equal_gradient_norms():
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    x = torch.randn(8, 4)

    def losses() -> dict[str, torch.Tensor]:
        f = shared(x)  # [8, 4]
        return {"a": 10 * f.pow(2).mean(), "b": f.pow(2).mean()}  # a's gradient is 10x b's

    balancer = GradNorm(["a", "b"], alpha=1.5, lr=0.025)
    params = list(shared.parameters())
    first = balancer.backward(losses(), params)
    for _ in range(150):
        out = balancer.backward(losses(), params)
    w = balancer.effective_weights()
    assert sum(w.values()) == pytest.approx(2.0)
    assert w["a"] < w["b"]
    ratio = 10 * w["a"] / w["b"]  # G_a / G_b, starting at 10
    assert 0.7 < ratio < 1.5
    assert out["gradnorm_loss"] < 0.3 * first["gradnorm_loss"]


def test_gradnorm_network_gradient_uses_the_weights_and_slow_heads_gain_weight():
    torch.manual_seed(0)
    shared = nn.Linear(3, 3)
    balancer = GradNorm(["a", "b"], {"a": 3.0, "b": 1.0})
    assert balancer.effective_weights() == pytest.approx({"a": 1.5, "b": 0.5})
    f = shared(torch.ones(1, 3))
    balancer.backward({"a": f.sum(), "b": f.pow(2).sum()}, [shared.weight], scale=2.0)
    f = shared(torch.ones(1, 3))
    expected = torch.autograd.grad(2.0 * (1.5 * f.sum() + 0.5 * f.pow(2).sum()), shared.weight)[0]
    # the weights were updated after the backward: the network saw the old ones
    torch.testing.assert_close(shared.weight.grad, expected)
    # equal gradient norms; "a" has not improved since its first loss, "b" halved
    balancer = GradNorm(["a", "b"], alpha=1.5, lr=0.1)
    norms = torch.tensor([1.0, 1.0])
    balancer.update(norms, torch.tensor([1.0, 1.0]))
    balancer.update(norms, torch.tensor([1.0, 0.5]))
    w = balancer.effective_weights()
    assert w["a"] > 1.0 > w["b"]
    assert math.isnan(balancer.update(torch.tensor([math.inf, 1.0]), torch.tensor([1.0, 1.0])))
    assert balancer.effective_weights() == w


def test_build_balancer():
    heads, weights = ["cls", "box"], {"box": 2.0}
    kinds = {"fixed": FixedWeights, "uncertainty": UncertaintyWeighting,
             "loss_norm": LossNormWeighting, "gradnorm": GradNorm, "pcgrad": PCGrad}
    for kind, cls in kinds.items():
        b = build_balancer(kind, heads, weights)
        assert type(b) is cls and set(b.effective_weights()) == set(heads)
    assert build_balancer("loss_norm", heads, ema_momentum=0.5).momentum == 0.5
    with pytest.raises(ValueError, match="unknown balancing kind"):
        build_balancer("dwa", heads)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="expects losses for heads"):
        build_balancer("uncertainty", heads)({"cls": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="must be positive"):
        build_balancer("gradnorm", heads, {"cls": 0.0})
