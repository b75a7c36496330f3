"""The frozen inference graph gives the eager model's outputs and detections."""
import numpy as np
import pytest
import torch

from detect import Detector
from detect.models.frozen import FrozenForward

TINY = ["model.backbone.name=resnet18", "model.backbone.weights=null", "model.neck.channels=32",
        "model.heads.tower_depth=1", "model.heads.norm=gn", "data.image_size=128"]


def test_frozen_forward_equals_eager_per_shape():
    torch.manual_seed(0)
    det = Detector.from_config("configs/atss_r50_fpn_coco_keypoints.yaml", TINY,
                               categories=["a", "b", "c"])
    frozen = FrozenForward(det.model)
    for shape in [(1, 3, 128, 128), (2, 3, 96, 128), (1, 3, 128, 128)]:
        x = torch.randint(0, 255, shape, dtype=torch.uint8)
        with torch.inference_mode():
            want = det.model(x)
        got = frozen(x)
        assert got.feature_sizes == want.feature_sizes
        assert list(got.preds) == list(want.preds) == ["cls", "box", "keypoints"]
        for k in want.preds:
            torch.testing.assert_close(got.preds[k], want.preds[k], atol=1e-4, rtol=1e-4)
    assert len(frozen.graphs) == 2  # one graph per input shape, reused
    assert frozen.kind == "optimize_for_inference"  # what ResNets take


def test_both_kinds_of_graph_equal_eager():
    torch.manual_seed(0)
    det = Detector.from_config("configs/light_lite0_coco.yaml", TINY[1:] + ["model.backbone.weights=null"],
                               categories=["a", "b"])
    x = torch.randint(0, 255, (2, 3, 128, 128), dtype=torch.uint8)
    frozen = FrozenForward(det.model)
    assert frozen.kind == "freeze"  # what EfficientNet-Lite0 takes
    with torch.inference_mode():
        want = det.model(x)
        for kind in ("freeze", "optimize_for_inference"):
            got = frozen.graph(x, kind)(x)
            for a, b in zip(got, want.preds.values(), strict=True):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


CROP = ["model.heads.keypoints.handedness=crop",
        "data.flip_pairs=[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]"]


@pytest.mark.parametrize("handedness", [[], CROP], ids=["default", "crop"])
def test_detector_optimize_gives_the_same_predictions(handedness):
    """The frozen graph's outputs decode as the eager model's; with the crop handedness
    classifier, the graph returns the backbone map it reads too."""
    torch.manual_seed(0)
    det = Detector.from_config("configs/atss_r50_fpn_coco_keypoints.yaml", TINY + handedness,
                               categories=["a", "b", "c"])
    if handedness:
        with torch.no_grad():  # crop logits of both signs
            det.model.heads["keypoints"].side_crop.classify.weight *= 100
    with torch.no_grad():
        det.model.heads["cls"].predictor.bias.zero_()  # scores ~0.5: many detections to compare
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    eager = det.predict(image)
    optimized = det.optimize().predict(image)
    assert len(eager.boxes) > 10
    np.testing.assert_allclose(optimized.boxes, eager.boxes, atol=1e-2)
    np.testing.assert_allclose(optimized.scores, eager.scores, atol=1e-4)
    np.testing.assert_array_equal(optimized.labels, eager.labels)
    np.testing.assert_allclose(optimized.fields["keypoints"].values, eager.fields["keypoints"].values, atol=1e-2)
