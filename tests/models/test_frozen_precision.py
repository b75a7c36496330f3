"""The backbone's frozen stages in bfloat16 while training (`Backbone.stage`, train.frozen_bf16):
evaluation unchanged to the bit, training outputs and gradients close to float32, frozen
parameters still without gradient; the trainer sets it only where the config and the CPU allow."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detect.config import load_config
from detect.engine.trainer import Trainer
from detect.models.backbone import build_backbone, efficientnet_lite0_weights_path
from detect.models.backbones.base import native_bf16

# random weights, except EfficientNet-Lite0's ImageNet file (the light config's case: random
# depthwise stacks without real statistics amplify the rounding far beyond what trained ones do)
CASES = [("resnet18", 2), ("mobilenet_v3_large", 3), ("efficientnet_lite0", 3)]


def _run(backbone, x: torch.Tensor, dtype: torch.dtype | None):
    backbone.frozen_dtype = dtype
    backbone.zero_grad(set_to_none=True)
    outs = backbone(x)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
    grads = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}
    return [o.detach() for o in outs], grads


@pytest.mark.parametrize("name,frozen", CASES)
def test_eval_is_unchanged_and_training_is_close(name: str, frozen: int) -> None:
    torch.manual_seed(0)
    weights = efficientnet_lite0_weights_path() if name == "efficientnet_lite0" else None
    backbone = build_backbone(name, weights=weights, freeze_bn=True, frozen_stages=frozen)
    x = torch.randn(2, 3, 96, 96)
    backbone.eval()
    with torch.no_grad():
        backbone.frozen_dtype = None
        ref = backbone(x)
        backbone.frozen_dtype = torch.bfloat16
        assert all(torch.equal(a, b) for a, b in zip(ref, backbone(x)))  # eval: float32 always
    backbone.train()
    outs32, grads32 = _run(backbone, x, None)
    outs16, grads16 = _run(backbone, x, torch.bfloat16)
    assert all(o.dtype == torch.float32 for o in outs16)
    assert any(not torch.equal(a, b) for a, b in zip(outs32, outs16))  # the bf16 path ran
    for a, b in zip(outs32, outs16):
        assert (a - b).norm() <= 0.05 * a.norm()
    assert grads16.keys() == grads32.keys() and grads32  # the same parameters train
    frozen_prefixes = tuple(p + "." for stage in backbone.stages()[:frozen] for p in stage)
    assert not any(n.startswith(frozen_prefixes) for n in grads16)
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([grads16[n].flatten() for n in grads32])
    assert F.cosine_similarity(flat32, flat16, dim=0) > 0.98


def test_native_bf16_only_on_a_cpu_that_has_it() -> None:
    assert native_bf16(torch.device("cuda")) is None
    expected = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert (native_bf16(torch.device("cpu")) is torch.bfloat16) == expected


@pytest.mark.parametrize("enabled", [True, False])
def test_trainer_sets_it_from_the_config(tiny_overrides, tmp_path, enabled: bool) -> None:
    cfg = load_config("configs/demo.yaml", tiny_overrides + [
        "model.backbone.frozen_stages=2", f"train.frozen_bf16={str(enabled).lower()}"])
    t = Trainer(cfg, tmp_path, device="cpu", show_progress=False)
    expected = native_bf16(torch.device("cpu")) if enabled else None
    assert t.model.backbone.frozen_dtype is expected
    assert t.model.backbone.frozen_stages == 2
