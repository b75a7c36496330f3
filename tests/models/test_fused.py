"""The towers' inference form (`detect.heads.fused`): BatchNorm folded into the convolutions.

The reference is the training form of the same module in eval mode (autograd on, which keeps the
unfolded path): conv -> BatchNorm per level -> ReLU.
"""
import warnings

import pytest
import torch
from torch import nn

from detect.box_coder import BoxCoder
from detect.heads import KeypointHead, Tower
from detect.heads.fused import FoldCache, fold_layers, run_layers

LEVELS = [(10, 12), (5, 6), (3, 3)]
SIGMAS = (0.05,) * 5
PAIRS = ((1, 2), (3, 4))


def feats(c: int = 16, b: int = 2, channels_last: bool = False) -> list[torch.Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [torch.randn(b, c, h, w).contiguous(memory_format=fmt) for h, w in LEVELS]


def randomise(module: nn.Module) -> nn.Module:
    """Random weights and BatchNorm statistics, as after training (init leaves BN an identity)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.5, 2.0)
                m.bias.normal_()
            elif isinstance(m, nn.Conv2d):
                m.weight.normal_(0, 0.1)
                if m.bias is not None:
                    m.bias.normal_()
    return module.eval()


def training_form(module: nn.Module, *args, **kwargs):
    with torch.enable_grad():
        out = module(*args, **kwargs)
    return out.detach() if isinstance(out, torch.Tensor) else [o.detach() for o in out]


def inference_form(module: nn.Module, *args, **kwargs):
    with torch.no_grad():
        return module(*args, **kwargs)


@pytest.mark.parametrize("in_channels", [None, 24])
def test_folded_tower_equals_conv_batchnorm_relu_per_level(in_channels) -> None:
    tower = randomise(Tower(16, 2, "bn", num_levels=3, in_channels=in_channels))
    x = feats(in_channels or 16)
    for got, want in zip(inference_form(tower, x), training_form(tower, x)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert tower.fold_cache._entries  # the folded form ran


def _with_training_batchnorm() -> Tower:
    tower = randomise(Tower(16, 1, "bn", num_levels=3))
    tower.norms[0][1].train()  # batch statistics on that level: nothing fixed to fold
    return tower


@pytest.mark.parametrize("make", [lambda: randomise(Tower(16, 2, "none")),
                                  lambda: randomise(Tower(16, 2, "gn")),
                                  lambda: randomise(Tower(16, 0, "bn")),
                                  _with_training_batchnorm],
                         ids=["none", "gn", "depth0", "bn-in-training"])
def test_towers_with_nothing_to_fold_keep_the_training_form(make) -> None:
    tower = make()
    x = feats()
    for got, want in zip(inference_form(tower, x), training_form(tower, x)):
        torch.testing.assert_close(got, want)
    assert not tower.fold_cache._entries


def test_traced_graphs_read_the_parameters_not_folded_copies() -> None:
    tower = randomise(Tower(16, 2, "bn", num_levels=3))
    x = feats()
    inference_form(tower, x)  # a warm cache
    with torch.no_grad(), warnings.catch_warnings():  # as the exporters trace
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(tower, (x,), check_trace=False)
    other = randomise(Tower(16, 2, "bn", num_levels=3))
    tower.load_state_dict(other.state_dict())
    for got, want in zip(traced(x), training_form(other, x)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_weights_made_in_inference_mode() -> None:
    with torch.inference_mode():  # inference tensors have no version counter: built each call
        tower = randomise(Tower(16, 2, "bn", num_levels=3))
        x = feats()
        got = tower(x)
    plain = Tower(16, 2, "bn", num_levels=3).eval()
    plain.load_state_dict({k: v.clone() for k, v in tower.state_dict().items()})
    for g, w in zip(got, training_form(plain, [f.clone() for f in x])):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def test_bfloat16_convolutions_with_float32_batchnorm() -> None:
    tower = randomise(Tower(16, 2, "bn", num_levels=3))
    tower.convs.to(torch.bfloat16)  # BatchNorm stays float32
    x = [f.bfloat16() for f in feats()]
    for got, want in zip(inference_form(tower, x), training_form(tower, x)):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want.float(), atol=0.1, rtol=0.05)


def test_fold_layers_by_hand() -> None:
    # one 1x1 conv (weight 2, no bias) then BatchNorm(mean 1, var 3, eps 1, weight 4, bias 5):
    # (2x - 1) / 2 * 4 + 5 = 4x + 3, as one convolution with weight 4 and bias 3
    tower = Tower(1, 1, "bn", num_levels=1)
    tower.convs[0] = nn.Conv2d(1, 1, 1, bias=False)
    bn = tower.norms[0][0]
    with torch.no_grad():
        tower.convs[0].weight.fill_(2.0)
        bn.running_mean.fill_(1.0), bn.running_var.fill_(3.0), bn.weight.fill_(4.0), bn.bias.fill_(5.0)
    bn.eps = 1.0
    (weight, bias, groups), = fold_layers([tower], 0)
    assert weight.flatten().tolist() == [4.0] and bias.tolist() == [3.0] and groups == 1
    assert run_layers(torch.tensor([[[[-1.0, 0.5]]]]), [(weight, bias, groups)]).flatten().tolist() == [0.0, 5.0]


def keypoint_head(side: bool, maps: bool, anchors: int = 1) -> KeypointHead:
    tower = Tower(8, 2, "bn", num_levels=3, in_channels=16)
    return randomise(KeypointHead(
        8, anchors, 5, tower, BoxCoder(), SIGMAS, field_groups=[0, 1, 1, 2, 2] if maps else None,
        handedness_pairs=PAIRS if side else ()))


@pytest.mark.parametrize("side,maps,anchors", [(True, True, 1), (True, False, 3),
                                               (False, False, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_keypoint_head_inference_form_equals_training_form(side, maps, anchors,
                                                           channels_last) -> None:
    head = keypoint_head(side, maps, anchors)
    x = feats(channels_last=channels_last)
    got = inference_form(head, x)
    assert head.tower.fold_cache._entries  # the folded form ran
    assert bool(head.fold_cache._entries) == maps  # the finest level's predictors joined
    want = training_form(head, x)
    assert got.shape == want.shape == (2, sum(h * w for h, w in LEVELS) * anchors, head.outputs_per_anchor)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_folded_weights_follow_changes_of_the_weights() -> None:
    head = keypoint_head(True, True)
    x = feats()
    inference_form(head, x)  # builds the folded weights
    other = keypoint_head(True, True)
    head.load_state_dict(other.state_dict())  # in place: the same tensors, new versions
    torch.testing.assert_close(inference_form(head, x), training_form(other, x), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        head.tower.norms[1][0].running_mean.add_(1.0)  # a buffer, in place
    torch.testing.assert_close(inference_form(head, x), training_form(head, x), atol=1e-5, rtol=1e-4)
    head.tower.convs[0].weight = nn.Parameter(torch.randn_like(head.tower.convs[0].weight))
    torch.testing.assert_close(inference_form(head, x), training_form(head, x), atol=1e-5, rtol=1e-4)


def test_fold_cache_rebuilds_only_on_change() -> None:
    cache, calls = FoldCache(), []
    t = torch.zeros(3)

    def build():
        calls.append(1)
        return t.sum()

    cache.get("k", [t], build)
    cache.get("k", [t], build)
    assert len(calls) == 1
    t.add_(1.0)
    assert cache.get("k", [t], build) == 3.0 and len(calls) == 2
    u = t.clone()
    cache.get("k", [u], build)  # an equal tensor, but another one
    assert len(calls) == 3


def test_training_mode_and_autograd_keep_the_training_form() -> None:
    head = keypoint_head(True, True).train()
    out = head(feats())
    out.sum().backward()  # gradients reach every tower parameter, BatchNorm in batch statistics
    assert head.tower.convs[0].weight.grad is not None
    assert head.tower.norms[0][0].num_batches_tracked.item() == 1
