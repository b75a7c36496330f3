"""Experiment configuration: frozen dataclasses loaded from YAML.

A config file may name a base with ``_base_: other.yaml`` (a path relative to the file); the file's
keys override the base's, recursively. Command-line overrides are dotted keys whose values are
parsed as YAML: ``train.epochs=3 data.train.annotations=[a.json,b.json]``.

Every key is checked against the dataclasses below: an unknown key or a value of the wrong type is a
`ConfigError` naming the key and the file (or "command line") it came from.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from detect.config_legacy import legacy_hint, translate_legacy
from detect.config_parse import (ConfigError, build, check_keys, merge, parse_override,
                                 read_layers, where)
from detect.io import atomic_write_text

BUILT_IN_HEADS = ("cls", "box", "keypoints", "masks")


@dataclass(frozen=True)
class SplitConfig:
    images: str = ""
    annotations: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataConfig:
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    image_size: int = 640  # longest side after resizing; images are letterboxed to a square
    size_divisor: int = 128  # padded batch sides are multiples of this (the largest stride)
    hflip: float = 0.5  # probability of a horizontal flip (train)
    scale_jitter: tuple[float, float] = (0.75, 1.25)  # random rescale range (train)
    color_jitter: float = 0.2  # brightness/contrast/saturation strength, 0 = off (train)
    flip_pairs: tuple[tuple[int, int], ...] | None = None  # default: from left_*/right_* names
    keep_empty: bool = True  # keep images without annotations as negatives
    workers: int = 2
    max_pixels: int = 100_000_000  # refuse bigger images, checked from the header
    on_bad_image: Literal["skip", "error"] = "skip"  # a corrupt image met during training
    check_images: bool = True  # read every image header before training (sizes, corruption)


@dataclass(frozen=True)
class BackboneConfig:
    name: Literal["resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "efficientnet_lite0"] = (
        "resnet50"
    )
    weights: str | None = None  # local state_dict file
    freeze_bn: bool = True
    frozen_stages: int = 1


@dataclass(frozen=True)
class NeckConfig:
    channels: int = 256
    extra_levels: int = 2  # P6, P7
    extra_from: Literal["c5", "p5"] = "p5"
    depthwise: bool = False


@dataclass(frozen=True)
class AnchorConfig:
    sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)  # one per level
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    offset: float = 0.5  # centres at (x + offset) * stride; torchvision's anchors: 0
    round_to_pixels: bool = False  # torchvision's whole-pixel sizes and corners (detect/anchors.py)


@dataclass(frozen=True)
class MatcherConfig:
    kind: Literal["iou", "atss"] = "iou"
    fg_iou: float = 0.5
    bg_iou: float = 0.4
    allow_low_quality: bool = True
    topk: int = 9
    ignore_ioa: float = 0.5


@dataclass(frozen=True)
class ClassificationHeadConfig:
    tower_depth: int | None = None  # None: model.heads.tower_depth
    prior_prob: float = 0.01
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass(frozen=True)
class BoxHeadConfig:
    tower_depth: int | None = None  # None: model.heads.tower_depth
    loss: Literal["giou", "smooth_l1"] = "giou"
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # box coder weights


@dataclass(frozen=True)
class KeypointHeadConfig:
    # K; None: from the training annotations' categories (`resolve_keypoints`); 0: no keypoint head
    num_keypoints: int | None = None
    # per-keypoint OKS sigmas; None: COCO's when the keypoints are COCO's (by name, or K == 17)
    sigmas: tuple[float, ...] | None = None
    tower_depth: int | None = None  # None: model.heads.tower_depth
    tower_channels: int | None = None  # None: the FPN's channels
    # left/right pairs regressed as (image-left, image-right) plus which side is the person's
    # left: a logit per anchor beside the keypoints (anchor) or per detected person from its crop
    # of the backbone's C4 map, read detached (crop); needs the data's flip pairs
    # (detect/heads/keypoints.py, docs/KEYPOINTS.md)
    handedness: Literal["none", "anchor", "crop"] = "none"
    side_weight: float = 2.0  # weight of the handedness term
    crop_lr: float = 5.0  # with handedness crop: the crop classifier's lr, times train.lr
    # a short-range offset field on the finest level that walks regressed keypoints onto their
    # joints (detect/heads/keypoint_field.py); needs one anchor per location
    field: bool = False
    field_weight: float = 1.0  # weight of its L1 term (cells) in the keypoint loss
    l1_weight: float = 1.0  # weight of the L1 term beside 1 - OKS in the keypoint loss


@dataclass(frozen=True)
class MaskHeadConfig:
    # None: a mask head when the training annotations have segmentations (`resolve_masks`);
    # false: none
    enabled: bool | None = None
    # original ids of the categories whose detections carry masks: set from the training data
    # (the categories with at least one mask); () every category
    category_ids: tuple[int, ...] = ()
    num_prototypes: int = 32  # masks are combinations of this many prototype maps
    proto_channels: int = 32  # width of the prototype network on P3
    stride: int = 4  # input pixels per mask pixel: 4 (P3 upsampled once) or 8 (P3)
    tower_depth: int | None = None  # the coefficients' tower; None: model.heads.tower_depth
    dice_weight: float = 1.0  # the dice term beside the BCE in the mask loss


@dataclass(frozen=True)
class HeadsConfig:
    """Shared settings of the heads' towers, then one section per head."""

    tower_depth: int = 4  # every head's tower depth, unless its section sets one
    norm: Literal["none", "gn", "bn"] = "none"
    cls: ClassificationHeadConfig = field(default_factory=ClassificationHeadConfig)
    box: BoxHeadConfig = field(default_factory=BoxHeadConfig)
    keypoints: KeypointHeadConfig = field(default_factory=KeypointHeadConfig)
    masks: MaskHeadConfig = field(default_factory=MaskHeadConfig)


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int = 0  # 0 = from the training annotations
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    # NHWC memory: 1.29x faster training for the light (depthwise) backbone on the CPU, 1.25x
    # slower for R50 RetinaNet training (docs/BENCHMARKS.md, "Speed levers")
    channels_last: bool = True


@dataclass(frozen=True)
class PostprocessConfig:
    score_thresh: float = 0.05
    topk_per_level: int = 1000
    nms_iou: float = 0.5
    max_detections: int = 100
    class_agnostic: bool = False
    soft_nms_sigma: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    # trained and evaluated: of the package's heads, and any given to the trainer in Python
    heads: tuple[str, ...] = BUILT_IN_HEADS
    epochs: int = 12
    max_steps: int = 0  # > 0: stop after this many optimiser steps (overrides epochs)
    batch_size: int = 8
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05  # cosine schedule ends at lr * min_lr_ratio
    grad_clip: float = 10.0  # max gradient norm, 0 = off
    accumulate: int = 1
    amp: Literal["off", "bf16", "fp16"] = "off"  # CUDA only
    # on a CPU with native bfloat16 (AVX512-BF16, AMX), the backbone's frozen stages run their
    # forward in bfloat16 while training (`Backbone.stage`); evaluation and inference stay float32
    frozen_bf16: bool = True
    ema: bool = True
    ema_decay: float = 0.999
    seed: int = 0
    deterministic: bool = False
    loss_weights: dict[str, float] = field(default_factory=dict)  # per head, default 1
    # how head losses are combined (detect/balancing.py); loss_weights are the base weights
    balancing: Literal["fixed", "uncertainty", "loss_norm", "gradnorm", "pcgrad"] = "fixed"
    balancing_ema: float = 0.99  # loss_norm: EMA momentum of each head's loss magnitude
    # loss terms balanced as groups of their own (named by the term) instead of inside their
    # head's total, e.g. [loss_kpt_side] (docs/KEYPOINTS.md); loss_weights may name them too
    balance_apart: tuple[str, ...] = ()
    gradnorm_alpha: float = 1.5
    gradnorm_lr: float = 0.025
    grad_diagnostics_every: int = 0  # optimiser steps between gradient-conflict measurements
    freeze: tuple[str, ...] = ()  # backbone, neck and/or heads of train.heads: not trained
    log_every: int = 20  # optimiser steps between log records (and plain lines without a bar)
    # where the run's numbers go besides RUN/metrics.jsonl (detect/engine/tracking.py): TensorBoard
    # (RUN/tb, when installed) and/or MLflow (a local store RUN/mlflow.db unless tracking_uri)
    tracking: tuple[Literal["tensorboard", "mlflow"], ...] = ("tensorboard",)
    tracking_uri: str | None = None  # an MLflow tracking URI (a server, sqlite:///..., databricks)
    eval_every: int = 1  # epochs between evaluations, 0 = only at the end
    best_metric: str = "bbox.AP"
    eval_backend: Literal["faster", "pycocotools"] = "faster"


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


COCO_PERSON_SIGMAS_LEN = 17


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML file (following ``_base_``), apply dotted overrides, check and build `Config`."""
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}
    layers = [(str(f), layer) for f, layer in read_layers(Path(path))] if path is not None else []
    layers += [("command line", parse_override(item)) for item in overrides]
    for file, layer in layers:
        legacy_hint(layer, file)
        check_keys(layer, Config, file)
        merge(raw, layer, origin, file)
    cfg = build(Config, raw, "", origin)
    _validate(cfg, origin)
    return cfg


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a `Config` from a plain nested dict (e.g. one stored in a checkpoint, whose keys may
    be those of an older layout: `detect.config_legacy.translate_legacy`)."""
    raw = translate_legacy(raw, source)
    check_keys(raw, Config, source)
    origin = {"": source}  # every error names the source
    cfg = build(Config, raw, "", origin)
    _validate(cfg, origin)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict (lists for tuples) for YAML/JSON output."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _validate(cfg: Config, origin: dict[str, str]) -> None:
    """Cross-field checks that types alone cannot express."""
    n_levels = 3 + cfg.model.neck.extra_levels
    if len(cfg.model.anchors.sizes) != n_levels:
        raise ConfigError(
            f"{where('model.anchors.sizes', origin)}: 'model.anchors.sizes' needs one size per "
            f"FPN level ({n_levels}), got {len(cfg.model.anchors.sizes)}")
    h = cfg.model.heads
    depths = [h.tower_depth, h.cls.tower_depth, h.box.tower_depth, h.keypoints.tower_depth,
              h.masks.tower_depth]
    if any(d is not None and d < 0 for d in depths):
        raise ConfigError(f"{where('model.heads', origin)}: the model.heads tower depths must be "
                          ">= 0")
    _validate_keypoints(cfg, origin)
    _validate_masks(cfg, origin)
    _validate_balancing(cfg, origin)
    t = cfg.train
    for part in t.freeze:
        if part not in ("backbone", "neck", *BUILT_IN_HEADS, *t.heads):
            raise ConfigError(f"{where('train.freeze', origin)}: 'train.freeze' has unknown part "
                              f"'{part}' (backbone, neck, {', '.join(t.heads)})")
    if len(set(t.heads)) != len(t.heads):
        raise ConfigError(f"{where('train.heads', origin)}: train.heads names a head twice")
    if t.accumulate < 1 or t.batch_size < 1:
        raise ConfigError(f"{where('train', origin)}: train.batch_size and train.accumulate "
                          "must be >= 1")


def _validate_keypoints(cfg: Config, origin: dict[str, str]) -> None:
    kp = cfg.model.heads.keypoints
    k = kp.num_keypoints
    key = "model.heads.keypoints"
    if k is not None and k < 0:
        raise ConfigError(f"{where(key + '.num_keypoints', origin)}: {key}.num_keypoints must be "
                          f">= 0 or null, got {k}")
    if k and kp.sigmas is not None and len(kp.sigmas) != k:
        raise ConfigError(f"{where(key + '.sigmas', origin)}: '{key}.sigmas' has "
                          f"{len(kp.sigmas)} values but {key}.num_keypoints is {k}")
    if k and kp.sigmas is None and k != COCO_PERSON_SIGMAS_LEN:
        raise ConfigError(f"{where(key + '.num_keypoints', origin)}: {key}.num_keypoints is {k}: "
                          f"set {key}.sigmas ({k} values); COCO's sigmas apply only to 17")
    depth = cfg.model.heads.tower_depth if kp.tower_depth is None else kp.tower_depth
    if kp.tower_channels is not None and (kp.tower_channels < 1 or depth == 0):
        raise ConfigError(f"{where(key + '.tower_channels', origin)}: {key}.tower_channels needs "
                          "a tower (a depth above 0) and must be >= 1, or null (the FPN's "
                          "channels)")
    if not (math.isfinite(kp.crop_lr) and kp.crop_lr > 0):
        raise ConfigError(f"{where(key + '.crop_lr', origin)}: {key}.crop_lr must be a positive "
                          "number")
    if kp.handedness == "crop" and "loss_kpt_side" in cfg.train.balance_apart:
        raise ConfigError(f"{where('train.balance_apart', origin)}: with {key}.handedness crop, "
                          "loss_kpt_side trains the crop classifier alone and is in no balancing "
                          "group: drop it from train.balance_apart")


def _validate_masks(cfg: Config, origin: dict[str, str]) -> None:
    m = cfg.model.heads.masks
    key = "model.heads.masks"
    if m.stride not in (4, 8):
        raise ConfigError(f"{where(key + '.stride', origin)}: {key}.stride must be 4 or 8, got "
                          f"{m.stride}")
    if m.num_prototypes < 1 or m.proto_channels < 1:
        raise ConfigError(f"{where(key, origin)}: {key}.num_prototypes and proto_channels must "
                          "be >= 1")


def _validate_balancing(cfg: Config, origin: dict[str, str]) -> None:
    t = cfg.train
    if len(set(t.balance_apart)) != len(t.balance_apart):
        raise ConfigError(f"{where('train.balance_apart', origin)}: a loss term is named twice")
    for term in t.balance_apart:
        if not term.startswith("loss_") or term == "loss":
            raise ConfigError(f"{where('train.balance_apart', origin)}: '{term}' is not a loss "
                              "term's name (loss_cls, loss_kpt_side, ...: the keys the heads log)")
    # the package's heads stay valid names when the data drops one (`resolve_keypoints`)
    groups = (*BUILT_IN_HEADS, *t.heads, *t.balance_apart)
    for name, value in t.loss_weights.items():
        if name not in groups:
            raise ConfigError(f"{where('train.loss_weights', origin)}: 'train.loss_weights' has "
                              f"unknown head '{name}' (heads: {', '.join(t.heads)}, and the "
                              "terms of train.balance_apart)")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where('train.loss_weights', origin)}: weight of '{name}' must "
                              f"be a finite number >= 0")
    if not 0 <= t.balancing_ema < 1 or t.gradnorm_lr <= 0 or t.grad_diagnostics_every < 0:
        raise ConfigError(f"{where('train', origin)}: train.balancing_ema must be in [0, 1), "
                          "train.gradnorm_lr > 0 and train.grad_diagnostics_every >= 0")
