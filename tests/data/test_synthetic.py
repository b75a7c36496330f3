"""The synthetic dataset: deterministic, valid COCO, covering what training and evaluation need."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data.synthetic import scene
from detect.data.synthetic.annotation import Drawn, annotation
from detect.data.synthetic.categories import CATEGORIES, KEYPOINT_NAMES, PERSON_ID
from detect.data.synthetic.scene import make_image
from detect.data.synthetic.shapes import person_pose
from detect.data.synthetic.write import generate

# pycocotools' decode under numpy 2 warns about its own __array__; nothing of ours.
REPO = Path(__file__).resolve().parents[2]
SIZE = 320
K = len(KEYPOINT_NAMES)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("synthetic"), n_train=60, n_val=30, size=SIZE, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _evaluate(gt: COCO, results: list[dict], iou_type: str) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        if iou_type == "keypoints":  # other categories have no num_keypoints: person only
            ev.params.catIds = [PERSON_ID]
            ev.params.kpt_oks_sigmas = np.full(K, 0.05)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate(tmp_path / name, n_train=5, n_val=3, size=160, seed=seed)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert len(a) == 5 + 3 + 2
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".json"))
    assert sum(a[k] != c[k] for k in a) >= len(a) - 1  # the empty image may still differ


def test_make_image_shape_and_stream_independence() -> None:
    image, anns = make_image(np.random.default_rng(7), 200)
    assert image.shape == (200, 200, 3) and image.dtype == np.uint8
    again, anns_again = make_image(np.random.default_rng(7), 200)
    assert np.array_equal(image, again) and anns == anns_again
    empty_image, empty = make_image(np.random.default_rng(7), 200, n_objects=0)
    assert empty == [] and empty_image.shape == (200, 200, 3)


@pytest.mark.parametrize("split", ["train", "val"])
def test_perfect_detections_score_ap_one(dataset: dict[str, Path], split: str) -> None:
    gt = _quiet_coco(dataset[split])
    anns = [a for a in gt.dataset["annotations"] if not a["iscrowd"]]
    boxes = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
              "score": 1.0} for a in anns]  # fmt: skip
    assert _evaluate(gt, boxes, "bbox")[0] == pytest.approx(1.0)
    kpts = [{"image_id": a["image_id"], "category_id": PERSON_ID, "keypoints": a["keypoints"],
             "score": 1.0} for a in anns
            if a["category_id"] == PERSON_ID and a["num_keypoints"]]  # fmt: skip
    assert _evaluate(gt, kpts, "keypoints")[0] == pytest.approx(1.0)


@pytest.mark.parametrize("split", ["train", "val"])
def test_small_medium_large_all_present(dataset: dict[str, Path], split: str) -> None:
    areas = [a["area"] for a in json.loads(dataset[split].read_text())["annotations"]
             if not a["iscrowd"]]  # fmt: skip
    assert any(a < 32**2 for a in areas)
    assert any(32**2 <= a <= 96**2 for a in areas)
    assert any(a > 96**2 for a in areas)


@pytest.mark.parametrize("split", ["train", "val"])
def test_some_images_are_empty(dataset: dict[str, Path], split: str) -> None:
    data = json.loads(dataset[split].read_text())
    used = {a["image_id"] for a in data["annotations"]}
    empty = [im for im in data["images"] if im["id"] not in used]
    assert 1 <= len(empty) <= 0.12 * len(data["images"])


def test_boxes_inside_image_and_ids_unique(dataset: dict[str, Path]) -> None:
    data = json.loads(dataset["train"].read_text())
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)
    assert {a["image_id"] for a in data["annotations"]} <= {im["id"] for im in data["images"]}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= SIZE and y + h <= SIZE
        assert a["area"] == pytest.approx(w * h)
    assert any(a["iscrowd"] for a in data["annotations"])


@pytest.mark.parametrize("split", ["train", "val"])
def test_person_keypoints_consistent(dataset: dict[str, Path], split: str) -> None:
    anns = json.loads(dataset[split].read_text())["annotations"]
    persons = [a for a in anns if a["category_id"] == PERSON_ID]
    assert persons
    assert all("keypoints" not in a for a in anns if a["category_id"] != PERSON_ID)
    all_v = []
    for a in persons:
        kp = np.array(a["keypoints"], dtype=float).reshape(K, 3)
        v = kp[:, 2]
        assert set(v) <= {0, 1, 2}
        assert a["num_keypoints"] == int((v > 0).sum())
        assert (kp[v == 0, :2] == 0).all()
        x, y, w, h = a["bbox"]
        labelled = kp[v > 0, :2]
        assert ((labelled >= [x, y]) & (labelled <= [x + w, y + h])).all()
        all_v += v.tolist()
    if split == "train":  # enough figures for occluded and out-of-image keypoints to occur
        assert 0 in all_v and 1 in all_v and 2 in all_v


def test_keypoint_names_have_left_right_pairs_and_skeleton() -> None:
    person = next(c for c in CATEGORIES if c["id"] == PERSON_ID)
    names = person["keypoints"]
    lefts = [n for n in names if n.startswith("left_")]
    assert len(lefts) >= 2
    assert all(n.replace("left_", "right_", 1) in names for n in lefts)
    assert sum(n.startswith("right_") for n in names) == len(lefts)
    assert all(1 <= i <= len(names) and 1 <= j <= len(names) for i, j in person["skeleton"])
    assert all("keypoints" not in c for c in CATEGORIES if c["id"] != PERSON_ID)


def test_category_ids_non_contiguous(dataset: dict[str, Path]) -> None:
    ids = sorted(c["id"] for c in json.loads(dataset["val"].read_text())["categories"])
    assert len(ids) >= 4 and len(set(ids)) == len(ids)
    assert ids != list(range(ids[0], ids[0] + len(ids)))


def test_left_is_image_right_when_facing_camera() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        kpts, front = person_pose(rng)
        seen.add(front)
        for part in ("shoulder", "hip"):
            left, right = (KEYPOINT_NAMES.index(f"{side}_{part}") for side in ("left", "right"))
            assert (kpts[left, 0] > kpts[right, 0]) == front
    assert seen == {True, False}


def test_keypoint_visibility_hand_case() -> None:
    """A person (drawn first) whose wrist pixel a later box covers; one ankle is off the image.
    The same person under 32 x 32 pixels carries no keypoint labels (COCO's rule)."""
    size = 48
    owner = np.full((size, size), -1, np.int32)
    kpts = np.tile([[2, 3]], (K, 1))
    kpts[KEYPOINT_NAMES.index("left_wrist")] = [6, 6]
    kpts[KEYPOINT_NAMES.index("right_ankle")] = [50, 4]
    mask = np.zeros((size, size), bool)
    mask[3:40, 2:40] = True
    owner[mask] = 0
    owner[5:8, 5:8] = 1  # the later object
    ann = annotation(Drawn(PERSON_ID, mask, kpts), 0, owner)
    kp = np.array(ann["keypoints"]).reshape(K, 3)
    assert kp[KEYPOINT_NAMES.index("left_wrist")].tolist() == [6.5, 6.5, 1]
    assert kp[KEYPOINT_NAMES.index("right_ankle")].tolist() == [0, 0, 0]
    assert kp[KEYPOINT_NAMES.index("head")].tolist() == [2.5, 3.5, 2]
    assert ann["num_keypoints"] == K - 1
    assert ann["bbox"] == [2.0, 3.0, 38.0, 37.0] and ann["area"] == 38.0 * 37.0
    mask[28:] = False  # 38 x 25 pixels: small
    small = annotation(Drawn(PERSON_ID, mask, kpts), 0, owner)
    assert small["area"] < 32 ** 2 and small["num_keypoints"] == 0 and not any(small["keypoints"])


def test_cli_writes_dataset_and_rejects_bad_size(tmp_path: Path) -> None:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    cmd = [sys.executable, str(REPO / "tools" / "make_synthetic.py"), "--out", str(tmp_path)]
    ok = subprocess.run(cmd + ["--train", "2", "--val", "1", "--size", "96"], env=env,
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads((tmp_path / "annotations" / "val.json").read_text())["images"]) == 1
    assert len(list((tmp_path / "train").glob("*.jpg"))) == 2
    bad = subprocess.run(cmd + ["--size", "8"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--size" in bad.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("split", ["train", "val"])
def test_small_persons_carry_no_keypoints_as_in_coco(dataset: dict[str, Path], split: str) -> None:
    persons = [a for a in json.loads(dataset[split].read_text())["annotations"]
               if a["category_id"] == PERSON_ID]
    small = [a for a in persons if a["area"] < 32 ** 2]
    assert small and all(a["num_keypoints"] == 0 and not any(a["keypoints"]) for a in small)
    assert all(a["num_keypoints"] > 0 for a in persons if a["area"] >= 32 ** 2)


def test_which_way_a_figure_faces_is_visible() -> None:
    """A large figure alone: from the front its head is a light face and its torso a shirt of
    another colour than its limbs; from behind, dark hair and a torso in the limbs' colour."""
    seen = {}
    for i in range(40):
        image, anns = make_image(np.random.default_rng([7, i]), SIZE, n_objects=1)
        if not anns or anns[0]["category_id"] != PERSON_ID or anns[0]["area"] < 90 ** 2:
            continue
        kp = np.array(anns[0]["keypoints"]).reshape(K, 3)
        head, torso = kp[0, :2].astype(int), kp[[1, 2, 7, 8], :2].mean(0).astype(int)
        knee = kp[KEYPOINT_NAMES.index("left_knee"), :2].astype(int)
        front = kp[1, 0] > kp[2, 0]  # the own left on the image right: facing the camera
        pixel = {n: image[y, x].astype(float) for n, (x, y) in
                 (("head", head), ("torso", torso), ("knee", knee))}
        seen[front] = (pixel["head"].mean(), np.abs(pixel["torso"] - pixel["knee"]).max())
    assert set(seen) == {True, False}
    assert seen[True][0] > seen[False][0] + 40  # light face vs dark hair
    assert seen[True][1] > 30 and seen[False][1] < 40  # shirt vs plain torso


def _decoded(ann: dict) -> np.ndarray:
    """[H, W] bool: the annotation's segmentation decoded by pycocotools."""
    seg = ann["segmentation"]
    assert isinstance(seg["counts"], str) and len(seg["size"]) == 2
    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


def _tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def test_mask_is_what_later_objects_leave_visible_hand_case() -> None:
    """Box A drawn first, then B over A's right columns, then C overlapping nothing: A's mask loses
    those columns (its tight box shrinks, its bbox does not); B and C keep all their pixels."""
    size = 16
    masks = [np.zeros((size, size), bool) for _ in range(3)]
    masks[0][2:10, 2:10] = True
    masks[1][4:8, 7:13] = True  # covers A's columns 7..9 in rows 4..7
    masks[1][2:4, 7:10] = True  # and rows 2..3: A keeps only columns 2..6 above row 8
    masks[2][12:15, 0:3] = True
    owner = np.full((size, size), -1, np.int32)
    for i, m in enumerate(masks):
        owner[m] = i
    anns = [annotation(Drawn(3, m), i, owner) for i, m in enumerate(masks)]
    want_a = masks[0].copy()
    want_a[2:8, 7:10] = False
    assert np.array_equal(_decoded(anns[0]), want_a)
    assert anns[0]["bbox"] == [2.0, 2.0, 8.0, 8.0] and anns[0]["area"] == 64.0  # box unchanged
    assert _tight_box(want_a) == [2.0, 2.0, 8.0, 8.0]  # rows 8..9 still reach column 9
    assert all(np.array_equal(_decoded(anns[i]), masks[i]) for i in (1, 2))
    assert anns[0]["segmentation"]["size"] == [size, size]
    masks[1][8:10, 7:10] = True  # now B hides A's columns 7..9 entirely
    owner[masks[1]] = 1
    covered = annotation(Drawn(3, masks[0]), 0, owner)
    assert _tight_box(_decoded(covered)) == [2.0, 2.0, 5.0, 8.0] and covered["bbox"][2] == 8.0


def test_masks_equal_drawn_pixels_minus_later_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-derived from each object's drawn pixels (not from the scene's owner map): object i shows
    its pixels minus the union of the objects drawn after it. Crowd clusters included."""
    drawn: list[Drawn] = []

    def recording(obj: Drawn, index: int, owner: np.ndarray) -> dict:
        drawn.append(obj)
        return annotation(obj, index, owner)

    monkeypatch.setattr(scene, "annotation", recording)
    seen_occluded = seen_crowd = 0
    for i in range(40):
        drawn.clear()
        _, anns = make_image(np.random.default_rng([11, i]), 160, crowd_prob=0.3)
        later = np.zeros((160, 160), bool)
        for obj, ann in reversed(list(zip(drawn, anns))):
            visible = obj.mask & ~later
            assert np.array_equal(_decoded(ann), visible)
            seen_occluded += bool((obj.mask & later).any())
            seen_crowd += ann["iscrowd"]
            later |= obj.mask
    assert seen_occluded >= 10 and seen_crowd >= 5


def test_a_lone_object_has_a_mask_whose_tight_box_is_its_box() -> None:
    lone = 0
    for i in range(30):
        _, anns = make_image(np.random.default_rng([12, i]), 160, n_objects=1)
        for a in anns:  # a placement may fail: then there is none
            m = _decoded(a)
            assert _tight_box(m) == a["bbox"] and m.sum() <= a["area"]
            lone += 1
    assert lone >= 25


@pytest.mark.parametrize("split", ["train", "val"])
def test_masks_of_the_written_set(dataset: dict[str, Path], split: str) -> None:
    """Every annotation has a non-empty RLE inside its box; the masks of an image are disjoint;
    an object whose mask is as wide and tall as its box is the common case; crowds have masks."""
    data = json.loads(dataset[split].read_text())
    by_image: dict[int, np.ndarray] = {}
    same_box = 0
    for a in data["annotations"]:
        m = _decoded(a)
        assert a["segmentation"]["size"] == [SIZE, SIZE] and m.any()
        x, y, w, h = (int(v) for v in a["bbox"])
        assert not m.sum() - m[y:y + h, x:x + w].sum()  # inside the box
        assert m.sum() <= a["area"] == w * h
        assert mask_utils.area(mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))) == m.sum()
        same_box += _tight_box(m) == a["bbox"]
        seen = by_image.setdefault(a["image_id"], np.zeros((SIZE, SIZE), bool))
        assert not (seen & m).any()  # disjoint
        seen |= m
    assert same_box >= 0.8 * len(data["annotations"])
    assert any(a["iscrowd"] for a in data["annotations"]) == (split == "train")


def test_perfect_masks_score_ap_one(dataset: dict[str, Path]) -> None:
    gt = _quiet_coco(dataset["val"])
    masks = [{"image_id": a["image_id"], "category_id": a["category_id"],
              "segmentation": a["segmentation"], "score": 1.0}
             for a in gt.dataset["annotations"] if not a["iscrowd"]]  # fmt: skip
    assert _evaluate(gt, masks, "segm")[0] == pytest.approx(1.0)
