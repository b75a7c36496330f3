import json
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detect.data.annotations import DatasetError, flip_pairs_from_names, load_annotations
from detect.data.collate import Collate
from detect.data.dataset import BadImage, CocoDetection
from detect.data.image_io import ImageError, read_image
from detect.data.transforms import Sample, TrainTransform, ValTransform, hflip, letterbox
from detect.structures import map_to_original


# --------------------------------------------------------------------------- fixtures

def make_dataset(tmp_path, anns, images=None, categories=None, sizes=None):
    """A small COCO dataset on disk; returns (images_dir, annotation path)."""
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    images = images or [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}]
    for im in images:
        p = img_dir / im["file_name"]
        if not p.exists() and "/" not in im["file_name"]:
            cv2.imwrite(str(p), np.full((im["height"], im["width"], 3), 90, np.uint8))
    categories = categories or [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return img_dir, path


def ann(i, bbox, cat=3, **kw):
    return {"id": i, "image_id": 1, "category_id": cat, "bbox": bbox, **kw}


# --------------------------------------------------------------------------- coco-mini

def test_category_ids_round_trip_on_coco_mini(coco_mini):
    a = load_annotations([str(coco_mini["val_instances"])])
    cats = json.loads(coco_mini["val_instances"].read_text())["categories"]
    ids = sorted(c["id"] for c in cats)
    assert a.categories.num_classes == 80 and max(ids) == 90  # COCO ids are not contiguous
    assert [a.categories.category_id(a.categories.label(i)) for i in ids] == ids
    assert [a.categories.label(i) for i in ids] == list(range(80))


def test_merged_person_sample_has_boxes_and_17_keypoints(coco_mini):
    files = [str(coco_mini["train_instances"]), str(coco_mini["train_keypoints"])]
    a = load_annotations(files)
    kp = json.loads(coco_mini["train_keypoints"].read_text())
    inst = json.loads(coco_mini["train_instances"].read_text())
    person = next(x for x in kp["annotations"] if x["num_keypoints"] > 3 and not x["iscrowd"])
    rec = next(r for r in a.images if r.id == person["image_id"])
    n_objects = sum(1 for x in inst["annotations"] if x["image_id"] == rec.id and not x["iscrowd"])
    assert len(rec.boxes) == n_objects and rec.keypoints.shape == (n_objects, 17, 3)
    x, y, w, h = person["bbox"]
    row = int(np.argmin(np.abs(rec.boxes - [x, y, x + w, y + h]).sum(1)))
    np.testing.assert_allclose(rec.boxes[row], [x, y, x + w, y + h], atol=1e-3)
    expected = np.asarray(person["keypoints"], np.float32).reshape(17, 3)
    np.testing.assert_allclose(rec.keypoints[row], expected)
    assert a.categories.names[rec.labels[row]] == "person"
    others = rec.labels != rec.labels[row]
    assert (rec.keypoints[others][..., 2] == 0).all()  # non-person objects: visibility 0
    assert a.keypoints.flip_pairs[0] == (1, 2)  # left_eye <-> right_eye


def test_coco_mini_loads_and_collates(coco_mini):
    ds = CocoDetection.from_files(coco_mini["val_images"], [str(coco_mini["val_instances"]),
                                  str(coco_mini["val_keypoints"])], ValTransform(256))
    batch = Collate(128)([ds[i] for i in range(3)])
    assert batch.images.shape == (3, 3, 256, 256) and batch.images.dtype == torch.uint8
    assert all(t.keypoints.shape[1:] == (17, 3) for t in batch.targets)


# --------------------------------------------------------------------------- transforms

def test_flip_swaps_left_right_keypoints_and_mirrors_exactly():
    img = np.zeros((10, 20, 3), np.uint8)
    img[0, 0] = 255
    kpts = np.array([[[2.0, 3.0, 2], [5.0, 6.0, 1], [7.0, 8.0, 2], [0.0, 0.0, 0]]], np.float32)
    s = Sample(img, np.array([[1.0, 2.0, 11.0, 9.0]], np.float32), np.array([0]), kpts,
               np.array([[0.0, 0.0, 4.0, 4.0]], np.float32))
    out = hflip(s, flip_pairs=((1, 2),))
    assert out.image[0, 19, 0] == 255 and out.image[0, 0, 0] == 0
    np.testing.assert_array_equal(out.boxes, [[9.0, 2.0, 19.0, 9.0]])
    np.testing.assert_array_equal(out.ignore_boxes, [[16.0, 0.0, 20.0, 4.0]])
    # point 0 mirrored in place; points 1 and 2 mirrored and swapped; unlabelled stays (0, 0, 0)
    np.testing.assert_array_equal(out.keypoints[0], [[18, 3, 2], [13, 8, 2], [15, 6, 1], [0, 0, 0]])


def test_letterbox_inverse_mapping_returns_original_coordinates():
    rng = np.random.default_rng(0)
    for h, w in [(480, 640), (333, 211), (100, 100)]:
        boxes = np.sort(rng.uniform(0, min(h, w), (5, 4)).astype(np.float32).reshape(5, 2, 2),
                        axis=1).reshape(5, 4)
        kpts = np.concatenate([rng.uniform(0, min(h, w), (5, 3, 2)), np.full((5, 3, 1), 2)],
                              -1).astype(np.float32)
        s = Sample(np.zeros((h, w, 3), np.uint8), boxes, np.zeros(5, np.int64), kpts,
                   np.zeros((0, 4), np.float32))
        out = letterbox(s, 320)
        assert out.image.shape == (320, 320, 3)
        back = map_to_original(torch.from_numpy(out.boxes), out.scale, out.offset)
        np.testing.assert_allclose(back.numpy(), boxes, atol=1e-4)
        kback = map_to_original(torch.from_numpy(out.keypoints[..., :2]), out.scale, out.offset)
        np.testing.assert_allclose(kback.numpy(), kpts[..., :2], atol=1e-4)


def test_train_transform_keeps_objects_aligned_and_in_image():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 90], [200, 50, 290, 190], [0, 0, 3, 3]], np.float32)
    # each object's keypoints sit at its own box centre, so alignment is checkable
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    kpts = np.concatenate([np.repeat(centres[:, None], 2, 1), np.full((3, 2, 1), 2.0)], -1)
    s = Sample(img, boxes, np.array([0, 1, 2]), kpts.astype(np.float32), np.zeros((0, 4), np.float32))
    t = TrainTransform(128, scale_jitter=(0.5, 1.5), flip_pairs=((0, 1),))
    for seed in range(20):
        out = t(s, np.random.default_rng(seed))
        assert out.image.shape == (128, 128, 3)
        assert len(out.boxes) == len(out.labels) == len(out.keypoints)
        assert (out.boxes >= 0).all() and (out.boxes <= 128).all()
        assert ((out.boxes[:, 2:] - out.boxes[:, :2]) >= 1).all()
        for b, k in zip(out.boxes, out.keypoints):
            vis = k[:, 2] > 0
            inside = (k[vis, 0] >= b[0] - 1e-3) & (k[vis, 0] <= b[2] + 1e-3)
            assert inside.all()
        assert ((out.keypoints[..., 2] == 0) | ((out.keypoints[..., :2] >= 0).all(-1))).all()


# --------------------------------------------------------------------------- validation

def test_crowd_becomes_ignore_region_and_empty_images_are_kept(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}]
    d, p = make_dataset(tmp_path, [ann(1, [1, 2, 10, 10]), ann(2, [20, 20, 10, 10], iscrowd=1)],
                        images=images)
    a = load_annotations([str(p)])
    assert len(a.images) == 2
    np.testing.assert_allclose(a.images[0].boxes, [[1, 2, 11, 12]])
    np.testing.assert_allclose(a.images[0].ignore_boxes, [[20, 20, 30, 30]])
    assert len(a.images[1].boxes) == 0
    assert len(load_annotations([str(p)], keep_empty=False).images) == 1


def test_degenerate_boxes_are_dropped_and_counted_partial_clipped(tmp_path):
    anns = [ann(1, [0, 0, 0, 5]), ann(2, [1, 1, float("nan"), 3]), ann(3, []),
            ann(4, [100, 100, 5, 5]), ann(5, [-5, -5, 20, 20]), ann(6, [1, 1, -2, 4])]
    _, p = make_dataset(tmp_path, anns)
    a = load_annotations([str(p)])
    np.testing.assert_allclose(a.images[0].boxes, [[0, 0, 15, 15]])
    assert sum(a.dropped.values()) == 5
    assert a.dropped["non-positive bbox width/height"] == 2


@pytest.mark.parametrize("anns,images,match", [
    ([ann(1, [1, 1, 5, 5]), ann(1, [2, 2, 5, 5])], None, r"annotations\[1\]: duplicate annotation id 1"),
    ([ann(1, [1, 1, 5, 5], cat=4)], None, "annotation id 1: unknown category_id 4"),
    ([{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2, 2]}], None, "unknown image_id 7"),
    ([ann(1, [1, 1, 5, 5], cat=9, keypoints=[1, 2, 2])], None, "'keypoints' must have 6 numbers"),
    ([], [{"id": 1, "file_name": "../x.jpg", "width": 5, "height": 5}], "escapes the image folder"),
    ([], [{"id": 1, "file_name": "/etc/x.jpg", "width": 5, "height": 5}], "escapes the image folder"),
    ([ann(1, "oops")], None, "'bbox' must be a list"),
])
def test_structural_errors_name_file_and_record(tmp_path, anns, images, match):
    cats = [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog", "keypoints": ["left_a", "right_a"]}]
    _, p = make_dataset(tmp_path, anns, images=images, categories=cats)
    with pytest.raises(DatasetError, match=match) as e:
        load_annotations([str(p)])
    assert "ann.json" in str(e.value) and "\n" not in str(e.value)


def test_missing_image_file_and_symlink_escape(tmp_path):
    images = [{"id": 1, "file_name": "missing.jpg", "width": 5, "height": 5}]
    d, p = make_dataset(tmp_path, [], images=images)
    (d / "missing.jpg").unlink()
    with pytest.raises(DatasetError, match="missing.jpg: image file not found"):
        CocoDetection.from_files(d, [str(p)], ValTransform(64))
    outside = tmp_path / "outside.jpg"
    cv2.imwrite(str(outside), np.zeros((5, 5, 3), np.uint8))
    os.symlink(outside, d / "link.jpg")
    images = [{"id": 1, "file_name": "link.jpg", "width": 5, "height": 5}]
    d, p = make_dataset(tmp_path, [], images=images)
    with pytest.raises(DatasetError, match="escapes the image folder"):
        CocoDetection.from_files(d, [str(p)], ValTransform(64))


def test_conflicting_boxes_across_files_are_an_error(tmp_path):
    _, p1 = make_dataset(tmp_path, [ann(1, [1, 1, 5, 5])])
    p2 = tmp_path / "kp.json"
    p2.write_text(json.dumps({"images": [], "categories": [],
                              "annotations": [ann(1, [2, 2, 5, 5], keypoints=[])]}))
    with pytest.raises(DatasetError, match="annotation id 1 has bbox"):
        load_annotations([str(p1), str(p2)])


def test_flip_pairs_from_names():
    assert flip_pairs_from_names(["nose", "left_eye", "right_eye", "left_x"]) == ((1, 2),)


# --------------------------------------------------------------------------- images

def test_read_image_converts_modes_and_applies_exif(tmp_path):
    gray = tmp_path / "g.png"
    cv2.imwrite(str(gray), np.full((4, 6), 77, np.uint8))
    rgba = tmp_path / "a.png"
    cv2.imwrite(str(rgba), np.dstack([np.full((4, 6, 3), (10, 20, 30), np.uint8),
                                      np.zeros((4, 6), np.uint8)]))
    deep = tmp_path / "d.png"
    cv2.imwrite(str(deep), np.full((4, 6), 256 * 200, np.uint16))
    pal = tmp_path / "p.png"
    Image.new("P", (6, 4), 0).save(pal)
    for p in (gray, rgba, deep, pal):
        img = read_image(p)
        assert img.shape == (4, 6, 3) and img.dtype == np.uint8, p
    assert (read_image(gray) == 77).all()
    assert tuple(read_image(rgba)[0, 0]) == (30, 20, 10)  # BGR on disk -> RGB
    assert (read_image(deep) == 200).all()
    rot = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.new("RGB", (6, 4)).save(rot, exif=exif)
    assert read_image(rot).shape == (6, 4, 3)


def test_bad_image_files_raise_naming_the_path(tmp_path):
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "t.jpg"
    text.write_text("not an image")
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((300, 300, 3), np.uint8))
    with pytest.raises(ImageError, match="e.jpg: empty file"):
        read_image(empty)
    with pytest.raises(ImageError, match="t.jpg: not a readable image"):
        read_image(text)
    with pytest.raises(ImageError, match="exceeds the limit"):
        read_image(big, max_pixels=1000)


def test_bad_image_in_dataset_is_skipped_and_reported(tmp_path):
    d, p = make_dataset(tmp_path, [ann(1, [1, 1, 5, 5])])
    (d / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = CocoDetection.from_files(d, [str(p)], ValTransform(64))
    assert isinstance(ds[0], BadImage)
    batch = Collate(32)([ds[0]])
    assert batch.images.shape[0] == 0 and "a.jpg" in batch.skipped[0]
    assert len(ds.check_images(drop_unreadable=True)) == 1 and len(ds) == 0
    ds = CocoDetection.from_files(d, [str(p)], ValTransform(64))
    with pytest.raises(DatasetError, match="a.jpg: not a readable image"):
        ds.check_images(drop_unreadable=False)


def test_exif_size_mismatch_is_an_error_naming_the_file(tmp_path):
    images = [{"id": 1, "file_name": "r.jpg", "width": 6, "height": 4}]
    d, p = make_dataset(tmp_path, [], images=images)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 4x6
    Image.new("RGB", (6, 4)).save(d / "r.jpg", exif=exif)
    ds = CocoDetection.from_files(d, [str(p)], ValTransform(64))
    with pytest.raises(DatasetError, match="r.jpg: image is 4x6 after EXIF orientation"):
        ds.check_images(drop_unreadable=True)
    assert isinstance(ds[0], BadImage)


def test_collate_pads_to_multiple_of_divisor():
    s1 = Sample(np.ones((50, 70, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                None, np.zeros((0, 4), np.float32))
    s2 = Sample(np.ones((130, 20, 3), np.uint8), np.array([[1, 2, 3, 4]], np.float32),
                np.array([1]), None, np.zeros((0, 4), np.float32))
    b = Collate(64)([s1, s2])
    assert b.images.shape == (2, 3, 192, 128)
    assert b.image_sizes == [(50, 70), (130, 20)]
    assert b.images[0, 0, 49, 69] == 1 and b.images[0, 0, 50, 0] == 114
