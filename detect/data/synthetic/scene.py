"""One synthetic image: random objects placed (inside, occluding an earlier one, or across the
border), drawn one after another over the backdrop, and their annotations."""
from __future__ import annotations

import cv2
import numpy as np

from detect.data.synthetic.annotation import Drawn, annotation
from detect.data.synthetic.background import background, clutter, random_colour
from detect.data.synthetic.categories import CATEGORIES, CATEGORY_IDS
from detect.data.synthetic.render import paint, render
from detect.data.synthetic.shapes import Shape, scaled, unit_shape

_CATEGORY_P = (0.34, 0.22, 0.22, 0.22)  # persons a little more often: they train the keypoint head

# sqrt(box area) ranges in pixels: COCO small (< 32), medium (32..96) and large (> 96).
AREA_BANDS: tuple[tuple[float, float], ...] = ((10.0, 28.0), (36.0, 88.0), (104.0, 170.0))
MIN_VISIBLE = 0.35  # a later object may not leave an earlier one less visible than this


def _offset(rng: np.random.Generator, shape: Shape, size: int, drawn: list[Drawn],
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


def _acceptable(mask: np.ndarray, shape: Shape, offset: np.ndarray, owner: np.ndarray,
                drawn: list[Drawn]) -> bool:
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
                drawn: list[Drawn]) -> None:
    """Draws one random object over the image, if a placement is found in a few tries."""
    size = img.shape[0]
    cat = CATEGORIES[rng.choice(len(CATEGORIES), p=_CATEGORY_P)]
    lo, hi = AREA_BANDS[rng.integers(len(AREA_BANDS))]
    shape = scaled(unit_shape(rng, cat["name"]), rng.uniform(lo, hi), 0.9 * size)
    truncate = bool(rng.random() < 0.15)
    for _ in range(10):
        offset = _offset(rng, shape, size, drawn, truncate)
        mask, pts = render(shape, offset, size)
        if _acceptable(mask, shape, offset, owner, drawn):
            paint(rng, img, shape, pts, mask)
            owner[mask] = len(drawn)
            drawn.append(Drawn(cat["id"], mask, pts if shape.kind == "person" else None))
            return


def _add_crowd(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray,
               drawn: list[Drawn]) -> None:
    """A cluster of 8-20 tiny circles, annotated as one crowd box of category circle."""
    size = img.shape[0]
    side = rng.uniform(40, 90)
    corner = rng.uniform(0, size - side, 2)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(8, 21)):
        c = tuple(int(v) for v in corner + rng.uniform(0, side, 2))
        r = int(rng.integers(2, 5))
        cv2.circle(img, c, r, random_colour(rng, (90, 256), (100, 256)), -1)
        cv2.circle(mask, c, r, 255, -1)
    owner[mask > 0] = len(drawn)
    drawn.append(Drawn(CATEGORY_IDS["circle"], mask > 0, iscrowd=1))


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
    img = background(rng, size)
    clutter(rng, img)
    owner = np.full((size, size), -1, np.int32)  # index of the object that drew each pixel last
    drawn: list[Drawn] = []
    if rng.random() < crowd_prob:
        _add_crowd(rng, img, owner, drawn)
    for _ in range(int(rng.integers(1, 7)) if n_objects is None else n_objects):
        _add_object(rng, img, owner, drawn)
    grain = rng.standard_normal((size, size), dtype=np.float32) * rng.uniform(1, 6)
    img += cv2.merge([grain] * 3)  # luminance noise
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    image = cv2.convertScaleAbs(np.maximum(img, 0, out=img))  # rounds, saturates at 255
    return image, [annotation(d, i, owner) for i, d in enumerate(drawn)]
