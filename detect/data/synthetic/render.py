"""A placed shape drawn: its pixels (a mask before occlusion) and its paint; a person also gets a
shirt front and a face, or hair."""
from __future__ import annotations

import cv2
import numpy as np

from detect.data.synthetic.background import random_colour
from detect.data.synthetic.shapes import Shape


# Lines of a stick figure, 0-based keypoints; the neck and pelvis (shoulder and hip midpoints)
# are drawn but not annotated.
_LIMBS = ((1, 2), (1, 3), (3, 5), (2, 4), (4, 6), (7, 8), (7, 9), (9, 11), (8, 10), (10, 12))


def _torso(pts: np.ndarray) -> np.ndarray:
    """[4, 2] int32 polygon: left shoulder, right shoulder, right hip, left hip."""
    return pts[[1, 2, 8, 7]].astype(np.int32)


def render(shape: Shape, offset: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
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


def paint(rng: np.random.Generator, img: np.ndarray, shape: Shape, pts: np.ndarray,
           mask: np.ndarray) -> None:
    """Colours the object's pixels with a mild shading; a person also gets a face or hair."""
    colour = np.array(random_colour(rng, (90, 256), (100, 256)), np.float32)
    ys, xs = np.nonzero(mask)
    theta = rng.uniform(0, 2 * np.pi)
    along = (xs - xs.mean()) * np.cos(theta) + (ys - ys.mean()) * np.sin(theta)
    shade = 1.0 + 0.2 * along / max(float(np.abs(along).max()), 1.0)
    img[ys, xs] = colour * shade[:, None]
    if shape.kind == "person":
        _paint_front_or_back(rng, img, shape, pts, colour)


def _paint_front_or_back(rng: np.random.Generator, img: np.ndarray, shape: Shape, pts: np.ndarray,
                         colour: np.ndarray) -> None:
    """From the front: a shirt front (torso in a second colour) and a light face with eyes and a
    mouth. From behind: the torso stays in the body's colour and the head is dark hair."""
    r = max(1, int(round(shape.radius)))
    head = tuple(map(int, pts[0]))
    if not shape.front:
        cv2.circle(img, head, r, tuple(float(c) for c in colour * 0.3), -1)
        return
    shirt = random_colour(rng, (150, 256), (150, 256))
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
