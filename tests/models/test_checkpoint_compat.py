"""A checkpoint written before the heads had config sections of their own (flat
``model.heads.keypoint_*`` keys) loads and predicts what it predicted then, eager and exported.

The fixture (tests/fixtures/checkpoint_flat_heads.pt) was made by the code of that time: the demo
config (light model, keypoint head with crop handedness and offset field) trained 40 steps on the
sample set, its backbone filled from a seeded generator (`fill_backbone`) so that the file need
not hold the backbone, the other weights stored in float16; with two val images (PNG bytes) and
that code's `Detector.predict` outputs with exactly those weights.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detect.api import Detector
from detect.config import config_from_dict
from detect.models.build import build_model


FIXTURE = Path(__file__).parents[1] / "fixtures" / "checkpoint_flat_heads.pt"


def fill_backbone(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """The backbone's float tensors as the fixture was made with: He-normal weights from a seeded
    generator in key order, BatchNorm at identity."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(state):
        v = state[k]
        if not k.startswith("backbone.") or not v.is_floating_point():
            continue
        if k.endswith("running_var") or (k.endswith(".weight") and v.ndim == 1):
            out[k] = torch.ones_like(v)
        elif k.endswith("running_mean") or v.ndim == 1:
            out[k] = torch.zeros_like(v)
        else:
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
    return out


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    fixture = torch.load(FIXTURE, weights_only=True)
    cfg = config_from_dict(fixture["config"], str(FIXTURE))
    k = len(fixture["keypoints"]["names"])
    state = build_model(cfg.model, len(fixture["categories"]["ids"]), k).state_dict()
    weights = {**{n: t for n, t in state.items() if n.startswith("backbone.")},
               **fill_backbone(state),
               **{k: v.float() if v.is_floating_point() else v for k, v in fixture["model"].items()}}
    path = tmp_path_factory.mktemp("old") / "old.pt"
    torch.save({"model": weights, "ema": None, "config": fixture["config"],
                "categories": fixture["categories"], "keypoints": fixture["keypoints"]}, path)
    return path, fixture


def test_old_config_translates_to_the_head_sections(old) -> None:
    _, fixture = old
    heads = fixture["config"]["model"]["heads"]
    assert heads["keypoint_side_tower"] == "crop" and "keypoints" not in heads  # the old layout
    cfg = config_from_dict(fixture["config"], "fixture")
    kp = cfg.model.heads.keypoints
    assert (kp.handedness, kp.field, kp.crop_lr, kp.side_weight) == ("crop", True, 5.0, 2.0)
    assert len(kp.sigmas) == 13 and kp.sigmas[0] == 0.026
    assert cfg.model.heads.box.loss == "giou" and cfg.model.heads.norm == "bn"


def _check(preds, expected) -> None:
    for p, e in zip(preds, expected):
        assert len(p.scores) == len(e["scores"]) > 0
        np.testing.assert_array_equal(p.labels, e["labels"].numpy())
        np.testing.assert_allclose(p.boxes, e["boxes"].numpy(), atol=1e-3)
        np.testing.assert_allclose(p.scores, e["scores"].numpy(), atol=1e-5)
        np.testing.assert_allclose(p.fields["keypoints"].values, e["keypoints"].numpy(),
                                   atol=1e-3)


def test_old_checkpoint_predicts_as_before(old) -> None:
    path, fixture = old
    det = Detector.from_checkpoint(path)
    _check(det.predict(images(fixture)), fixture["expected"])


def images(fixture: dict) -> list[np.ndarray]:
    return [cv2.imdecode(b.numpy(), cv2.IMREAD_COLOR) for b in fixture["images_png"]]


def test_old_checkpoint_exported_predicts_as_before(old, tmp_path) -> None:
    from detect.export.onnx import export_onnx

    path, fixture = old
    export_onnx(Detector.from_checkpoint(path), tmp_path / "old.onnx")
    det = Detector.from_onnx(tmp_path / "old.onnx")
    _check(det.predict(images(fixture)), fixture["expected"])
