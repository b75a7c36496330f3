"""Reading images safely.

`read_image` returns an RGB uint8 [H, W, 3] array:

* EXIF orientation is applied (OpenCV's default for ``IMREAD_COLOR``);
* grayscale is replicated to 3 channels, an alpha channel is dropped (not composited), palette
  images are expanded, and 16-bit images are scaled to 8 bits by OpenCV (value / 256);
* the pixel count is checked from the file header (Pillow, no decoding) before decoding, so an
  enormous image is refused without allocating it;
* a missing, empty, truncated or non-image file raises `ImageError` naming the path.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def probe_image(path: str | Path, max_pixels: int = 100_000_000) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    path = str(path)
    if not os.path.isfile(path):
        raise ImageError(f"{path}: image file not found")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({type(e).__name__})") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: image larger than the pixel limit") from None
    if w * h > max_pixels:
        raise ImageError(f"{path}: {w}x{h} pixels exceeds the limit of {max_pixels} "
                         "(data.max_pixels)")
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return w, h


def read_image(path: str | Path, max_pixels: int = 100_000_000) -> np.ndarray:
    """RGB uint8 [H, W, 3], EXIF-oriented (see module docstring)."""
    probe_image(path, max_pixels)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        img = _read_with_pillow(path)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def _read_with_pillow(path: str | Path) -> np.ndarray:
    """Fallback for formats OpenCV refuses (e.g. some palette or truncated files)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = (arr / max(arr.max(), 1) * 255.0).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def resolve_inside(root: str | Path, file_name: str) -> Path:
    """``root / file_name``, refusing names (or symlinks) that lead outside ``root``."""
    root_real = os.path.realpath(root)
    full = os.path.realpath(os.path.join(root_real, file_name))
    if os.path.commonpath([root_real, full]) != root_real:
        raise ImageError(f"{os.path.join(root, file_name)}: file_name '{file_name}' escapes the "
                         f"image folder {root}")
    return Path(os.path.join(root, file_name))
