"""The backdrop of a synthetic image (gradient, blotches, grain, lines and soft blobs), and the
colour distribution every drawing shares."""
from __future__ import annotations

import cv2
import numpy as np


def random_colour(rng: np.random.Generator, sat: tuple[int, int], val: tuple[int, int]) -> tuple:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(*sat), rng.integers(*val)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def background(rng: np.random.Generator, size: int) -> np.ndarray:
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


def clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draws random lines and soft blobs in place: edges that are no object."""
    size = img.shape[0]
    for _ in range(rng.integers(2, 10)):
        p, q = rng.integers(-size // 4, size + size // 4, (2, 2))
        colour = random_colour(rng, (0, 200), (40, 255))
        cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), colour, int(rng.integers(1, 4)))
    # Blobs are drawn and blurred at 1/4 resolution (cheap), then upsampled.
    small = max(size // 4, 8)
    blobs = np.zeros((small, small, 3), np.float32)
    for _ in range(rng.integers(1, 5)):
        centre = tuple(int(c) for c in rng.integers(0, small, 2))
        axes = tuple(int(a) for a in rng.integers(max(small // 20, 1), small // 5 + 2, 2))
        colour = random_colour(rng, (0, 255), (40, 255))
        cv2.ellipse(blobs, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    alpha = (blobs.max(-1) > 0).astype(np.float32)
    blobs, alpha = (cv2.resize(cv2.GaussianBlur(a, (0, 0), small / 40), (size, size))
                    for a in (blobs, alpha))  # fmt: skip
    img *= cv2.merge([1 - 0.6 * alpha] * 3)
    img += 0.6 * blobs
