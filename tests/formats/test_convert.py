import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detect.cli.convert import main
from detect.data.annotations import DatasetError
from detect.formats import NoteLog, coco_to_yolo, read_voc_xml
from detect.formats.yolo_segments import polygon_to_write

# pycocotools' decode under numpy 2 warns about its own __array__; nothing of ours.


def write_image(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 120, np.uint8))


def voc_xml(filename, objects, size=None):
    """objects: (name, xmin, ymin, xmax, ymax, difficult)."""
    size_xml = (f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
                if size else "")
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x0}</xmin>"
        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for n, x0, y0, x1, y1, d in objects)
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>"


# --------------------------------------------------------------------------- VOC -> COCO

def test_voc2coco_size_from_image_difficult_as_crowd_and_class_order(tmp_path, capsys):
    xml, img = tmp_path / "xml", tmp_path / "images"
    xml.mkdir()
    (xml / "a.xml").write_text(voc_xml("a.jpg", [("cat", 11, 21, 30, 40, 0),
                                                  ("dog", 1, 1, 64, 48, 1)], size=(64, 48)))
    (xml / "b.xml").write_text(voc_xml("b.png", [("dog", 5, 6, 5, 6, 0)]))  # no <size>
    write_image(img / "b.png", 50, 40)
    out = tmp_path / "coco.json"
    assert main(["voc2coco", "--xml-dir", str(xml), "--images", str(img), "--out", str(out),
                 "--classes", "dog,cat"]) == 0
    coco = json.loads(out.read_text())
    assert coco["categories"] == [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == \
        [("a.jpg", 64, 48), ("b.png", 50, 40)]
    anns = [(a["image_id"], a["category_id"], a["bbox"], a["iscrowd"]) for a in coco["annotations"]]
    # x0 = xmin - 1, x1 = xmax: [11, 21, 30, 40] -> [10, 20, 20, 20]; a one-pixel box stays 1x1
    assert anns == [(1, 2, [10.0, 20.0, 20.0, 20.0], 0), (1, 1, [0.0, 0.0, 64.0, 48.0], 1),
                    (2, 1, [4.0, 5.0, 1.0, 1.0], 0)]
    assert coco["annotations"][0]["area"] == 400.0
    assert "dropped" not in capsys.readouterr().out


def test_voc2coco_reports_dropped_records(tmp_path, capsys):
    xml = tmp_path / "xml"
    xml.mkdir()
    (xml / "a.xml").write_text(voc_xml("a.jpg", [("cat", 30, 5, 10, 20, 0),  # xmax < xmin
                                                  ("cat", 1, 1, 10, 10, 0),
                                                  ("bird", 1, 1, 10, 10, 0)], size=(64, 48)))
    (xml / "b.xml").write_text(voc_xml("b.jpg", [("cat", 1, 1, 5, 5, 0)]))  # no size, no --images
    out = tmp_path / "coco.json"
    assert main(["voc2coco", "--xml-dir", str(xml), "--out", str(out), "--classes", "cat"]) == 0
    text = capsys.readouterr().out
    assert "dropped 4 record(s)" in text
    assert "1 x non-positive box width/height" in text and "a.xml: object 0 (cat)" in text
    assert "1 x class not in --classes" in text and "object 2 (bird)" in text
    assert "image dropped: no <size>" in text and "1 x object of a dropped image" in text
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 1 and [a["bbox"] for a in coco["annotations"]] == [[0, 0, 10, 10]]


@pytest.mark.parametrize("body, message", [
    ("<annotation><filename>a.jpg</filename", "a.xml: not valid XML"),
    (voc_xml("a.jpg", [("cat", "x", 1, 5, 5, 0)], size=(9, 9)),
     "a.xml: object 0 (cat): <xmin> is not a number: 'x'"),
])
def test_voc2coco_malformed_xml_is_one_line_error(tmp_path, capsys, body, message):
    (tmp_path / "a.xml").write_text(body)
    out = tmp_path / "coco.json"
    assert main(["voc2coco", "--xml-dir", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_read_voc_xml_keeps_float_corners(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(voc_xml("a.jpg", [("cat", 1.5, 2, 10.25, 20, 1)], size=(32, 24)))
    f = read_voc_xml(p)
    assert (f.filename, f.width, f.height) == ("a.jpg", 32, 24)
    assert f.objects[0].corners == (1.5, 2.0, 10.25, 20.0) and f.objects[0].difficult


# --------------------------------------------------------------------------- YOLO -> COCO

def test_yolo2coco_boxes_in_pixels_and_dropped_lines(tmp_path, capsys):
    img, lab = tmp_path / "images", tmp_path / "labels"
    write_image(img / "a.jpg", 100, 50)
    write_image(img / "empty.jpg", 20, 10)
    lab.mkdir()
    (lab / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.2 0.2\n\n5 0.5 0.5 0.1 0.1\n"
                               "0 0.5 0.5 0 0.1\n")
    (lab / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n\n")
    out = tmp_path / "coco.json"
    assert main(["yolo2coco", "--labels", str(lab), "--images", str(img), "--classes",
                 str(classes), "--out", str(out)]) == 0
    coco = json.loads(out.read_text())
    assert coco["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == \
        [("a.jpg", 100, 50), ("empty.jpg", 20, 10)]
    boxes = [(a["category_id"], a["bbox"]) for a in coco["annotations"]]
    assert boxes[0][0] == 1 and np.allclose(boxes[0][1], [40, 15, 20, 20])
    assert boxes[1][0] == 2 and np.allclose(boxes[1][1], [0, 0, 20, 10])  # clipped at the corner
    assert len(boxes) == 2
    text = capsys.readouterr().out
    assert "dropped 3 record(s)" in text
    assert "1 x class index out of range 0..1" in text and "a.txt:4 (class 5)" in text
    assert "1 x non-positive box width/height" in text and "a.txt:5" in text
    assert "1 x label file without an image" in text and "orphan.txt" in text
    assert "1 image(s) without a label file" in text


def test_yolo2coco_bad_number_is_one_line_error(tmp_path, capsys):
    write_image(tmp_path / "images/a.jpg", 10, 10)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 abc 0.2 0.2\n")
    (tmp_path / "classes.txt").write_text("cat\n")
    rc = main(["yolo2coco", "--labels", str(tmp_path / "labels"), "--images",
               str(tmp_path / "images"), "--classes", str(tmp_path / "classes.txt"),
               "--out", str(tmp_path / "coco.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "a.txt:2: values must be numbers" in err and err.count("\n") == 1


def test_nothing_converted_exits_1_and_writes_nothing(tmp_path, capsys):
    write_image(tmp_path / "images/a.jpg", 10, 10)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/a.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    (tmp_path / "classes.txt").write_text("cat\n")
    out = tmp_path / "coco.json"
    rc = main(["yolo2coco", "--labels", str(tmp_path / "labels"), "--images",
               str(tmp_path / "images"), "--classes", str(tmp_path / "classes.txt"),
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1 and "nothing converted" in captured.err
    assert "class index out of range" in captured.out
    assert not out.exists()


# --------------------------------------------------------------------------- COCO -> YOLO

def coco_dataset(tmp_path):
    images = [{"id": 7, "file_name": "a.jpg", "width": 640, "height": 480},
              {"id": 8, "file_name": "sub/b.png", "width": 333, "height": 251},
              {"id": 9, "file_name": "c.jpg", "width": 64, "height": 64}]
    anns = [
        {"id": 1, "image_id": 7, "category_id": 9, "bbox": [10.3, 20.7, 100.11, 50.9]},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0.0, 0.0, 640.0, 480.0], "iscrowd": 0},
        {"id": 3, "image_id": 8, "category_id": 3, "bbox": [300.123, 200.456, 32.877, 50.544]},
        {"id": 4, "image_id": 8, "category_id": 9, "bbox": [1, 1, 30, 30], "iscrowd": 1},
        {"id": 5, "image_id": 8, "category_id": 9, "bbox": [5, 5, 0, 10], "iscrowd": 0},
    ]
    cats = [{"id": 9, "name": "dog"}, {"id": 3, "name": "traffic light"}]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    img_dir = tmp_path / "images"
    for im in images:
        write_image(img_dir / im["file_name"], im["width"], im["height"])
    return path, img_dir


def test_coco_yolo_coco_round_trip_keeps_boxes_and_names(tmp_path, capsys):
    src, img_dir = coco_dataset(tmp_path)
    yolo = tmp_path / "yolo"
    assert main(["coco2yolo", "--annotations", str(src), "--out", str(yolo)]) == 0
    text = capsys.readouterr().out
    assert "1 x crowd region (iscrowd=1) has no YOLO equivalent" in text and "sub/b.png" in text
    assert "1 x non-positive bbox width/height" in text
    # contiguous labels by ascending category id: 3 -> 0, 9 -> 1
    assert (yolo / "classes.txt").read_text() == "traffic light\ndog\n"
    assert (yolo / "c.txt").read_text() == ""  # an image without objects still gets its file
    assert (yolo / "a.txt").read_text().splitlines()[1] == "0 0.5 0.5 1 1"

    back = tmp_path / "back.json"
    assert main(["yolo2coco", "--labels", str(yolo), "--images", str(img_dir), "--classes",
                 str(yolo / "classes.txt"), "--out", str(back)]) == 0
    coco = json.loads(back.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    got = sorted((i["file_name"], names[a["category_id"]], a["bbox"])
                 for i in coco["images"] for a in coco["annotations"] if a["image_id"] == i["id"])
    want = [("a.jpg", "dog", [10.3, 20.7, 100.11, 50.9]),
            ("a.jpg", "traffic light", [0, 0, 640, 480]),
            ("sub/b.png", "traffic light", [300.123, 200.456, 32.877, 50.544])]
    assert [(f, n) for f, n, _ in got] == [(f, n) for f, n, _ in want]
    np.testing.assert_allclose([b for *_, b in got], [b for *_, b in want], atol=1e-3, rtol=0)


def test_coco2yolo_label_file_collision_is_an_error(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8},
              {"id": 2, "file_name": "a.png", "width": 8, "height": 8}]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": [],
                                "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(DatasetError, match="'a.png' and 'a.jpg' both map to label file 'a.txt'"):
        coco_to_yolo([path])


# --------------------------------------------------------------------------- segmentation lines

def yolo_dataset(tmp_path, label_text, width=100, height=50):
    write_image(tmp_path / "images/a.jpg", width, height)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/a.txt").write_text(label_text)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    return ["yolo2coco", "--labels", str(tmp_path / "labels"), "--images",
            str(tmp_path / "images"), "--classes", str(tmp_path / "classes.txt"),
            "--out", str(tmp_path / "coco.json")]


def test_yolo2coco_polygon_lines_become_segmentations(tmp_path, capsys):
    """A rectangle and a clipped triangle as polygons, and a box line in the same file."""
    argv = yolo_dataset(tmp_path, "1 0.1 0.2 0.5 0.2 0.5 0.8 0.1 0.8\n"
                                  "0 0.5 0.5 0.2 0.4\n"
                                  "0 0.8 -0.2 1.1 0.6 0.7 0.6\n")
    assert main(argv) == 0
    text = capsys.readouterr().out
    rect, box, tri = json.loads((tmp_path / "coco.json").read_text())["annotations"]
    assert rect["category_id"] == 2 and rect["iscrowd"] == 0
    np.testing.assert_allclose(rect["segmentation"], [[10, 10, 50, 10, 50, 40, 10, 40]])
    np.testing.assert_allclose(rect["bbox"], [10, 10, 40, 30])
    assert rect["area"] == 1200  # the 40 x 30 pixels whose centres it covers
    assert "segmentation" not in box and box["area"] == pytest.approx(400)
    np.testing.assert_allclose(tri["segmentation"], [[80, 0, 100, 30, 70, 30]])  # clipped
    np.testing.assert_allclose(tri["bbox"], [70, 0, 30, 30])
    want = mask_utils.area(mask_utils.frPyObjects(tri["segmentation"], 50, 100))[0]
    assert tri["area"] == want and 0 < want < 30 * 30 / 2 + 30
    assert "1 x polygon(s) with points outside [0, 1], clipped to the image (e.g. " in text
    assert "a.txt:3)" in text
    assert "1 x label file(s) mixing box and polygon lines" in text
    assert "3 annotations (0 iscrowd, 2 with a segmentation)" in text


@pytest.mark.parametrize("line, reason", [
    ("0 0.1 0.2 0.3 0.4 0.5", "odd number of values after the class"),
    ("0 " + " ".join(["0.5"] * 55), "odd number of values after the class"),  # pose, 17 x 3
    ("0 0.1 0.2", "polygon with fewer than 3 points"),
    ("0", "polygon with fewer than 3 points"),
    ("0 0.1 0.2 nan 0.4 0.5 0.6", "non-finite polygon coordinate"),
    ("0 0.1 0.2 0.3 0.2 0.5 0.2", "polygon without area (non-positive box width/height)"),
])
def test_yolo2coco_bad_polygon_lines_are_counted_and_named(tmp_path, capsys, line, reason):
    argv = yolo_dataset(tmp_path, f"0 0.5 0.5 0.2 0.2\n{line}\n")
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "dropped 1 record(s)" in text and f"1 x {reason}" in text
    assert f"a.txt:2: {reason}" in text
    assert len(json.loads((tmp_path / "coco.json").read_text())["annotations"]) == 1


def segmented_coco(tmp_path):
    """Polygons with fractional points (one object in two parts), an RLE disc, an object without
    a mask, a crowd region, on two images."""
    disc = np.zeros((48, 64), np.uint8)
    cv2.circle(disc, (40, 20), 9, 1, -1)
    rle = mask_utils.encode(np.asfortranarray(disc))
    rle = {"size": [48, 64], "counts": rle["counts"].decode()}
    big = [12.25, 3.5, 60.75, 9.125, 33.5, 40.875, 7.0, 30.0]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 4, "bbox": [7.0, 3.5, 53.75, 37.375],
         "segmentation": [big]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [2.0, 2.0, 14.5, 20.0],
         "segmentation": [[2.0, 2.0, 4.0, 2.0, 3.0, 4.0], [5.5, 6.0, 16.5, 6.5, 10.0, 22.0]]},
        {"id": 3, "image_id": 2, "category_id": 2, "bbox": [31, 11, 19, 19], "segmentation": rle},
        {"id": 4, "image_id": 2, "category_id": 4, "bbox": [1, 1, 10, 10]},
        {"id": 5, "image_id": 2, "category_id": 4, "bbox": [20, 20, 5, 5], "iscrowd": 1,
         "segmentation": rle},
    ]
    images = [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}]
    path = tmp_path / "coco.json"
    cats = [{"id": 2, "name": "cat"}, {"id": 4, "name": "dog"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    for im in images:
        write_image(tmp_path / "images" / im["file_name"], 64, 48)
    return path, disc, big


def test_coco_yolo_coco_round_trip_of_polygons_and_rle(tmp_path, capsys):
    src, disc, big = segmented_coco(tmp_path)
    yolo = tmp_path / "yolo"
    assert main(["coco2yolo", "--annotations", str(src), "--out", str(yolo), "--segments"]) == 0
    text = capsys.readouterr().out
    assert "2 label files, 4 objects (3 as polygons), 2 classes" in text
    assert "1 x object(s) with several polygons: the largest written" in text
    assert "annotation id 2 (image a.jpg)" in text
    assert "1 x RLE mask(s) written as the outline of their largest part" in text
    assert "1 x label file(s) mixing polygon and box lines" in text and "(e.g. b.txt)" in text
    a_lines = (yolo / "a.txt").read_text().splitlines()
    assert [len(ln.split()) for ln in a_lines] == [9, 7]  # two polygons: 4 and 3 points
    back = tmp_path / "back.json"
    assert main(["yolo2coco", "--labels", str(yolo), "--images", str(tmp_path / "images"),
                 "--classes", str(yolo / "classes.txt"), "--out", str(back)]) == 0
    anns = json.loads(back.read_text())["annotations"]
    assert [len(a.get("segmentation", [])) for a in anns] == [1, 1, 1, 0]
    np.testing.assert_allclose(anns[0]["segmentation"][0], big, rtol=1e-3)
    np.testing.assert_allclose(anns[0]["bbox"], [7.0, 3.5, 53.75, 37.375], rtol=1e-3)
    assert anns[0]["area"] == mask_utils.area(mask_utils.frPyObjects([big], 48, 64))[0]
    np.testing.assert_allclose(anns[1]["segmentation"][0], [5.5, 6.0, 16.5, 6.5, 10.0, 22.0],
                               rtol=1e-3)
    # the RLE came back as a polygon covering exactly the disc's pixels
    assert anns[2]["area"] == disc.sum()
    back_mask = mask_utils.decode(mask_utils.frPyObjects(anns[2]["segmentation"], 48, 64))[..., 0]
    assert np.array_equal(back_mask, disc)
    np.testing.assert_allclose(anns[2]["bbox"], [31, 11, 19, 19], atol=1e-6)  # the disc's box
    np.testing.assert_allclose(anns[3]["bbox"], [1, 1, 10, 10], atol=1e-4)


def test_coco2yolo_without_segments_writes_boxes_and_says_so(tmp_path, capsys):
    src, _, _ = segmented_coco(tmp_path)
    assert main(["coco2yolo", "--annotations", str(src), "--out", str(tmp_path / "y")]) == 0
    text = capsys.readouterr().out
    assert "3 object(s) with a segmentation written as box lines (--segments" in text
    lines = [ln for p in ("a.txt", "b.txt") for ln in (tmp_path / "y" / p).read_text().splitlines()]
    assert len(lines) == 4 and all(len(ln.split()) == 5 for ln in lines)


def test_malformed_segmentation_keeps_its_box_line(tmp_path, capsys):
    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}]
    anns = [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
             "segmentation": [[1, 1, 6, 1, 6]]}]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "x"}]}))
    assert main(["coco2yolo", "--annotations", str(path), "--out", str(tmp_path / "y"),
                 "--segments"]) == 0
    text = capsys.readouterr().out
    assert ("1 x malformed segmentation (its box line written) (e.g. annotation id 9 (image a.jpg):"
            " polygon 0 has 5 numbers") in text
    assert (tmp_path / "y/a.txt").read_text() == "0 0.175 0.35 0.25 0.5\n"


def test_rle_to_polygon_matches_pycocotools_area_on_random_masks():
    """One-part masks without holes come back pixel for pixel; a mask in two parts with a hole
    gives its largest part, filled."""
    rng = np.random.default_rng(1)
    for i in range(60):
        mask = np.zeros((60, 80), np.uint8)
        centre = (int(rng.integers(5, 75)), int(rng.integers(5, 55)))
        if i % 3 == 0:
            cv2.circle(mask, centre, int(rng.integers(1, 25)), 1, -1)
        elif i % 3 == 1:
            cv2.ellipse(mask, centre, (int(rng.integers(1, 40)), int(rng.integers(1, 9))),
                        float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            end = (int(rng.integers(0, 80)), int(rng.integers(0, 60)))
            cv2.line(mask, centre, end, 1, int(rng.integers(1, 4)))
        rle = mask_utils.encode(np.asfortranarray(mask))
        seg = {"size": [60, 80], "counts": rle["counts"].decode()}
        xy = polygon_to_write(seg, 80, 60, NoteLog(), "")
        poly = mask_utils.frPyObjects([xy.ravel().tolist()], 60, 80)
        assert mask_utils.area(poly)[0] == mask_utils.area(rle) == mask.sum()
        assert np.array_equal(mask_utils.decode(poly)[..., 0], mask)
        ys, xs = np.nonzero(mask)  # the outline runs along the pixel edges: the mask's tight box
        assert xy.min(0).tolist() == [xs.min(), ys.min()]
        assert xy.max(0).tolist() == [xs.max() + 1, ys.max() + 1]
    ring = np.zeros((60, 80), np.uint8)
    cv2.circle(ring, (30, 30), 20, 1, -1)
    cv2.circle(ring, (30, 30), 8, 0, -1)
    cv2.rectangle(ring, (70, 5), (75, 10), 1, -1)
    seg = {"size": [60, 80],
           "counts": mask_utils.encode(np.asfortranarray(ring))["counts"].decode()}
    xy = polygon_to_write(seg, 80, 60, NoteLog(), "")
    filled = np.zeros_like(ring)
    cv2.circle(filled, (30, 30), 20, 1, -1)
    hole = int((filled > ring).sum())
    area = mask_utils.area(mask_utils.frPyObjects([xy.ravel().tolist()], 60, 80))[0]
    assert area == filled.sum() and area == ring.sum() + hole - 36  # the 6 x 6 part dropped
