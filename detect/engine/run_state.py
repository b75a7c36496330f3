"""What a training run's checkpoint holds besides weights and optimiser state, and what resuming
from one checks: the metadata to rebuild and use the model, the RNG states (exact resume), the
seeding, and the compatibility of a checkpoint with the config it is resumed under."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detect.config import Config, config_to_dict
from detect.config_data import keypoint_sigmas, model_keypoints
from detect.data.annotations import CategoryMap, KeypointMeta
from detect.engine.checkpoint import stored_config
from detect.tensor_files import CheckpointError


def checkpoint_meta(cfg: Config, categories: CategoryMap, kmeta: KeypointMeta | None) -> dict:
    """What a checkpoint needs besides weights to rebuild and use the model."""
    meta: dict[str, Any] = {"config": config_to_dict(cfg), "categories": categories.to_dict()}
    if kmeta is not None and model_keypoints(cfg):
        meta["keypoints"] = {"names": list(kmeta.names),
                             "skeleton": [list(p) for p in kmeta.skeleton],
                             "flip_pairs": [list(p) for p in kmeta.flip_pairs],
                             "category_ids": list(kmeta.category_ids),
                             "sigmas": list(keypoint_sigmas(cfg.model.heads.keypoints))}
    return meta


def rng_state() -> dict:
    """torch's, numpy's and Python's RNG states as checkpoint-safe values (tensors, ints, lists)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].copy()),
            "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0]}


def set_rng_state(s: dict) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(s["torch"])
    np.random.set_state(("MT19937", s["numpy_keys"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    random.setstate((s["python_version"], tuple(s["python"]), None))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def check_compatible(ckpt: dict, cfg: Config, categories: CategoryMap,
                     kmeta: KeypointMeta | None, path: Path) -> None:
    """Resuming needs the same classes, keypoints and model; other changes are warned about."""
    old = stored_config(ckpt, path)
    old_cats = CategoryMap.from_dict(ckpt["categories"])
    if old_cats != categories:
        raise CheckpointError(
            f"{path}: the checkpoint's classes differ from the training data's "
            f"({old_cats.num_classes} vs {categories.num_classes}: {list(old_cats.names)[:5]} vs "
            f"{list(categories.names)[:5]})")
    old_kpts = (ckpt.get("keypoints") or {}).get("names")
    if old_kpts is not None and kmeta is not None and tuple(old_kpts) != kmeta.names:
        raise CheckpointError(f"{path}: the checkpoint's keypoints {old_kpts} differ from the "
                              f"training data's {list(kmeta.names)}")
    if old.model != cfg.model:
        diff = ", ".join(_config_diff(old.model, cfg.model, "model"))
        raise CheckpointError(f"{path}: the checkpoint's model config differs from this config "
                              f"({diff})")
    if old.train.balance_apart != cfg.train.balance_apart:  # the balancer's state is per group
        raise CheckpointError(f"{path}: the checkpoint was trained with train.balance_apart "
                              f"{list(old.train.balance_apart)}, not {list(cfg.train.balance_apart)}")
    if old.train.seed != cfg.train.seed:
        print(f"warning: resuming {path} with train.seed {cfg.train.seed} (was {old.train.seed}):"
              " the run will not repeat the original")
    if old != cfg:
        print(f"warning: resuming {path} with a config that differs from the checkpoint's: "
              + ", ".join(_config_diff(old, cfg)))


def _config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs."""
    a, b = config_to_dict(old), config_to_dict(new)

    def walk(x: Any, y: Any, key: str) -> list[str]:
        if isinstance(x, dict) and isinstance(y, dict):
            return [d for k in x for d in walk(x[k], y.get(k), f"{key}.{k}" if key else k)]
        return [] if x == y else [f"{key}: {x!r} -> {y!r}"]
    return walk(a, b, prefix)
