"""merge_coco (training and evaluation ground truth) on coco-mini and on small conflicting files."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from detect.data.annotations import DatasetError, merge_coco


def test_person_image_gets_keypoints_and_all_boxes(val_files: list[Path], val_gt: dict) -> None:
    instances = json.loads(val_files[0].read_text())
    keypoints = json.loads(val_files[1].read_text())
    assert len(val_gt["annotations"]) == len(instances["annotations"])
    assert len(val_gt["images"]) == len(instances["images"])

    person = next(c for c in val_gt["categories"] if c["id"] == 1)
    assert len(person["keypoints"]) == 17 and person["skeleton"]
    assert person["supercategory"] == "person"  # from the instances file

    labelled = [a for a in keypoints["annotations"] if a["num_keypoints"] > 0]
    other = {b["image_id"] for b in instances["annotations"] if b["category_id"] != 1}
    # an image with a labelled person and an object of another category
    image_id = next(a["image_id"] for a in labelled if a["image_id"] in other)
    merged = {a["id"]: a for a in val_gt["annotations"] if a["image_id"] == image_id}
    original = {a["id"]: a for a in instances["annotations"] if a["image_id"] == image_id}
    assert merged.keys() == original.keys()
    assert [a["category_id"] for a in merged.values()] == [
        a["category_id"] for a in original.values()
    ]
    for ann in keypoints["annotations"]:
        if ann["image_id"] == image_id:
            assert merged[ann["id"]]["keypoints"] == ann["keypoints"]
            assert len(ann["keypoints"]) == 51
            assert merged[ann["id"]]["num_keypoints"] == ann["num_keypoints"]
            assert merged[ann["id"]]["bbox"] == original[ann["id"]]["bbox"]
    assert any(merged[a["id"]]["num_keypoints"] > 0 for a in labelled if a["image_id"] == image_id)
    assert all("keypoints" not in a for a in merged.values() if a["category_id"] != 1)


def _write(path: Path, annotations: list[dict]) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": annotations,
    }
    path.write_text(json.dumps(data))
    return path


def test_conflicting_bbox_names_both_files_and_id(tmp_path: Path) -> None:
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}
    a = _write(tmp_path / "instances.json", [ann])
    b = _write(tmp_path / "keypoints.json", [{**ann, "bbox": [0, 0, 6, 5]}])
    pattern = f"^{re.escape(str(b))}: annotations\\[0\\]: annotation id 7 has bbox .* in {re.escape(str(a))}$"
    with pytest.raises(DatasetError, match=pattern):
        merge_coco([a, b])


def test_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DatasetError, match=f"^{re.escape(str(bad))}: top level must be an object"):
        merge_coco([bad])
    bad.write_text("{")
    with pytest.raises(DatasetError, match=f"^{re.escape(str(bad))}: not valid JSON"):
        merge_coco([bad])
    missing = tmp_path / "missing.json"
    with pytest.raises(DatasetError, match=f"^{re.escape(str(missing))}: annotation file not found"):
        merge_coco([missing])
