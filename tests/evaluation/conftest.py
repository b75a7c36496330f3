"""coco-mini val2017 ground truth for the evaluation tests (paths from tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from detect.data.annotations import merge_coco


@pytest.fixture(scope="session")
def val_files(coco_mini: dict[str, Path]) -> list[Path]:
    """[instances_val2017.json, person_keypoints_val2017.json] of coco-mini."""
    return [coco_mini["val_instances"], coco_mini["val_keypoints"]]


@pytest.fixture(scope="session")
def val_gt(val_files: list[Path]) -> dict:
    """coco-mini val2017, instances and person keypoints merged by annotation id."""
    return merge_coco(val_files)
