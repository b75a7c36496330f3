"""Reading images safely.

`read_image` returns an RGB uint8 [H, W, 3] array:

* EXIF orientation is applied (OpenCV's default for ``IMREAD_COLOR``);
* grayscale is replicated to 3 channels, an alpha channel is dropped (not composited), palette
  images are expanded, and 16-bit images are scaled to 8 bits by OpenCV (value / 256);
* the pixel count is checked from the file header (Pillow, no decoding) before decoding, so an
  enormous image is refused without allocating it;
* a missing, empty, truncated or non-image file raises `ImageError` naming the path (OpenCV
  decodes a truncated JPEG with a grey bottom and only a console warning, so JPEGs are checked
  for their end-of-image marker first).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = str | Path | np.ndarray  # a file, or an HxWx3 BGR uint8 array
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def probe_image(path: str | Path, max_pixels: int = 100_000_000) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only (no pixel decoding)."""
    path = str(path)
    if not os.path.isfile(path):
        raise ImageError(f"{path}: image file not found")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # we apply our own limit, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: more than {2 * Image.MAX_IMAGE_PIXELS} pixels, Pillow's "
                         "decompression-bomb limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({type(e).__name__})") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise ImageError(f"{path}: {w}x{h} pixels exceeds the limit of {max_pixels} "
                             "(data.max_pixels)")
        try:
            orientation = _exif_orientation(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{path}: not a readable image ({type(e).__name__})") from None
        if orientation in (5, 6, 7, 8) and im.format != "TIFF":  # Pillow's TIFF size is oriented
            w, h = h, w
    return w, h


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag, without decoding pixels: Pillow's PNG ``getexif`` decodes the
    whole image to look for an eXIf chunk after the pixel data, so PNGs use the generic method,
    which reads what came before it."""
    exif = Image.Image.getexif(im) if im.format == "PNG" else im.getexif()
    return int(exif.get(_EXIF_ORIENTATION, 1))


def read_image(path: str | Path, max_pixels: int = 100_000_000) -> np.ndarray:
    """RGB uint8 [H, W, 3], EXIF-oriented (see module docstring)."""
    probe_image(path, max_pixels)
    data = Path(path).read_bytes()
    if data[:2] == b"\xff\xd8" and not _jpeg_complete(data):
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # EXIF-oriented
    if img is None:
        img = _read_with_pillow(path)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def load_image(image: ImageInput, max_pixels: int) -> np.ndarray:
    """A path (read, EXIF-rotated, at most ``max_pixels``) or an HxWx3 BGR uint8 array -> RGB."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 BGR uint8 array, got {image.shape} {image.dtype}")
        return np.ascontiguousarray(image[..., ::-1])  # BGR -> RGB
    return read_image(image, max_pixels)


# a marker inside entropy-coded data: 0xFF (fill bytes allowed) not followed by a stuffed 0x00
# or a restart marker RST0-7
_SCAN_END = re.compile(rb"\xff+[^\x00\xff\xd0-\xd7]")


def _jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG reaches its end-of-image marker: walk the segments from the start, skip
    each scan's entropy-coded data, stop at EOI. Data appended after EOI (e.g. motion photos) is
    fine; a structure this walk does not understand is left to the decoder (True)."""
    pos = 2  # after SOI
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return True
        code = data[pos + 1]
        if code == 0xFF:  # fill byte
            pos += 1
        elif code == 0xD9:  # EOI
            return True
        elif code == 0x01 or 0xD0 <= code <= 0xD7:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
            if code == 0xDA:  # SOS: entropy-coded data runs to the next marker
                m = _SCAN_END.search(data, pos)
                if m is None:
                    return False
                pos = m.end() - 2
    return False


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
