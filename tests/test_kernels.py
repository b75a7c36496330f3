"""torchvision's operators through `detect.kernels`: the same results and gradients as
torchvision.ops, and a predictor that imports neither torchvision's package nor timm."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
import torchvision

from detect import kernels


def _boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 200
    return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 60], 1)  # [N, 4]


def test_nms_equals_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 50, 800):
        boxes, scores = _boxes(n, g), torch.rand(n, generator=g)
        for iou in (0.3, 0.5, 0.7):
            assert torch.equal(kernels.nms(boxes, scores, iou),
                               torchvision.ops.nms(boxes, scores, iou))


def test_roi_align_equals_torchvision_with_gradients() -> None:
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 5, 30, 40, generator=g)
    rois = torch.cat([torch.randint(0, 2, (20, 1), generator=g).float(), _boxes(20, g)], 1)
    for aligned, ratio in ((True, 1), (True, 2), (False, -1)):
        a, b = maps.clone().requires_grad_(True), maps.clone().requires_grad_(True)
        ours = kernels.roi_align(a, rois, 7, 0.125, ratio, aligned)
        theirs = torchvision.ops.roi_align(b, rois, 7, 0.125, ratio, aligned)
        assert torch.equal(ours, theirs)
        weights = torch.randn(ours.shape, generator=g)
        (ours * weights).sum().backward()
        (theirs * weights).sum().backward()
        assert torch.equal(a.grad, b.grad)


def test_a_prediction_imports_neither_torchvision_nor_timm(tmp_path: Path) -> None:
    """A light model built and run as `Detector.predict` runs it, in a fresh interpreter: no
    torchvision package (its import pulls in torch._dynamo) and no timm; then importing
    torchvision afterwards (as training does) keeps the operators working."""
    code = textwrap.dedent("""
        import dataclasses
        import sys
        import numpy as np
        from detect.api import Detector
        from detect.config import load_config
        from detect.data.annotations import CategoryMap
        from detect.models.build import build_model

        cfg = load_config("configs/light_lite0_coco.yaml", ["model.backbone.weights=null"])
        det = Detector(build_model(cfg.model, 3), cfg, CategoryMap([1, 2, 3], ["a", "b", "c"]))
        det.params = dataclasses.replace(det.params, score_thresh=0.0)
        image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
        first = det.predict(image)
        assert len(first.boxes) > 0, "no detections: NMS was not exercised"
        loaded = [m for m in ("torchvision", "timm", "torch._dynamo") if m in sys.modules]
        assert not loaded, loaded
        import torchvision
        again = det.predict(image)
        assert np.array_equal(first.boxes, again.boxes)
        print("ok")
    """)
    root = Path(__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
