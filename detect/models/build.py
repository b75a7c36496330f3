"""The one place where a `Config` becomes modules: backbone, FPN, heads, anchors, matcher."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from detect.anchors import AnchorGenerator
from detect.box_coder import BoxCoder
from detect.config import ConfigError, ModelConfig, keypoint_sigmas
from detect.heads import BoxHead, ClassificationHead, KeypointHead, Tower
from detect.heads.keypoint_heatmap import joint_groups
from detect.heads.keypoint_side import CropHandedness
from detect.matching import ATSSMatcher, IoUMatcher
from detect.models.backbone import build_backbone, efficientnet_lite0_weights_path
from detect.models.detector import MultiHeadDetector
from detect.models.fpn import FPN

PACKAGE_WEIGHTS = "package"  # model.backbone.weights: use the weights an installed package ships


def build_model(cfg: ModelConfig, num_classes: int, num_keypoints: int = 0,
                keypoint_classes: Sequence[bool] | None = None,
                flip_pairs: Sequence[tuple[int, int]] = ()) -> MultiHeadDetector:
    """Wire the config to constructors. ``num_keypoints`` 0 builds no keypoint head;
    ``keypoint_classes`` [C]: which classes' detections carry keypoints (default: all);
    ``flip_pairs``: left/right keypoints, which share a heatmap (``keypoint_heatmaps``)."""
    b = cfg.backbone
    weights = b.weights
    if weights == PACKAGE_WEIGHTS:
        if b.name != "efficientnet_lite0":
            raise ValueError(f"model.backbone.weights: '{PACKAGE_WEIGHTS}' is only available for "
                             f"efficientnet_lite0, not {b.name}")
        weights = efficientnet_lite0_weights_path()
    backbone = build_backbone(b.name, weights=weights, freeze_bn=b.freeze_bn,
                              frozen_stages=b.frozen_stages)
    n = cfg.neck
    neck = FPN(list(backbone.out_channels), out_channels=n.channels, extra_levels=n.extra_levels,
               extra_from=n.extra_from, depthwise=n.depthwise)
    strides = [8 * 2 ** i for i in range(3 + n.extra_levels)]
    a = cfg.anchors
    anchors = AnchorGenerator(strides, a.sizes, a.ratios, a.scales, a.offset, a.round_to_pixels)
    heads = _build_heads(cfg, n.channels, anchors.num_anchors_per_location, num_classes,
                         num_keypoints, tuple(flip_pairs),
                         (backbone.out_channels[1], backbone.strides[1]))
    shared = None
    h = cfg.heads
    if h.share_tower:
        shared = Tower(n.channels, h.tower_depth, h.norm, h.depthwise, 3 + n.extra_levels)
    mean = tuple(255.0 * v for v in backbone.pixel_mean)  # inputs are 0-255
    std = tuple(255.0 * v for v in backbone.pixel_std)
    if keypoint_classes is not None and "keypoints" in heads:
        heads["keypoints"].set_classes(torch.tensor(list(keypoint_classes), dtype=torch.bool))
    return MultiHeadDetector(backbone, neck, heads, anchors, _build_matcher(cfg), mean, std, shared,
                             channels_last=cfg.channels_last)


def _build_matcher(cfg: ModelConfig) -> IoUMatcher | ATSSMatcher:
    m = cfg.matcher
    match m.kind:
        case "iou":
            return IoUMatcher(m.fg_iou, m.bg_iou, m.allow_low_quality, ignore_ioa=m.ignore_ioa)
        case "atss":
            return ATSSMatcher(topk=m.topk, ignore_ioa=m.ignore_ioa)


def _build_heads(cfg: ModelConfig, channels: int, per_loc: int, num_classes: int,
                 num_keypoints: int, flip_pairs: tuple[tuple[int, int], ...],
                 crop_level: tuple[int, int]) -> dict:
    """The heads; ``crop_level``: (channels, stride) of the backbone map (C4) a crop handedness
    classifier reads."""
    h = cfg.heads

    def tower(depth: int = h.tower_depth, width: int = channels) -> Tower | None:
        if h.share_tower or depth == 0:
            return None
        return Tower(width, depth, h.norm, h.depthwise, cfg.neck.extra_levels + 3, channels)

    coder = BoxCoder(h.box_weights)
    heads = {
        "cls": ClassificationHead(channels, per_loc, num_classes, tower(), h.prior_prob,
                                  h.focal_alpha, h.focal_gamma),
        "box": BoxHead(channels, per_loc, tower(), coder, h.box_loss),
    }
    if num_keypoints:
        fits = h.num_keypoints in (None, num_keypoints)  # None: K from the data
        sigmas = keypoint_sigmas(replace(h, num_keypoints=num_keypoints)) if fits else ()
        if len(sigmas) != num_keypoints:
            raise ValueError(f"the dataset has {num_keypoints} keypoints but model.heads has "
                             f"num_keypoints={h.num_keypoints}: set model.heads.num_keypoints and "
                             "model.heads.keypoint_sigmas to match")
        for option in ("keypoint_heatmaps", "keypoint_field"):
            if getattr(h, option) and per_loc != 1:
                raise ConfigError(f"model.heads.{option} needs one anchor per location "
                                  f"(model.anchors.ratios and scales of one value each), not "
                                  f"{per_loc}")
        groups = joint_groups(num_keypoints, flip_pairs) if h.keypoint_heatmaps else None
        # with handedness, pairs are refined in image-left, image-right order: a field per keypoint;
        # without, a pair's two keypoints (either may be the image-left one) share a field
        fields = (joint_groups(num_keypoints, () if h.keypoint_handedness else flip_pairs)
                  if h.keypoint_field else None)
        pairs = flip_pairs if h.keypoint_handedness else ()
        depth = h.tower_depth if h.keypoint_tower_depth is None else h.keypoint_tower_depth
        kpt_tower = tower(depth, h.keypoint_tower_channels or channels)  # settings: config checks
        width = channels if kpt_tower is None else kpt_tower.channels
        side_channels = channels if h.keypoint_side_tower == "cls" and pairs else None
        side_tower = (tower(depth, width) if h.keypoint_side_tower == "own" and pairs else None)
        side_crop = (CropHandedness(*crop_level, lr_scale=h.keypoint_crop_lr)
                     if h.keypoint_side_tower == "crop" and pairs else None)
        heads["keypoints"] = KeypointHead(width, per_loc, num_keypoints, kpt_tower, coder,
                                          sigmas,
                                          l1_weight=h.keypoint_l1_weight, heatmap_groups=groups,
                                          handedness_pairs=pairs,
                                          side_weight=h.keypoint_side_weight,
                                          field_groups=fields,
                                          field_weight=h.keypoint_field_weight,
                                          side_channels=side_channels,
                                          side_grad=h.keypoint_side_grad,
                                          side_tower=side_tower, side_crop=side_crop)
    return heads
