import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

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


def masks_built(tmp_path):
    """Two 20 x 10 images. cat: a polygon (12 pixels), a compressed RLE (7 px), an uncompressed RLE
    (5 px), two without a mask; dog: no masks at all; bird: a malformed polygon and an RLE of the
    wrong size; a crowd region with a mask; a dropped box whose mask is not counted."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(img_dir / name), np.zeros((10, 20, 3), np.uint8))
    seven = np.zeros((10, 20), np.uint8)
    seven[1:8, 15] = 1
    compressed = {"size": [10, 20], "counts": mask_utils.encode(np.asfortranarray(seven))["counts"]
                  .decode()}
    uncompressed = {"size": [10, 20], "counts": [10 * 3 + 2, 5, 200 - 37]}  # column 3, rows 2..6
    images = [{"id": 1, "file_name": "a.png", "width": 20, "height": 10},
              {"id": 2, "file_name": "b.png", "width": 20, "height": 10}]
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
    rect = [[2, 2, 6, 2, 6, 5, 2, 5]]

    def ann(i, image, cat, bbox, **kw):
        return {"id": i, "image_id": image, "category_id": cat, "bbox": bbox, **kw}

    anns = [
        ann(1, 1, 1, [2, 2, 4, 3], area=12, segmentation=rect),
        ann(2, 1, 1, [15, 1, 1, 7], area=14, segmentation=compressed),
        ann(3, 2, 1, [3, 2, 1, 5], segmentation=uncompressed),  # no area: no ratio
        ann(4, 2, 1, [0, 0, 5, 5]),
        ann(5, 2, 1, [0, 0, 5, 5], segmentation=[]),
        ann(6, 1, 2, [0, 0, 5, 5]),
        ann(7, 2, 2, [0, 0, 5, 5]),
        ann(8, 1, 3, [0, 0, 5, 5], segmentation=[[1, 1, 4, 1, 4]]),
        ann(9, 2, 3, [0, 0, 5, 5], segmentation={"size": [20, 10], "counts": compressed["counts"]}),
        ann(10, 2, 2, [0, 0, 9, 9], iscrowd=1, segmentation=compressed),
        ann(11, 2, 1, [0, 0, 0, 5], segmentation=rect),  # zero width: dropped
    ]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path, img_dir, rect


def test_report_counts_masks_per_class_and_their_areas(tmp_path):
    path, img_dir, rect = masks_built(tmp_path)
    r = analyse([path], img_dir)
    m = r.masks
    assert m.per_class == {"cat": {"polygon": 1, "rle": 2, "none": 2, "malformed": 0},
                           "dog": {"polygon": 0, "rle": 0, "none": 2, "malformed": 0},
                           "bird": {"polygon": 0, "rle": 0, "none": 0, "malformed": 2}}
    # pycocotools is the reference for the polygon's pixels
    assert mask_utils.area(mask_utils.frPyObjects(rect, 10, 20))[0] == 12
    assert m.areas == [12, 7, 5] and m.area_ratios == [1.0, 0.5]
    assert m.without_mask == {"cat": 2}  # dog has no masks at all: boxes only, as expected
    assert m.without_examples["cat"] == ["annotation id 4 (image b.png)",
                                         "annotation id 5 (image b.png)"]
    assert m.crowd_with_mask == 1
    assert r.problems["malformed segmentation"] == 2
    assert r.examples["malformed segmentation"] == [
        "annotation id 8 (image a.png): polygon 0 has 5 numbers (an even count >= 6 needed)",
        "annotation id 9 (image b.png): RLE size [20, 10] differs from the image's [10, 20]"]
    summary = m.area_summary()
    assert summary["sizes"] == {"small": 3, "medium": 0, "large": 0}
    assert summary["pixels"]["median"] == 7 and summary["pixels"]["max"] == 12
    assert summary["ratio_to_area"]["min"] == 0.5
    text = format_report(r)
    assert "masks: 1 polygon, 2 RLE, 4 objects without, 2 malformed (+ 1 crowd regions" in text
    assert "mask area (pixels): min 5, median 7, mean 8.0, max 12; small 3" in text
    assert "2 cat object(s) without a mask train boxes only (e.g. annotation id 4" in text
    assert "2 x malformed segmentation  (e.g. annotation id 8 (image a.png): polygon 0" in text


def test_report_json_holds_masks_and_no_masks_reads_none(tmp_path, capsys):
    path, img_dir, _ = masks_built(tmp_path)
    out = tmp_path / "r.json"
    assert main(["report", "--annotations", str(path), "--images", str(img_dir),
                 "--json", str(out)]) == 0
    masks = json.loads(out.read_text())["masks"]
    assert masks["objects"] == {"polygon": 1, "rle": 2, "none": 4, "malformed": 2}
    assert masks["without_mask"] == {"cat": 2} and len(masks["without_mask_examples"]["cat"]) == 2
    assert masks["areas"]["pixels"]["min"] == 5 and masks["crowd_regions_with_mask"] == 1
    (tmp_path / "plain").mkdir()
    plain, plain_dir = hand_built(tmp_path / "plain")
    r = analyse([plain], plain_dir)
    assert "masks: none" in format_report(r) and r.masks.to_dict()["areas"]["pixels"] is None
