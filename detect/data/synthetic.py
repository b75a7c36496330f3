"""A small synthetic COCO-format dataset: shapes and stick figures on cluttered backgrounds.

Every image is drawn with OpenCV from its own random stream ``default_rng([seed, split, index])``,
so a seed gives byte-identical JSON and JPEG files, and any image can be regenerated alone.

Categories (non-contiguous ids, so the id <-> label mapping is exercised):
``person`` (1, a stick figure with 13 keypoints), ``circle`` (3), ``box`` (7, a rotated
rectangle) and ``triangle`` (10). Colours come from one distribution for all of them: the class is
in the shape, not the colour.

Conventions (see ``data/README.md``):

* Objects are drawn one after another, so later objects occlude earlier ones. An annotation keeps
  the full tight box of everything its object drew inside the image (occluded parts included;
  parts outside the image are cut off, as in COCO). No object is left less than 35 % visible.
* ``area`` is the box area ``w * h``; it sets the COCO small/medium/large range and the OKS scale.
* Keypoint visibility: 2 visible, 1 inside the image but covered by a later-drawn object,
  0 outside the image (then x = y = 0).
* A keypoint drawn at pixel (i, j) is annotated at (i + 0.5, j + 0.5): pixel i covers [i, i + 1)
  in COCO's continuous coordinates, like the box edges.
* ``left_*`` is the figure's own left. A figure facing the camera has its left shoulder and hip
  on the image right; a figure seen from behind on the image left. A horizontal flip with swapped
  left/right labels keeps this rule true. Which way a figure faces is visible at 320 px, as it is
  on real people: from the front, a light face with eyes and a mouth and a shirt front (the torso
  filled in a second colour); from behind, dark hair and a plain torso in the body's colour.
* As in COCO ("crowds and small objects will have num_keypoints = 0"), persons whose box area is
  under 32^2 carry no keypoint labels (all ``v = 0``); COCO's keypoint evaluation ignores them.
* 1 image in 12 has no object. In the train split 1 image in 20 holds a cluster of tiny circles
  annotated as one ``iscrowd = 1`` box of category circle (val has none).
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detect.io import atomic_write_text

PERSON_ID = 1
KEYPOINT_NAMES: tuple[str, ...] = (
    "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
    "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# 1-based keypoint index pairs, as in COCO's ``skeleton`` field.
SKELETON: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 3), (2, 3), (2, 4), (4, 6), (3, 5), (5, 7),
    (2, 8), (3, 9), (8, 9), (8, 10), (10, 12), (9, 11), (11, 13),
)  # fmt: skip
CATEGORIES: tuple[dict, ...] = (
    {"id": PERSON_ID, "name": "person", "supercategory": "person",
     "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(p) for p in SKELETON]},
    {"id": 3, "name": "circle", "supercategory": "shape"},
    {"id": 7, "name": "box", "supercategory": "shape"},
    {"id": 10, "name": "triangle", "supercategory": "shape"},
)  # fmt: skip
CATEGORY_IDS = {c["name"]: c["id"] for c in CATEGORIES}
_CATEGORY_P = (0.34, 0.22, 0.22, 0.22)  # persons a little more often: they train the keypoint head

# sqrt(box area) ranges in pixels: COCO small (< 32), medium (32..96) and large (> 96).
AREA_BANDS: tuple[tuple[float, float], ...] = ((10.0, 28.0), (36.0, 88.0), (104.0, 170.0))
EMPTY_EVERY = 12  # image i of a split has no object when i % EMPTY_EVERY == EMPTY_EVERY // 2
MIN_VISIBLE = 0.35  # a later object may not leave an earlier one less visible than this
JPEG_QUALITY = 90
MIN_KEYPOINT_AREA = 32.0**2  # COCO: small persons carry no keypoint labels


@dataclass
class _Shape:
    """One object's geometry, in unit size around the origin until `_scaled` places it.

    ``points``: [P, 2] float polygon (box, triangle), [1, 2] centre (circle) or [K, 2] keypoints
    (person). ``radius``: circle or head radius. ``front``: a person faces the camera.
    """

    kind: str
    points: np.ndarray
    radius: float = 0.0
    front: bool = True

    def extent(self) -> np.ndarray:
        """[4] x0, y0, x1, y1 covered by the drawing (approximate for lines)."""
        lo, hi = self.points.min(0), self.points.max(0)
        if self.kind in ("circle", "person"):
            head = self.points[0]
            lo, hi = np.minimum(lo, head - self.radius), np.maximum(hi, head + self.radius)
        return np.concatenate([lo, hi])


@dataclass
class _Drawn:
    """An object as drawn: its pixels (before occlusion) and its keypoint pixels [K, 2] int."""

    category_id: int
    mask: np.ndarray
    keypoints: np.ndarray | None = None
    iscrowd: int = 0


def _random_colour(rng: np.random.Generator, sat: tuple[int, int], val: tuple[int, int]) -> tuple:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(*sat), rng.integers(*val)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """[size, size, 3] float32: a gradient, low-frequency blotches and fine grain."""
    c0, c1 = rng.uniform(30, 220, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    t = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]  # [H, W]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    # Per channel then merged: numpy broadcasting over a last axis of 3 is slow.
    img = cv2.merge([a + (b - a) * t for a, b in zip(c0.tolist(), c1.tolist())])  # [H, W, 3]
    grid = rng.standard_normal((rng.integers(3, 9),) * 2 + (3,), dtype=np.float32)
    img += cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) * rng.uniform(8, 30)
    # Grain correlated over a few pixels: half-resolution noise, upsampled.
    half = (size + 1) // 2
    grain = rng.standard_normal((half, half, 3), dtype=np.float32) * rng.uniform(3, 10)
    img += cv2.resize(grain, (size, size), interpolation=cv2.INTER_LINEAR)
    return img


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draws random lines and soft blobs in place: edges that are no object."""
    size = img.shape[0]
    for _ in range(rng.integers(2, 10)):
        p, q = rng.integers(-size // 4, size + size // 4, (2, 2))
        colour = _random_colour(rng, (0, 200), (40, 255))
        cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), colour, int(rng.integers(1, 4)))
    # Blobs are drawn and blurred at 1/4 resolution (cheap), then upsampled.
    small = max(size // 4, 8)
    blobs = np.zeros((small, small, 3), np.float32)
    for _ in range(rng.integers(1, 5)):
        centre = tuple(int(c) for c in rng.integers(0, small, 2))
        axes = tuple(int(a) for a in rng.integers(max(small // 20, 1), small // 5 + 2, 2))
        colour = _random_colour(rng, (0, 255), (40, 255))
        cv2.ellipse(blobs, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    alpha = (blobs.max(-1) > 0).astype(np.float32)
    blobs, alpha = (cv2.resize(cv2.GaussianBlur(a, (0, 0), small / 40), (size, size))
                    for a in (blobs, alpha))  # fmt: skip
    img *= cv2.merge([1 - 0.6 * alpha] * 3)
    img += 0.6 * blobs


def _unit_polygon(rng: np.random.Generator, kind: str) -> np.ndarray:
    """[P, 2] a box (aspect 0.6..1.6) or a jittered triangle, randomly rotated."""
    if kind == "box":
        a = rng.uniform(0.6, 1.6)
        pts = np.array([[-a, -1], [a, -1], [a, 1], [-a, 1]], np.float64) / 2
    else:
        ang = np.deg2rad([90, 210, 330]) + rng.uniform(-0.25, 0.25, 3)
        pts = np.stack([np.cos(ang), -np.sin(ang)], 1)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts @ rot.T


def person_pose(rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """A random stick-figure pose about 1 unit tall.

    Returns:
        [K, 2] keypoints in the order of `KEYPOINT_NAMES` (y down), and whether the figure faces
        the camera (its left then lies towards image +x).
    """
    front = bool(rng.random() < 0.5)
    lean = rng.normal(0, 0.12)
    up = np.array([np.sin(lean), -np.cos(lean)])
    right = np.array([np.cos(lean), np.sin(lean)])  # image +x for an upright figure
    own_left = right if front else -right
    neck = 0.34 * up * rng.uniform(0.9, 1.1)
    head = neck + 0.14 * up + rng.normal(0, 0.02, 2)
    k = {"head": head}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        out = sign * own_left  # direction away from the body on this side

        def limb(start: np.ndarray, angle: float, length: float) -> np.ndarray:
            return start + length * (np.cos(angle) * -up + np.sin(angle) * out)

        shoulder = neck + 0.09 * out
        hip = 0.06 * out
        upper = rng.uniform(-0.4, 2.8)
        elbow = limb(shoulder, upper, 0.17 * rng.uniform(0.9, 1.1))
        wrist = limb(elbow, upper + rng.uniform(-0.3, 2.0), 0.15 * rng.uniform(0.9, 1.1))
        thigh = rng.uniform(-0.15, 0.8)
        knee = limb(hip, thigh, 0.23 * rng.uniform(0.9, 1.1))
        ankle = limb(knee, thigh + rng.uniform(-0.7, 0.3), 0.22 * rng.uniform(0.9, 1.1))
        for part, xy in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                         ("hip", hip), ("knee", knee), ("ankle", ankle)):  # fmt: skip
            k[f"{side}_{part}"] = xy
    return np.stack([k[n] for n in KEYPOINT_NAMES]), front


def _unit_shape(rng: np.random.Generator, name: str) -> _Shape:
    if name == "person":
        kpts, front = person_pose(rng)
        return _Shape("person", kpts, radius=0.07, front=front)
    if name == "circle":
        return _Shape("circle", np.zeros((1, 2)), radius=0.5)
    return _Shape(name, _unit_polygon(rng, name))


def _scaled(shape: _Shape, target: float, max_side: float) -> _Shape:
    """The shape scaled so its extent has area ``target**2`` and no side above ``max_side``."""
    x0, y0, x1, y1 = shape.extent()
    w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
    s = min(target / np.sqrt(w * h), max_side / max(w, h))
    return _Shape(shape.kind, shape.points * s, shape.radius * s, shape.front)


# Lines of a stick figure, 0-based keypoints; the neck and pelvis (shoulder and hip midpoints)
# are drawn but not annotated.
_LIMBS = ((1, 2), (1, 3), (3, 5), (2, 4), (4, 6), (7, 8), (7, 9), (9, 11), (8, 10), (10, 12))


def _torso(pts: np.ndarray) -> np.ndarray:
    """[4, 2] int32 polygon: left shoulder, right shoulder, right hip, left hip."""
    return pts[[1, 2, 8, 7]].astype(np.int32)


def _render(shape: _Shape, offset: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The shape's pixels placed at ``offset``: a [size, size] bool mask and [P, 2] int points."""
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(shape.points + offset).astype(np.int32)
    radius = max(1, int(round(shape.radius)))
    if shape.kind == "circle":
        cv2.circle(mask, tuple(map(int, pts[0])), radius, 255, -1)
    elif shape.kind == "person":
        width = max(1, int(round(shape.radius / 2)))
        neck = (pts[1] + pts[2]) // 2
        for a, b in (*((pts[i], pts[j]) for i, j in _LIMBS), (neck, pts[0])):
            cv2.line(mask, tuple(map(int, a)), tuple(map(int, b)), 255, width)
        cv2.fillPoly(mask, [_torso(pts)], 255)
        cv2.circle(mask, tuple(map(int, pts[0])), radius, 255, -1)
    else:
        cv2.fillPoly(mask, [pts], 255)
    return mask > 0, pts


def _paint(rng: np.random.Generator, img: np.ndarray, shape: _Shape, pts: np.ndarray,
           mask: np.ndarray) -> None:
    """Colours the object's pixels with a mild shading; a person also gets a face or hair."""
    colour = np.array(_random_colour(rng, (90, 256), (100, 256)), np.float32)
    ys, xs = np.nonzero(mask)
    theta = rng.uniform(0, 2 * np.pi)
    along = (xs - xs.mean()) * np.cos(theta) + (ys - ys.mean()) * np.sin(theta)
    shade = 1.0 + 0.2 * along / max(float(np.abs(along).max()), 1.0)
    img[ys, xs] = colour * shade[:, None]
    if shape.kind == "person":
        _paint_front_or_back(rng, img, shape, pts, colour)


def _paint_front_or_back(rng: np.random.Generator, img: np.ndarray, shape: _Shape, pts: np.ndarray,
                         colour: np.ndarray) -> None:
    """From the front: a shirt front (torso in a second colour) and a light face with eyes and a
    mouth. From behind: the torso stays in the body's colour and the head is dark hair."""
    r = max(1, int(round(shape.radius)))
    head = tuple(map(int, pts[0]))
    if not shape.front:
        cv2.circle(img, head, r, tuple(float(c) for c in colour * 0.3), -1)
        return
    shirt = _random_colour(rng, (150, 256), (150, 256))
    cv2.fillPoly(img, [_torso(pts)], shirt)
    tone = rng.uniform(0.35, 1.0)
    cv2.circle(img, head, r, (70 + 90 * tone, 100 + 100 * tone, 150 + 90 * tone), -1)  # skin, BGR
    if r < 2:
        return
    up = pts[0] - (pts[1] + pts[2]) / 2
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    side = np.array([-up[1], up[0]])
    dark = (20.0, 20.0, 20.0)
    for s in (-1, 1):
        eye = pts[0] + 0.25 * r * up + s * 0.4 * r * side
        cv2.circle(img, tuple(int(round(c)) for c in eye), max(1, r // 4), dark, -1)
    mouth = pts[0] - 0.45 * r * up
    half = 0.35 * r * side
    cv2.line(img, tuple(int(round(c)) for c in mouth - half),
             tuple(int(round(c)) for c in mouth + half), dark, max(1, r // 5))


def _offset(rng: np.random.Generator, shape: _Shape, size: int, drawn: list[_Drawn],
            truncate: bool) -> np.ndarray:
    """[2] translation for a unit-placed shape: anywhere inside, near an earlier object (to
    occlude it) or across the border (``truncate``)."""
    x0, y0, x1, y1 = shape.extent()
    wh = np.array([x1 - x0, y1 - y0])
    lo, hi = (-0.4 * wh, size - 0.6 * wh) if truncate else (np.zeros(2), size - wh)
    hi = np.maximum(hi, lo)
    if drawn and rng.random() < 0.35:
        ys, xs = np.nonzero(drawn[rng.integers(len(drawn))].mask)
        centre = np.array([xs.mean(), ys.mean()]) + rng.normal(0, 0.4, 2) * wh.max()
        corner = np.clip(centre - wh / 2, lo, hi)
    else:
        corner = rng.uniform(lo, hi)
    return corner - np.array([x0, y0])


def _acceptable(mask: np.ndarray, shape: _Shape, offset: np.ndarray, owner: np.ndarray,
                drawn: list[_Drawn]) -> bool:
    """Mostly inside the image, and hides no earlier object beyond `MIN_VISIBLE`."""
    size = mask.shape[0]
    x0, y0, x1, y1 = shape.extent() + np.tile(offset, 2)
    inside = max(0.0, min(x1, size) - max(x0, 0)) * max(0.0, min(y1, size) - max(y0, 0))
    if inside < 0.6 * (x1 - x0) * (y1 - y0) or mask.sum() < 4:
        return False
    if not drawn:
        return True
    n = len(drawn)
    visible = np.bincount(owner.ravel() + 1, minlength=n + 1)[1:]
    hidden = np.bincount(owner[mask] + 1, minlength=n + 1)[1:]
    total = np.array([d.mask.sum() for d in drawn])
    return bool(np.all(visible - hidden >= MIN_VISIBLE * total))


def _add_object(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray,
                drawn: list[_Drawn]) -> None:
    """Draws one random object over the image, if a placement is found in a few tries."""
    size = img.shape[0]
    cat = CATEGORIES[rng.choice(len(CATEGORIES), p=_CATEGORY_P)]
    lo, hi = AREA_BANDS[rng.integers(len(AREA_BANDS))]
    shape = _scaled(_unit_shape(rng, cat["name"]), rng.uniform(lo, hi), 0.9 * size)
    truncate = bool(rng.random() < 0.15)
    for _ in range(10):
        offset = _offset(rng, shape, size, drawn, truncate)
        mask, pts = _render(shape, offset, size)
        if _acceptable(mask, shape, offset, owner, drawn):
            _paint(rng, img, shape, pts, mask)
            owner[mask] = len(drawn)
            drawn.append(_Drawn(cat["id"], mask, pts if shape.kind == "person" else None))
            return


def _add_crowd(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray,
               drawn: list[_Drawn]) -> None:
    """A cluster of 8-20 tiny circles, annotated as one crowd box of category circle."""
    size = img.shape[0]
    side = rng.uniform(40, 90)
    corner = rng.uniform(0, size - side, 2)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(8, 21)):
        c = tuple(int(v) for v in corner + rng.uniform(0, side, 2))
        r = int(rng.integers(2, 5))
        cv2.circle(img, c, r, _random_colour(rng, (90, 256), (100, 256)), -1)
        cv2.circle(mask, c, r, 255, -1)
    owner[mask > 0] = len(drawn)
    drawn.append(_Drawn(CATEGORY_IDS["circle"], mask > 0, iscrowd=1))


def _annotation(obj: _Drawn, index: int, owner: np.ndarray) -> dict:
    """COCO fields of one drawn object (``id`` and ``image_id`` are added by the caller)."""
    ys, xs = np.nonzero(obj.mask)
    x0, y0 = int(xs.min()), int(ys.min())
    w, h = int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
    ann = {"category_id": obj.category_id, "bbox": [float(x0), float(y0), float(w), float(h)],
           "area": float(w * h), "iscrowd": obj.iscrowd}  # fmt: skip
    if obj.keypoints is not None:
        size = owner.shape[0]
        small = w * h < MIN_KEYPOINT_AREA
        flat: list[float | int] = []
        for x, y in obj.keypoints.tolist():
            if small or not (0 <= x < size and 0 <= y < size):
                flat += [0.0, 0.0, 0]
            else:
                flat += [x + 0.5, y + 0.5, 1 if owner[y, x] > index else 2]
        ann["keypoints"] = flat
        ann["num_keypoints"] = sum(v > 0 for v in flat[2::3])
    return ann


def make_image(rng: np.random.Generator, size: int, n_objects: int | None = None,
               crowd_prob: float = 0.0) -> tuple[np.ndarray, list[dict]]:
    """One random image and its objects.

    Args:
        rng: the image's random stream; the result depends on nothing else.
        size: side of the square image in pixels.
        n_objects: objects to try to draw (a few may find no placement); default 1 to 6.
        crowd_prob: probability of a crowd cluster of tiny circles.
    Returns:
        [size, size, 3] uint8 BGR image, and COCO annotations without ``id`` and ``image_id``,
        in drawing order.
    """
    img = _background(rng, size)
    _clutter(rng, img)
    owner = np.full((size, size), -1, np.int32)  # index of the object that drew each pixel last
    drawn: list[_Drawn] = []
    if rng.random() < crowd_prob:
        _add_crowd(rng, img, owner, drawn)
    for _ in range(int(rng.integers(1, 7)) if n_objects is None else n_objects):
        _add_object(rng, img, owner, drawn)
    grain = rng.standard_normal((size, size), dtype=np.float32) * rng.uniform(1, 6)
    img += cv2.merge([grain] * 3)  # luminance noise
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    image = cv2.convertScaleAbs(np.maximum(img, 0, out=img))  # rounds, saturates at 255
    return image, [_annotation(d, i, owner) for i, d in enumerate(drawn)]


def write_split(out: Path, split: str, n: int, size: int, seed: int, crowd_every: int = 0) -> Path:
    """Writes ``out/split/NNNNNN.jpg`` and ``out/annotations/split.json``; returns the JSON path.

    Image ``i`` uses the random stream ``[seed, crc32(split), i]``. Images with
    ``i % EMPTY_EVERY == EMPTY_EVERY // 2`` are empty; with ``crowd_every > 0``, images with
    ``i % crowd_every == 3`` get a crowd cluster (odd i, so never an empty one).
    """
    out = Path(out)
    (out / split).mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    stream = zlib.crc32(split.encode())
    images, annotations = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, stream, i])
        empty = i % EMPTY_EVERY == EMPTY_EVERY // 2
        crowd = crowd_every > 0 and i % crowd_every == 3
        image, objects = make_image(rng, size, 0 if empty else None, float(crowd))
        name = f"{i:06d}.jpg"
        path = out / split / name
        if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"{path}: could not write the image")
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        annotations += [{**o, "id": len(annotations) + k + 1, "image_id": i + 1}
                        for k, o in enumerate(objects)]  # fmt: skip
    dataset = {
        "info": {"description": "detect synthetic shapes and stick figures", "version": "1.0",
                 "seed": seed, "split": split},  # fmt: skip
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }
    path = out / "annotations" / f"{split}.json"
    atomic_write_text(path, json.dumps(dataset, sort_keys=True, separators=(",", ":")))
    return path


def generate(out: str | Path, n_train: int, n_val: int, size: int = 320,
             seed: int = 0) -> dict[str, Path]:
    """The train split (a crowd cluster in 1 image of 20) and the val split; split -> JSON path."""
    return {
        "train": write_split(Path(out), "train", n_train, size, seed, crowd_every=20),
        "val": write_split(Path(out), "val", n_val, size, seed),
    }
