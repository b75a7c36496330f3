"""Configs of the older layout, in one place: checkpoints written before the heads had config
sections of their own load as they were trained (`translate_legacy`), and a config file or an
override that uses an old key is told its new name (`legacy_hint`).

Before, ``model.heads`` was one flat section: ``keypoint_*`` settings beside the classification
and box heads' ones. Options removed since (they lost their measured comparison, docs/KEYPOINTS.md)
translate only at their defaults; a checkpoint trained with one is refused in one line.
"""
from __future__ import annotations

import copy
from typing import Any

from detect.config_parse import ConfigError

# old model.heads key -> (section, new key)
MOVED: dict[str, tuple[str, str]] = {
    "prior_prob": ("cls", "prior_prob"), "focal_alpha": ("cls", "focal_alpha"),
    "focal_gamma": ("cls", "focal_gamma"), "box_loss": ("box", "loss"),
    "box_weights": ("box", "weights"), "num_keypoints": ("keypoints", "num_keypoints"),
    "keypoint_sigmas": ("keypoints", "sigmas"),
    "keypoint_tower_depth": ("keypoints", "tower_depth"),
    "keypoint_tower_channels": ("keypoints", "tower_channels"),
    "keypoint_field": ("keypoints", "field"), "keypoint_field_weight": ("keypoints", "field_weight"),
    "keypoint_l1_weight": ("keypoints", "l1_weight"),
    "keypoint_side_weight": ("keypoints", "side_weight"),
    "keypoint_crop_lr": ("keypoints", "crop_lr"),
}
# old keys that became keypoints.handedness: none | anchor | crop
HANDEDNESS = ("keypoint_handedness", "keypoint_side_tower")
# removed options -> the value they translate at (the only one)
REMOVED: dict[str, Any] = {"keypoint_heatmaps": False, "share_tower": False, "depthwise": False,
                           "keypoint_side_grad": 1.0}


def translate_legacy(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """``raw`` (a config as a plain dict) in the current layout; the same dict when it is
    already. A removed option at a value other than its default is a `ConfigError`."""
    heads = (raw.get("model") or {}).get("heads")
    if not isinstance(heads, dict) or not any(k in heads for k in (*MOVED, *HANDEDNESS, *REMOVED)):
        return raw
    raw = copy.deepcopy(raw)
    heads = raw["model"]["heads"]
    if not heads.get("keypoint_handedness") or heads.get("keypoint_side_tower") != "cls":
        heads.pop("keypoint_side_grad", None)  # it had no effect there
    for key, default in REMOVED.items():
        if key in heads and heads.pop(key) != default:
            raise ConfigError(f"{source}: trained with model.heads.{key}, an option that was "
                              "removed (docs/KEYPOINTS.md, 'Tried and lost')")
    for key, (section, new) in MOVED.items():
        if key in heads:
            heads.setdefault(section, {})[new] = heads.pop(key)
    if any(k in heads for k in HANDEDNESS):
        on, tower = heads.pop("keypoint_handedness", False), heads.pop("keypoint_side_tower",
                                                                     "keypoints")
        if on and tower not in ("keypoints", "crop"):
            raise ConfigError(f"{source}: trained with model.heads.keypoint_side_tower {tower}, "
                              "an option that was removed (docs/KEYPOINTS.md, 'Tried and lost')")
        value = "none" if not on else "anchor" if tower == "keypoints" else "crop"
        heads.setdefault("keypoints", {})["handedness"] = value
    if heads.get("box", {}).get("loss") == "giou+l1":
        raise ConfigError(f"{source}: trained with model.heads.box_loss giou+l1, an option that "
                          "was removed")
    return raw


def legacy_hint(layer: dict[str, Any], file: str) -> None:
    """A `ConfigError` naming the new key for an old ``model.heads`` key in ``layer``."""
    heads = (layer.get("model") or {}).get("heads") if isinstance(layer.get("model"), dict) else None
    if not isinstance(heads, dict):
        return
    for key in heads:
        if key in MOVED:
            section, new = MOVED[key]
            raise ConfigError(f"{file}: 'model.heads.{key}' is now 'model.heads.{section}.{new}'")
        if key in HANDEDNESS:
            raise ConfigError(f"{file}: 'model.heads.{key}' is now 'model.heads.keypoints."
                              "handedness' (none, anchor or crop)")
        if key in REMOVED:
            raise ConfigError(f"{file}: 'model.heads.{key}' was removed (docs/KEYPOINTS.md, "
                              "'Tried and lost')")
