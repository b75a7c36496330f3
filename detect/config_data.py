"""Config settings made concrete from the training data: the keypoint head's K and sigmas
(`resolve_keypoints`) and whether a mask head is built and for which categories
(`resolve_masks`)."""
from __future__ import annotations

import dataclasses

from detect.config import COCO_PERSON_SIGMAS_LEN, Config, KeypointHeadConfig
from detect.config_parse import ConfigError


def model_keypoints(cfg: Config) -> int:
    """Keypoints the built model predicts: ``model.heads.keypoints.num_keypoints`` when ``train.heads``
    includes ``keypoints``, else 0 (no keypoint head is built, trained, run or saved). A K left
    to the data (None) counts as 0 until `resolve_keypoints` has read it from the data."""
    return (cfg.model.heads.keypoints.num_keypoints or 0) if "keypoints" in cfg.train.heads else 0


def keypoint_sigmas(cfg: KeypointHeadConfig) -> tuple[float, ...]:
    """Per-keypoint OKS sigmas: the config's, or COCO's person sigmas for K == 17."""
    if cfg.sigmas is not None:
        return cfg.sigmas
    if cfg.num_keypoints == COCO_PERSON_SIGMAS_LEN:
        from detect.losses import COCO_PERSON_SIGMAS
        return tuple(float(s) for s in COCO_PERSON_SIGMAS)
    return ()


def resolve_keypoints(cfg: Config, names: tuple[str, ...], source: str) -> Config:
    """The config with its keypoint settings made concrete from the training data's keypoint
    ``names`` (``()``: the data has no keypoints), read from ``source``:

    * ``train.heads`` without ``keypoints``: box-only, whatever the data has (K = 0).
    * K is the data's unless ``model.heads.keypoints.num_keypoints`` sets it (then they must agree); K = 0
      trains and evaluates the other heads only.
    * sigmas are the config's, else COCO's for COCO keypoint names (or 17 unnamed ones); any
      other K without sigmas is a `ConfigError` saying how to give them.
    """
    heads = cfg.model.heads.keypoints
    k_data = len(names)
    if "keypoints" not in cfg.train.heads:
        k = 0
    elif heads.num_keypoints is None:
        k = k_data
    elif heads.num_keypoints != k_data:
        raise ConfigError(f"{source}: model.heads.keypoints.num_keypoints is {heads.num_keypoints} but the "
                          f"training annotations have {k_data} keypoints per object (leave it "
                          "unset to follow the data, or set train.heads=[cls,box] for boxes only)")
    else:
        k = k_data
    sigmas = heads.sigmas if k else None
    if k and sigmas is None:
        sigmas = _known_sigmas(names)
    if k and sigmas is None:
        raise ConfigError(f"{source}: the training annotations have {k} keypoints "
                          f"({', '.join(names[:4])}{', ...' if k > 4 else ''}) with no known OKS "
                          f"sigmas: set model.heads.keypoints.sigmas to {k} values, one per keypoint "
                          "(COCO's per joint: detect.losses.COCO_PERSON_SIGMAS)")
    if k and len(sigmas) != k:
        raise ConfigError(f"{source}: model.heads.keypoints.sigmas has {len(sigmas)} values but the "
                          f"training annotations have {k} keypoints per object")
    train_heads = cfg.train.heads if k else tuple(h for h in cfg.train.heads if h != "keypoints")
    keypoints = dataclasses.replace(heads, num_keypoints=k, sigmas=tuple(sigmas) if k else None)
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, heads=dataclasses.replace(
            cfg.model.heads, keypoints=keypoints)),
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


def model_masks(cfg: Config) -> bool:
    """Whether the built model has a mask head: ``model.heads.masks.enabled`` (true once
    `resolve_masks` found segmentations) and ``masks`` in ``train.heads``."""
    return bool(cfg.model.heads.masks.enabled) and "masks" in cfg.train.heads


def resolve_masks(cfg: Config, category_ids: tuple[int, ...] | None, source: str) -> Config:
    """The config with its mask settings made concrete from the training data: the original
    ``category_ids`` of the categories with at least one mask (None: the data has no
    segmentations), read from ``source``.

    * no ``masks`` in ``train.heads``, ``enabled: false`` or no segmentations (with ``enabled``
      unset): no mask head, ``masks`` left out of ``train.heads``;
    * ``enabled: true`` on data without segmentations is a `ConfigError`;
    * else a mask head serving ``category_ids``.
    """
    m = cfg.model.heads.masks
    wanted = "masks" in cfg.train.heads and m.enabled is not False
    if wanted and not category_ids and m.enabled:
        raise ConfigError(f"{source}: model.heads.masks.enabled is true but the training "
                          "annotations have no segmentations (leave it unset to follow the data)")
    on = wanted and bool(category_ids)
    masks = dataclasses.replace(m, enabled=on, category_ids=tuple(category_ids or ()) if on else ())
    heads = cfg.train.heads if on else tuple(h for h in cfg.train.heads if h != "masks")
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, heads=dataclasses.replace(
            cfg.model.heads, masks=masks)),
        train=dataclasses.replace(cfg.train, heads=heads))


def data_notes(requested: Config, resolved: Config) -> list[str]:
    """A note per head of ``requested``'s ``train.heads`` that `resolve_keypoints` or
    `resolve_masks` left out because the training data has nothing for it (not one the config
    turned off)."""
    lines = []
    heads = requested.model.heads
    for head, off, what in (("keypoints", heads.keypoints.num_keypoints == 0, "keypoints"),
                            ("masks", heads.masks.enabled is False, "segmentations")):
        if head in requested.train.heads and head not in resolved.train.heads and not off:
            lines.append(f"note: the training annotations have no {what}: training "
                         f"{', '.join(resolved.train.heads)}")
    return lines
