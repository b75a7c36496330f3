"""Object geometry in unit size: rotated boxes, jittered triangles, circles and stick-figure poses,
then scaled to a target size."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detect.data.synthetic.categories import KEYPOINT_NAMES


@dataclass
class Shape:
    """One object's geometry, in unit size around the origin until `scaled` places it.

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


def unit_shape(rng: np.random.Generator, name: str) -> Shape:
    if name == "person":
        kpts, front = person_pose(rng)
        return Shape("person", kpts, radius=0.07, front=front)
    if name == "circle":
        return Shape("circle", np.zeros((1, 2)), radius=0.5)
    return Shape(name, _unit_polygon(rng, name))


def scaled(shape: Shape, target: float, max_side: float) -> Shape:
    """The shape scaled so its extent has area ``target**2`` and no side above ``max_side``."""
    x0, y0, x1, y1 = shape.extent()
    w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
    s = min(target / np.sqrt(w * h), max_side / max(w, h))
    return Shape(shape.kind, shape.points * s, shape.radius * s, shape.front)
