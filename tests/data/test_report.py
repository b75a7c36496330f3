import json

import cv2
import numpy as np
import pytest

from detect.cli.dataset import main
from detect.data.report import analyse, format_report


def hand_built(tmp_path):
    """4 images (b.png is 90x80 on disk, c.png missing, d.png empty), person with 2 keypoints,
    cat, and bird without objects; one degenerate box and one crowd region."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for name, w, h in (("a.png", 100, 80), ("b.png", 90, 80), ("d.png", 100, 80)):
        cv2.imwrite(str(img_dir / name), np.zeros((h, w, 3), np.uint8))
    images = [{"id": i, "file_name": n, "width": 100, "height": 80}
              for i, n in enumerate(("a.png", "b.png", "c.png", "d.png"), start=1)]
    cats = [{"id": 1, "name": "person", "keypoints": ["head", "left_hand"], "skeleton": [[1, 2]]},
            {"id": 2, "name": "cat"}, {"id": 5, "name": "bird"}]

    def ann(i, image, cat, bbox, **kw):
        return {"id": i, "image_id": image, "category_id": cat, "bbox": bbox, **kw}

    anns = [
        ann(1, 1, 1, [0, 0, 10, 10], area=50, keypoints=[5, 5, 2, 0, 0, 0]),  # small by area
        ann(2, 1, 2, [10, 10, 40, 40]),  # no area: box area 1600, medium
        ann(3, 1, 2, [0, 0, 100, 80], area=10000),  # large
        ann(4, 2, 1, [20, 20, 30, 40], area=2000, keypoints=[25, 25, 1, 200, 200, 2]),  # 2nd outside
        ann(5, 2, 2, [5, 5, 0, 10]),  # dropped: zero width
        ann(6, 2, 2, [1, 1, 5, 5], iscrowd=1),
        ann(7, 3, 2, [1, 1, 10, 10], area=0),  # area 0: box area 100, small
    ]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path, img_dir


def test_report_numbers_on_a_hand_built_dataset(tmp_path):
    path, img_dir = hand_built(tmp_path)
    r = analyse([path], img_dir)
    assert r.num_images == 4 and r.num_objects == 5 and r.num_crowd == 1
    assert r.objects_per_class == {"person": 2, "cat": 3, "bird": 0}
    assert r.objects_per_image == [3, 1, 1, 0]
    assert r.per_image_stats() == {"mean": 1.25, "median": 1.0, "max": 3, "empty": 1}
    assert r.size_counts == {"small": 2, "medium": 2, "large": 1}
    assert r.imbalance_ratio == 1.5
    assert r.keypoint_visibility == {"head": [0, 1, 1], "left_hand": [2, 0, 0]}
    assert dict(r.problems) == {"box dropped: non-positive bbox width/height": 1,
                                "category without objects": 1, "image file missing": 1,
                                "image size differs from the JSON": 1}
    assert r.examples["image file missing"] == ["c.png"]
    assert r.examples["image size differs from the JSON"] == ["b.png: file 90x80, JSON 100x80"]
    text = format_report(r)
    assert "objects per image: mean 1.25, median 1, max 3, empty images 1" in text
    assert "1 x image file missing  (e.g. c.png)" in text


def test_report_cli_writes_json_and_plots(tmp_path, capsys):
    path, img_dir = hand_built(tmp_path)
    plots, out_json = tmp_path / "plots", tmp_path / "report.json"
    assert main(["report", "--annotations", str(path), "--images", str(img_dir),
                 "--plots", str(plots), "--json", str(out_json)]) == 0
    assert "sizes (COCO area): small 2, medium 2, large 1" in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert data["objects_per_class"] == {"person": 2, "cat": 3, "bird": 0}
    assert data["problems"][0]["count"] == 1 and len(data["problems"]) == 4
    for name in ("objects_per_class.png", "objects_per_image.png", "box_sizes.png"):
        img = cv2.imread(str(plots / name))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
        assert (img < 128).any()  # something was drawn on the white canvas


def test_report_unreadable_annotations_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "ann.json"
    bad.write_text("{not json")
    assert main(["report", "--annotations", str(bad), "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: not valid JSON") and err.count("\n") == 1


@pytest.mark.parametrize("crowd", [False, True])
def test_report_without_objects_has_no_imbalance_ratio(tmp_path, crowd):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    cv2.imwrite(str(img_dir / "a.png"), np.zeros((8, 8, 3), np.uint8))
    path = tmp_path / "ann.json"
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 1}] * crowd
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
                                "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    r = analyse([path], img_dir)
    assert r.imbalance_ratio is None and r.num_empty_images == 1 and r.num_crowd == int(crowd)
    assert "class imbalance (max/min over classes with objects): n/a" in format_report(r)
