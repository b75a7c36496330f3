"""The one place where a `Config` becomes modules: backbone, FPN, heads, anchors, matcher.

Heads that are not in the package join through ``extra_heads``: callables that take the
`HeadContext` (what a head needs to know of the network it sits on) and return the head, whose
``name`` is its key (in ``train.heads``, the losses, the metrics and the detections' fields).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from detect.anchors import AnchorGenerator
from detect.box_coder import BoxCoder
from detect.config import Config, ConfigError, HeadsConfig, ModelConfig
from detect.config_data import keypoint_sigmas, model_keypoints, model_masks
from detect.data.annotations import CategoryMap, KeypointMeta
from detect.heads import BoxHead, ClassificationHead, Head, KeypointHead, Tower
from detect.heads.keypoint_field import joint_groups
from detect.heads.keypoint_side import CropHandedness
from detect.heads.masks import MaskHead, Prototypes
from detect.matching import ATSSMatcher, IoUMatcher
from detect.models.backbone import build_backbone, efficientnet_lite0_weights_path
from detect.models.detector import FPN_INPUTS, MultiHeadDetector
from detect.models.fpn import FPN

PACKAGE_WEIGHTS = "package"  # model.backbone.weights: use the weights an installed package ships
CROP_LEVEL = 2  # the backbone map the keypoint head's crop classifier reads: C4
# names a head cannot take: the exported graph's outputs besides the heads' fields
RESERVED_NAMES = ("boxes", "scores", "labels", "num_detections")


@dataclass(frozen=True)
class HeadContext:
    """What a head's builder knows of the network: FPN channels and levels, anchors per
    location, classes, each backbone level's channels and stride, and a tower maker with the
    config's shared tower settings (``tower(depth, channels)``; None for depth 0)."""

    channels: int
    num_levels: int
    num_anchors: int
    num_classes: int
    backbone_channels: tuple[int, ...]
    backbone_strides: tuple[int, ...]
    norm: str
    tower_depth: int

    def tower(self, depth: int | None = None, channels: int | None = None) -> Tower | None:
        depth = self.tower_depth if depth is None else depth
        if depth == 0:
            return None
        return Tower(channels or self.channels, depth, self.norm, self.num_levels, self.channels)


HeadFactory = Callable[[HeadContext], Head]


def build_model(cfg: ModelConfig, num_classes: int, num_keypoints: int = 0,
                keypoint_classes: Sequence[bool] | None = None,
                flip_pairs: Sequence[tuple[int, int]] = (),
                extra_heads: Sequence[HeadFactory] = (),
                mask_classes: Sequence[bool] | None = None) -> MultiHeadDetector:
    """Wire the config to constructors. ``num_keypoints`` 0 builds no keypoint head;
    ``keypoint_classes`` [C]: which classes' detections carry keypoints (default: all);
    ``flip_pairs``: left/right keypoints (handedness, offset fields); ``extra_heads``: heads
    of the caller's (module docstring); ``mask_classes`` [C]: a mask head serving the classes
    marked True (None: no mask head)."""
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
    neck = FPN(list(backbone.out_channels[FPN_INPUTS]), out_channels=n.channels, extra_levels=n.extra_levels,
               extra_from=n.extra_from, depthwise=n.depthwise)
    strides = [8 * 2 ** i for i in range(3 + n.extra_levels)]
    a = cfg.anchors
    anchors = AnchorGenerator(strides, a.sizes, a.ratios, a.scales, a.offset, a.round_to_pixels)
    ctx = HeadContext(n.channels, 3 + n.extra_levels, anchors.num_anchors_per_location,
                      num_classes, tuple(backbone.out_channels), tuple(backbone.strides),
                      cfg.heads.norm, cfg.heads.tower_depth)
    heads: dict[str, Head] = {"cls": _classification_head(cfg.heads, ctx),
                              "box": _box_head(cfg.heads, ctx)}
    if num_keypoints:
        heads["keypoints"] = _keypoint_head(cfg.heads, ctx, num_keypoints, tuple(flip_pairs))
        if keypoint_classes is not None:
            heads["keypoints"].set_classes(torch.tensor(list(keypoint_classes), dtype=torch.bool))
    if mask_classes is not None:
        heads["masks"] = _mask_head(cfg.heads, ctx)
        heads["masks"].set_classes(torch.tensor(list(mask_classes), dtype=torch.bool))
    for make in extra_heads:
        head = make(ctx)
        if not head.name or head.name in heads or head.name in RESERVED_NAMES:
            raise ValueError(f"a head given to build_model needs a name of its own, not "
                             f"{head.name!r} (taken: {', '.join([*heads, *RESERVED_NAMES])})")
        heads[head.name] = head
    mean = tuple(255.0 * v for v in backbone.pixel_mean)  # inputs are 0-255
    std = tuple(255.0 * v for v in backbone.pixel_std)
    return MultiHeadDetector(backbone, neck, heads, anchors, _build_matcher(cfg), mean, std,
                             channels_last=cfg.channels_last)


def build_for_data(cfg: Config, categories: CategoryMap, keypoints: KeypointMeta | None,
                   extra_heads: Sequence[HeadFactory] = ()) -> MultiHeadDetector:
    """`build_model` for a config whose keypoint settings are resolved from the data
    (`detect.config.resolve_keypoints`), its ``categories`` and keypoint metadata: the keypoint
    head when the config trains it, serving the categories that have keypoints, with the data's
    left/right pairs. Every head in ``train.heads`` must be built, or a ValueError names it."""
    k = model_keypoints(cfg)
    kmeta = keypoints if k else None
    if k and (kmeta is None or kmeta.num_keypoints != k):
        raise ValueError(f"the config has {k} keypoints but the keypoint metadata names "
                         f"{0 if kmeta is None else kmeta.num_keypoints}")
    model = build_model(cfg.model, categories.num_classes, k,
                        kmeta.label_mask(categories) if kmeta else None,
                        kmeta.flip_pairs if kmeta else (), extra_heads,
                        mask_classes(cfg, categories) if model_masks(cfg) else None)
    if missing := [h for h in cfg.train.heads if h not in model.heads]:
        raise ValueError(f"train.heads names {', '.join(missing)}: no head of this model "
                         f"({', '.join(model.heads)}; a head of one's own is given as heads=...)")
    return model


def mask_classes(cfg: Config, categories: CategoryMap) -> list[bool]:
    """[C] which classes the mask head serves: ``model.heads.masks.category_ids`` (set from the
    data, `detect.config_data.resolve_masks`; () every class)."""
    ids = cfg.model.heads.masks.category_ids
    return [not ids or i in ids for i in categories.ids]


def _mask_head(h: HeadsConfig, ctx: HeadContext) -> MaskHead:
    m = h.masks
    protos = Prototypes(ctx.channels, m.proto_channels, m.num_prototypes, m.stride,
                        ctx.backbone_channels[0])
    return MaskHead(ctx.channels, ctx.num_anchors, ctx.tower(m.tower_depth), protos,
                    m.num_prototypes, m.stride, m.dice_weight)


def _build_matcher(cfg: ModelConfig) -> IoUMatcher | ATSSMatcher:
    m = cfg.matcher
    match m.kind:
        case "iou":
            return IoUMatcher(m.fg_iou, m.bg_iou, m.allow_low_quality, ignore_ioa=m.ignore_ioa)
        case "atss":
            return ATSSMatcher(topk=m.topk, ignore_ioa=m.ignore_ioa)


def _classification_head(h: HeadsConfig, ctx: HeadContext) -> ClassificationHead:
    c = h.cls
    return ClassificationHead(ctx.channels, ctx.num_anchors, ctx.num_classes,
                              ctx.tower(c.tower_depth), c.prior_prob, c.focal_alpha, c.focal_gamma)


def _box_head(h: HeadsConfig, ctx: HeadContext) -> BoxHead:
    return BoxHead(ctx.channels, ctx.num_anchors, ctx.tower(h.box.tower_depth),
                   BoxCoder(h.box.weights), h.box.loss)


def _keypoint_head(h: HeadsConfig, ctx: HeadContext, num_keypoints: int,
                   flip_pairs: tuple[tuple[int, int], ...]) -> KeypointHead:
    kp = h.keypoints
    fits = kp.num_keypoints in (None, num_keypoints)  # None: K from the data
    sigmas = keypoint_sigmas(replace(kp, num_keypoints=num_keypoints)) if fits else ()
    if len(sigmas) != num_keypoints:
        raise ValueError(f"the dataset has {num_keypoints} keypoints but model.heads.keypoints has "
                         f"num_keypoints={kp.num_keypoints}: set model.heads.keypoints."
                         "num_keypoints and model.heads.keypoints.sigmas to match")
    if kp.field and ctx.num_anchors != 1:
        raise ConfigError(f"model.heads.keypoints.field needs one anchor per location "
                          f"(model.anchors.ratios and scales of one value each), not "
                          f"{ctx.num_anchors}")
    pairs = flip_pairs if kp.handedness != "none" else ()
    # with handedness, pairs are refined in image-left, image-right order: a field per keypoint;
    # without, a pair's two keypoints (either may be the image-left one) share a field
    fields = (joint_groups(num_keypoints, () if pairs else flip_pairs) if kp.field else None)
    tower = ctx.tower(kp.tower_depth, kp.tower_channels)  # settings: config checks
    crop = (CropHandedness(ctx.backbone_channels[CROP_LEVEL], ctx.backbone_strides[CROP_LEVEL],
                           lr_scale=kp.crop_lr) if kp.handedness == "crop" and pairs else None)
    return KeypointHead(ctx.channels if tower is None else tower.channels, ctx.num_anchors,
                        num_keypoints, tower, BoxCoder(h.box.weights), sigmas,
                        l1_weight=kp.l1_weight, handedness_pairs=pairs, side_weight=kp.side_weight,
                        field_groups=fields, field_weight=kp.field_weight, side_crop=crop,
                        crop_level=CROP_LEVEL)
