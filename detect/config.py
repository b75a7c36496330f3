"""Experiment configuration: frozen dataclasses loaded from YAML.

A config file may name a base with ``_base_: other.yaml`` (a path relative to the file); the file's
keys override the base's, recursively. Command-line overrides are dotted keys whose values are
parsed as YAML: ``train.epochs=3 data.train.annotations=[a.json,b.json]``.

Every key is checked against the dataclasses below: an unknown key or a value of the wrong type is a
`ConfigError` naming the key and the file (or "command line") it came from.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from detect.io import atomic_write_text

HeadName = Literal["cls", "box", "keypoints"]


class ConfigError(ValueError):
    """A user error in a config file or override; its message is one line."""


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
class HeadsConfig:
    tower_depth: int = 4
    # the keypoint head's own tower depth; None: ``tower_depth`` (docs/KEYPOINTS.md)
    keypoint_tower_depth: int | None = None
    # the keypoint head's own tower width; None: the FPN's channels (docs/KEYPOINTS.md)
    keypoint_tower_channels: int | None = None
    norm: Literal["none", "gn", "bn"] = "none"
    share_tower: bool = False  # one tower feeds every head
    depthwise: bool = False  # depthwise-separable tower convolutions
    prior_prob: float = 0.01
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: Literal["giou", "smooth_l1", "giou+l1"] = "giou"
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    # K; None: from the training annotations' categories (`resolve_keypoints`); 0: no keypoint head
    num_keypoints: int | None = None
    # per-keypoint OKS sigmas; None: COCO's when the keypoints are COCO's (by name, or K == 17)
    keypoint_sigmas: tuple[float, ...] | None = None
    # heatmaps on the finest level that snap regressed keypoints onto their joints
    # (detect/heads/keypoint_heatmap.py); needs one anchor per location
    keypoint_heatmaps: bool = False
    # regress each left/right pair as (image-left, image-right) plus one logit per object for
    # which side is its left (detect/heads/keypoints.py); needs the data's flip pairs
    keypoint_handedness: bool = False
    # a short-range offset field on the finest level that walks regressed keypoints onto their
    # joints (detect/heads/keypoint_field.py); needs one anchor per location
    keypoint_field: bool = False
    keypoint_field_weight: float = 1.0  # weight of its L1 term (cells) in the keypoint loss
    keypoint_l1_weight: float = 1.0  # weight of the L1 term beside 1 - OKS in the keypoint loss
    keypoint_side_weight: float = 2.0  # weight of the handedness term (docs/KEYPOINTS.md)
    # the tower whose features the handedness logit reads: the keypoint head's, a second tower of
    # the keypoint head's depth and width (own), or the classification head's; with own or cls the
    # logit has a 3x3 predictor of its own (docs/KEYPOINTS.md); crop: per detected person, from its
    # crop of the backbone's C4 map, read detached (detect/heads/keypoint_side.py); without
    # handedness, no effect
    keypoint_side_tower: Literal["keypoints", "own", "cls", "crop"] = "keypoints"
    # with keypoint_side_tower crop: the crop classifier's learning rate as a multiple of train.lr
    keypoint_crop_lr: float = 5.0
    # with keypoint_side_tower cls: the handedness term's gradient into the classification tower
    # (and below) times this; 0: the tower is not trained by it, only the predictor
    keypoint_side_grad: float = 1.0


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
    heads: tuple[HeadName, ...] = ("cls", "box", "keypoints")  # trained and evaluated
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
    freeze: tuple[str, ...] = ()  # any of backbone, neck, cls, box, keypoints: not trained
    log_every: int = 20
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
    if path is not None:
        for file, layer in _read_layers(Path(path)):
            _check_keys(layer, Config, str(file))
            _merge(raw, layer, origin, str(file))
    for item in overrides:
        layer = _parse_override(item)
        _check_keys(layer, Config, "command line")
        _merge(raw, layer, origin, "command line")
    cfg = _build(Config, raw, "", origin)
    _validate(cfg, origin)
    return cfg


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Build a `Config` from a plain nested dict (e.g. one stored in a checkpoint)."""
    _check_keys(raw, Config, source)
    origin = {"": source}  # every error names the source
    cfg = _build(Config, raw, "", origin)
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


def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, mapping)] from the deepest base to `path`."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("_base_", None)
    layers: list[tuple[Path, dict[str, Any]]] = []
    if base is not None:
        layers = _read_layers(path.parent / str(base), seen + (path.resolve(),))
    return layers + [(path, data)]


def _parse_override(item: str) -> dict[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"command line: override '{item}' is not of the form key=value")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = parsed
    return out


def _merge(dst: dict[str, Any], src: dict[str, Any], origin: dict[str, str], file: str,
           prefix: str = "") -> None:
    for k, v in src.items():
        dotted = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(dst.get(k), dict) and not _is_free_dict(dotted):
            _merge(dst[k], v, origin, file, dotted + ".")
        else:
            dst[k] = v
            origin[dotted] = file


def _is_free_dict(dotted: str) -> bool:
    """Keys whose value is a free-form mapping (replaced, not merged key by key)."""
    return dotted in {"train.loss_weights"}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_keys(layer: dict[str, Any], cls: type, file: str, prefix: str = "") -> None:
    hints = _hints(cls)
    for k, v in layer.items():
        dotted = f"{prefix}{k}"
        if k not in hints:
            close = difflib.get_close_matches(str(k), list(hints), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{file}: unknown key '{dotted}'{hint}")
        sub = hints[k]
        if dataclasses.is_dataclass(sub):
            if not isinstance(v, dict):
                raise ConfigError(f"{file}: '{dotted}' must be a mapping, got {v!r}")
            _check_keys(v, sub, file, dotted + ".")


def _build(cls: type, raw: dict[str, Any], prefix: str, origin: dict[str, str]) -> Any:
    kwargs = {}
    for name, tp in _hints(cls).items():
        if name not in raw:
            continue
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], dotted + ".", origin)
        else:
            kwargs[name] = _coerce(raw[name], tp, dotted, origin)
    return cls(**kwargs)


def _where(dotted: str, origin: dict[str, str]) -> str:
    while dotted and dotted not in origin:
        dotted = dotted.rpartition(".")[0]
    return origin.get(dotted, "config")


def _coerce(value: Any, tp: Any, dotted: str, origin: dict[str, str]) -> Any:
    """Check `value` against type `tp` (converting lists to tuples, ints to floats)."""
    try:
        return _convert(value, tp)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{_where(dotted, origin)}: '{dotted}' must be {_type_name(tp)}, got {value!r}"
        ) from None


def _convert(value: Any, tp: Any) -> Any:
    o, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if o in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _convert(value, a)
            except (TypeError, ValueError):
                pass
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if o is Literal:
        if value in args:
            return value
        raise ValueError
    if o is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        if len(args) != len(value):
            raise ValueError
        return tuple(_convert(v, a) for v, a in zip(value, args))
    if o is dict:
        if not isinstance(value, dict):
            raise TypeError
        return {_convert(k, args[0]): _convert(v, args[1]) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


def _type_name(tp: Any) -> str:
    o, args = typing.get_origin(tp), typing.get_args(tp)
    if o is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if o in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if o is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if o is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp))


def _validate(cfg: Config, origin: dict[str, str]) -> None:
    """Cross-field checks that types alone cannot express."""
    heads = cfg.model.heads
    k = heads.num_keypoints
    if k is not None and k < 0:
        raise ConfigError(f"{_where('model.heads.num_keypoints', origin)}: "
                          f"model.heads.num_keypoints must be >= 0 or null, got {k}")
    if k and heads.keypoint_sigmas is not None and len(heads.keypoint_sigmas) != k:
        raise ConfigError(
            f"{_where('model.heads.keypoint_sigmas', origin)}: 'model.heads.keypoint_sigmas' "
            f"has {len(heads.keypoint_sigmas)} values but model.heads.num_keypoints is {k}")
    if k and heads.keypoint_sigmas is None and k != COCO_PERSON_SIGMAS_LEN:
        raise ConfigError(
            f"{_where('model.heads.num_keypoints', origin)}: model.heads.num_keypoints is {k}: "
            f"set model.heads.keypoint_sigmas ({k} values); COCO's sigmas apply only to 17")
    n_levels = 3 + cfg.model.neck.extra_levels
    if len(cfg.model.anchors.sizes) != n_levels:
        raise ConfigError(
            f"{_where('model.anchors.sizes', origin)}: 'model.anchors.sizes' needs one size per "
            f"FPN level ({n_levels}), got {len(cfg.model.anchors.sizes)}")
    if cfg.model.matcher.kind == "atss" and (
            len(cfg.model.anchors.ratios) * len(cfg.model.anchors.scales) != 1):
        pass  # allowed: ATSS works with several anchors per location, just slower
    h = cfg.model.heads
    if h.tower_depth < 0 or (h.keypoint_tower_depth or 0) < 0 or (
            h.keypoint_tower_channels is not None and h.keypoint_tower_channels < 1):
        raise ConfigError(f"{_where('model.heads', origin)}: model.heads.tower_depth and "
                          "keypoint_tower_depth must be >= 0, keypoint_tower_channels >= 1 (or "
                          "null: the FPN's channels)")
    depth = h.tower_depth if h.keypoint_tower_depth is None else h.keypoint_tower_depth
    # the settings of the keypoint head's own tower, and how to drop each (one message for all)
    drop = {"keypoint_tower_depth": "null", "keypoint_tower_channels": "null"}
    own = [k for k in drop if getattr(h, k) is not None]
    side_own = h.keypoint_handedness and h.keypoint_side_tower == "own"
    if h.share_tower and (own or side_own):
        items = own + ["keypoint_side_tower own"] * side_own
        fix = [f"model.heads.{k}={drop[k]}" for k in own]
        fix += ["model.heads.keypoint_side_tower=keypoints"] * side_own
        raise ConfigError(f"{_where('model.heads', origin)}: model.heads.share_tower true, but "
                          f"{', '.join(items)} {'needs' if len(items) == 1 else 'need'} the "
                          f"keypoint head's own tower: set share_tower false, or also set "
                          f"{' '.join(fix)}")
    if (h.keypoint_tower_channels is not None or side_own) and depth == 0:
        fix = ["model.heads.keypoint_tower_channels=null"] * (h.keypoint_tower_channels is not None)
        fix += ["model.heads.keypoint_side_tower=keypoints"] * side_own
        raise ConfigError(f"{_where('model.heads', origin)}: the keypoint tower has depth 0 "
                          "(tower_depth, or keypoint_tower_depth) and so no width and no second "
                          f"tower: give it a depth above 0, or also set {' '.join(fix)}")
    if not (math.isfinite(h.keypoint_side_grad) and 0 <= h.keypoint_side_grad <= 1):
        raise ConfigError(f"{_where('model.heads.keypoint_side_grad', origin)}: "
                          "model.heads.keypoint_side_grad must be between 0 and 1")
    if h.keypoint_side_grad != 1 and h.keypoint_side_tower != "cls":
        raise ConfigError(f"{_where('model.heads.keypoint_side_grad', origin)}: "
                          "model.heads.keypoint_side_grad scales what the handedness term sends "
                          "into the classification tower: it needs keypoint_side_tower cls")
    if not (math.isfinite(h.keypoint_crop_lr) and h.keypoint_crop_lr > 0):
        raise ConfigError(f"{_where('model.heads.keypoint_crop_lr', origin)}: "
                          "model.heads.keypoint_crop_lr must be a positive number")
    if h.keypoint_side_tower == "crop" and "loss_kpt_side" in cfg.train.balance_apart:
        raise ConfigError(f"{_where('train.balance_apart', origin)}: with model.heads."
                          "keypoint_side_tower crop, loss_kpt_side trains the crop classifier alone "
                          "and is in no balancing group: drop it from train.balance_apart")
    if len(set(cfg.train.balance_apart)) != len(cfg.train.balance_apart):
        raise ConfigError(f"{_where('train.balance_apart', origin)}: a loss term is named twice")
    for term in cfg.train.balance_apart:
        if not term.startswith("loss_") or term == "loss":
            raise ConfigError(f"{_where('train.balance_apart', origin)}: '{term}' is not a loss "
                              "term's name (loss_cls, loss_kpt_side, ...: the keys the heads log)")
    groups = (*typing.get_args(HeadName), *cfg.train.balance_apart)
    for name, value in cfg.train.loss_weights.items():
        if name not in groups:
            raise ConfigError(f"{_where('train.loss_weights', origin)}: 'train.loss_weights' has "
                              f"unknown head '{name}' (heads: cls, box, keypoints, and the terms "
                              "of train.balance_apart)")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{_where('train.loss_weights', origin)}: weight of '{name}' must "
                              f"be a finite number >= 0")
    t = cfg.train
    if not 0 <= t.balancing_ema < 1 or t.gradnorm_lr <= 0 or t.grad_diagnostics_every < 0:
        raise ConfigError(f"{_where('train', origin)}: train.balancing_ema must be in [0, 1), "
                          "train.gradnorm_lr > 0 and train.grad_diagnostics_every >= 0")
    for part in t.freeze:
        if part not in ("backbone", "neck", "cls", "box", "keypoints"):
            raise ConfigError(f"{_where('train.freeze', origin)}: 'train.freeze' has unknown part "
                              f"'{part}' (backbone, neck, cls, box, keypoints)")
    if cfg.train.accumulate < 1 or cfg.train.batch_size < 1:
        raise ConfigError(f"{_where('train', origin)}: train.batch_size and train.accumulate "
                          "must be >= 1")


def model_keypoints(cfg: Config) -> int:
    """Keypoints the built model predicts: ``model.heads.num_keypoints`` when ``train.heads``
    includes ``keypoints``, else 0 (no keypoint head is built, trained, run or saved). A K left
    to the data (None) counts as 0 until `resolve_keypoints` has read it from the data."""
    return (cfg.model.heads.num_keypoints or 0) if "keypoints" in cfg.train.heads else 0


def keypoint_sigmas(cfg: HeadsConfig) -> tuple[float, ...]:
    """Per-keypoint OKS sigmas: the config's, or COCO's person sigmas for K == 17."""
    if cfg.keypoint_sigmas is not None:
        return cfg.keypoint_sigmas
    if cfg.num_keypoints == COCO_PERSON_SIGMAS_LEN:
        from detect.losses import COCO_PERSON_SIGMAS
        return tuple(float(s) for s in COCO_PERSON_SIGMAS)
    return ()


def resolve_keypoints(cfg: Config, names: tuple[str, ...], source: str) -> Config:
    """The config with its keypoint settings made concrete from the training data's keypoint
    ``names`` (``()``: the data has no keypoints), read from ``source``:

    * ``train.heads`` without ``keypoints``: box-only, whatever the data has (K = 0).
    * K is the data's unless ``model.heads.num_keypoints`` sets it (then they must agree); K = 0
      trains and evaluates the other heads only.
    * sigmas are the config's, else COCO's for COCO keypoint names (or 17 unnamed ones); any
      other K without sigmas is a `ConfigError` saying how to give them.
    """
    heads = cfg.model.heads
    k_data = len(names)
    if "keypoints" not in cfg.train.heads:
        k = 0
    elif heads.num_keypoints is None:
        k = k_data
    elif heads.num_keypoints != k_data:
        raise ConfigError(f"{source}: model.heads.num_keypoints is {heads.num_keypoints} but the "
                          f"training annotations have {k_data} keypoints per object (leave it "
                          "unset to follow the data, or set train.heads=[cls,box] for boxes only)")
    else:
        k = k_data
    sigmas = heads.keypoint_sigmas if k else None
    if k and sigmas is None:
        sigmas = _known_sigmas(names)
    if k and sigmas is None:
        raise ConfigError(f"{source}: the training annotations have {k} keypoints "
                          f"({', '.join(names[:4])}{', ...' if k > 4 else ''}) with no known OKS "
                          f"sigmas: set model.heads.keypoint_sigmas to {k} values, one per keypoint "
                          "(COCO's per joint: detect.losses.COCO_PERSON_SIGMAS)")
    if k and len(sigmas) != k:
        raise ConfigError(f"{source}: model.heads.keypoint_sigmas has {len(sigmas)} values but the "
                          f"training annotations have {k} keypoints per object")
    train_heads = cfg.train.heads if k else tuple(h for h in cfg.train.heads if h != "keypoints")
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, heads=dataclasses.replace(
            heads, num_keypoints=k, keypoint_sigmas=tuple(sigmas) if k else None)),
        train=dataclasses.replace(cfg.train, heads=train_heads))


def _known_sigmas(names: tuple[str, ...]) -> tuple[float, ...] | None:
    """COCO's person sigmas for keypoints named as COCO's (any order), or for 17 unnamed ones."""
    from detect.losses import COCO_PERSON_KEYPOINTS, COCO_PERSON_SIGMAS
    by_name = dict(zip(COCO_PERSON_KEYPOINTS, COCO_PERSON_SIGMAS))
    if all(n in by_name for n in names):
        return tuple(float(by_name[n]) for n in names)
    if len(names) == COCO_PERSON_SIGMAS_LEN and not any(n in by_name for n in names):
        return tuple(float(s) for s in COCO_PERSON_SIGMAS)
    return None
