"""Predictions letterbox to the smallest canvas of multiples of ``data.size_divisor``."""
import numpy as np
import torch

from detect import Detector
from detect.data.transforms import PAD_VALUE, letterbox_image, stack_padded

TINY = ["model.backbone.name=resnet18", "model.backbone.weights=null", "model.neck.channels=32",
        "model.heads.tower_depth=1", "model.heads.norm=gn", "data.image_size=128",
        "data.size_divisor=32"]


def test_letterbox_to_multiples_of_the_divisor():
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    square = letterbox_image(image, 320)
    rect = letterbox_image(image, 320, divisor=64)
    assert square.image.shape == (320, 320, 3)
    assert rect.image.shape == (256, 320, 3)  # 240 rows of image, 16 of padding
    assert rect.scale == square.scale == 0.5 and rect.offset == square.offset
    np.testing.assert_array_equal(rect.image[:240], square.image[:240])
    assert (rect.image[240:] == PAD_VALUE).all()
    tall = letterbox_image(image[:, :300], 320, divisor=64)  # 480 x 300 -> 320 x 200
    assert tall.image.shape == (320, 256, 3)
    batch = stack_padded([rect.image, tall.image])
    assert batch.shape == (2, 320, 320, 3)
    np.testing.assert_array_equal(batch[1, :, :256], tall.image)
    assert (batch[0, 256:] == PAD_VALUE).all() and (batch[1, :, 256:] == PAD_VALUE).all()


def test_predict_runs_the_network_on_the_smallest_canvas():
    torch.manual_seed(0)
    det = Detector.from_config("configs/atss_r50_fpn_coco_keypoints.yaml", TINY,
                               categories=["a", "b"])
    with torch.no_grad():
        det.model.heads["cls"].predictor.bias.zero_()  # scores ~0.5: detections to map back
    seen = []
    network = det._network
    det._network = lambda x: seen.append(tuple(x.shape)) or network(x)
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)  # -> 96 x 128
    tall = rng.integers(0, 255, (120, 60, 3), dtype=np.uint8)  # -> 128 x 64
    rect = det.predict(wide)
    det.predict([wide, tall])
    det.square_input = True
    square = det.predict(wide)
    assert seen == [(1, 3, 96, 128), (2, 3, 128, 128), (1, 3, 128, 128)]
    for p in (rect, square):  # in original pixels either way
        assert len(p.boxes) > 0
        assert (p.boxes[:, 0::2] <= 120).all() and (p.boxes[:, 1::2] <= 90).all()
