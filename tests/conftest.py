import os
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
