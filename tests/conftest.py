import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real datasets (DETECT_SHARED_DATA). Missing: skip locally, fail in CI."""
    root = os.environ.get("DETECT_SHARED_DATA")
    if not root or not Path(root, "coco-mini").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"DETECT_SHARED_DATA={root!r} has no coco-mini (required in CI)")
        pytest.skip("DETECT_SHARED_DATA not set")
    return Path(root)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request) -> Iterator[Path]:
    """A folder for one test module's shared runs, removed when its last test is done: a
    training run's checkpoints take about 180 MB each (ResNet-18 weights, EMA and optimiser), and
    kept to the end of the session they added up to gigabytes (`tmp_path_retention_policy`
    removes each passing test's own ``tmp_path``)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def coco_mini(shared_data: Path) -> dict[str, Path]:
    d = shared_data / "coco-mini"
    return {
        "train_images": d / "train2017",
        "val_images": d / "val2017",
        "train_instances": d / "annotations/instances_train2017.json",
        "train_keypoints": d / "annotations/person_keypoints_train2017.json",
        "val_instances": d / "annotations/instances_val2017.json",
        "val_keypoints": d / "annotations/person_keypoints_val2017.json",
    }


# A small, fast model for training tests: ResNet-18 at 128 px, 32-channel FPN, one GN tower block.
TINY_MODEL = [
    "model.backbone.name=resnet18", "model.backbone.weights=null", "model.backbone.frozen_stages=0",
    "model.neck.channels=32", "model.neck.depthwise=false", "model.heads.tower_depth=1",
    "model.heads.norm=gn",
    "data.size_divisor=32", "data.workers=0", "train.log_every=1", "train.warmup_steps=2",
]


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """8 train + 4 val synthetic images at 128 px."""
    from detect.data.synthetic.write import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, 8, 4, size=128, seed=3)
    return root


@pytest.fixture(scope="session")
def tiny_overrides(tiny_synthetic) -> list[str]:
    """Config overrides: the tiny synthetic set + the tiny model (use with configs/demo.yaml)."""
    root = tiny_synthetic
    return [f"data.train.images={root / 'train'}",
            f"data.train.annotations=[{root / 'annotations/train.json'}]",
            f"data.val.images={root / 'val'}",
            f"data.val.annotations=[{root / 'annotations/val.json'}]",
            "data.image_size=128"] + TINY_MODEL


@pytest.fixture(scope="session")
def tiny_model() -> list[str]:
    """Config overrides for the tiny model alone."""
    return list(TINY_MODEL)
