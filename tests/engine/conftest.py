from pathlib import Path

import pytest

from detect.data.synthetic import generate

TINY_MODEL = [
    "model.backbone.name=resnet18", "model.backbone.weights=null", "model.backbone.frozen_stages=0",
    "model.neck.channels=32", "model.neck.depthwise=false", "model.heads.tower_depth=1",
    "model.heads.depthwise=false", "model.heads.norm=gn", "model.heads.share_tower=false",
    "data.size_divisor=32", "data.workers=0", "train.log_every=1", "train.warmup_steps=2",
]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """8 train + 4 val synthetic images at 128 px."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, 8, 4, size=128, seed=3)
    return root


def synthetic_overrides(root: Path, size: int = 128) -> list[str]:
    return [f"data.train.images={root / 'train'}",
            f"data.train.annotations=[{root / 'annotations/train.json'}]",
            f"data.val.images={root / 'val'}",
            f"data.val.annotations=[{root / 'annotations/val.json'}]",
            f"data.image_size={size}"] + TINY_MODEL
