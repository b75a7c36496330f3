"""The models benchmarks compare: ours from a config, torchvision's, and a shared test image.

Random weights make "how many candidates reach NMS" arbitrary, and that count drives the cost of
post-processing. Every suite therefore applies one policy to both sides (`ScorePolicy`):

* ``dense``: classification biases set to 0, so every score is about 0.5 and every level's top
  1000 (anchor, class) pairs pass the 0.05 threshold in both models: the most post-processing a
  real image can cause.
* ``prior``: the published initialisation (bias = -log(99), score about 0.01): almost nothing
  passes the threshold, post-processing is nearly free.

The number of pre-NMS candidates of each side is counted in an untimed call and reported.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import RetinaNet, retinanet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import detect.nms
from detect.api import Detector
from detect.benchmark.common import shared_data_root

ScorePolicy = Literal["dense", "prior"]
NUM_CLASSES = 80


def source_image(size: int = 800) -> np.ndarray:
    """A square BGR uint8 image: the first coco-mini val image resized (noise if absent).

    Square, so that our letterbox and torchvision's resize both run the network at
    ``image_size x image_size`` exactly.
    """
    folder = shared_data_root() / "coco-mini" / "val2017"
    files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    image = cv2.imread(str(files[0])) if files else None
    if image is None:
        return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def ours(config: str | Path, image_size: int, num_keypoints: int | None = None,
         policy: ScorePolicy = "dense", device: str = "cpu",
         overrides: tuple[str, ...] = ()) -> Detector:
    """Our detector from a config with random heads (backbone weights as the config says).

    ``num_keypoints`` None keeps the config's; 0 builds no keypoint head.
    """
    extra = [f"data.image_size={image_size}"]
    if num_keypoints is not None:
        extra.append(f"model.heads.keypoints.num_keypoints={num_keypoints}")
    names = [f"class{i}" for i in range(NUM_CLASSES)]
    det = Detector.from_config(config, [*extra, *overrides], categories=names, device=device)
    if policy == "dense":
        with torch.no_grad():
            det.model.heads["cls"].predictor.bias.zero_()
    return det


def torchvision_retinanet(image_size: int, frozen_bn: bool, policy: ScorePolicy = "dense",
                          num_classes: int = NUM_CLASSES) -> RetinaNet:
    """torchvision RetinaNet R50-FPN running at ``image_size`` (square inputs), random weights.

    ``frozen_bn=False`` is ``retinanet_resnet50_fpn(weights=None, weights_backbone=None)``:
    without backbone weights torchvision switches to trainable ``nn.BatchNorm2d`` and trains all
    five stages. ``frozen_bn=True`` builds the same network as torchvision does when given
    ImageNet weights (``FrozenBatchNorm2d``, stem + layer1 frozen), as our config does.
    """
    kwargs = dict(min_size=image_size, max_size=image_size, score_thresh=0.05,
                  detections_per_img=100, topk_candidates=1000, nms_thresh=0.5)
    if frozen_bn:
        body = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4],
                                         extra_blocks=LastLevelP6P7(256, 256))
        model = RetinaNet(backbone, num_classes, **kwargs)
    else:
        model = retinanet.retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                                 num_classes=num_classes, **kwargs)
    if policy == "dense":
        with torch.no_grad():
            model.head.classification_head.cls_logits.bias.zero_()
    return model


def torchvision_predict(model: nn.Module, image_bgr: np.ndarray, device: str = "cpu") -> dict:
    """torchvision's end-to-end path from a BGR uint8 image: to tensor, model, numpy."""
    with torch.inference_mode():
        rgb = torch.from_numpy(np.ascontiguousarray(image_bgr[..., ::-1])).to(device)
        out = model([rgb.permute(2, 0, 1).float() / 255])[0]
        return {k: v.cpu().numpy() for k, v in out.items()}


@contextlib.contextmanager
def count_nms_inputs() -> Iterator[dict[str, list[int]]]:
    """Record how many boxes enter NMS, per call, in our post-processing and torchvision's."""
    counts: dict[str, list[int]] = {"ours": [], "peer": []}
    ours_nms, tv_ops = detect.nms.nms_keep, torchvision.ops.boxes
    tv_batched = tv_ops.batched_nms

    def ours_counting(boxes, *args, **kwargs):
        counts["ours"].append(int(boxes.shape[0]))
        return ours_nms(boxes, *args, **kwargs)

    def tv_counting(boxes, *args, **kwargs):
        counts["peer"].append(int(boxes.shape[0]))
        return tv_batched(boxes, *args, **kwargs)

    detect.nms.nms_keep, tv_ops.batched_nms = ours_counting, tv_counting
    try:
        yield counts
    finally:
        detect.nms.nms_keep, tv_ops.batched_nms = ours_nms, tv_batched
