import json

import cv2
import numpy as np
import pytest

from detect.cli.convert import main
from detect.data.annotations import DatasetError
from detect.formats import coco_to_yolo, read_voc_xml


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
