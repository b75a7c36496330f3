"""The synthetic dataset on disk: ``split/NNNNNN.jpg`` images and ``annotations/split.json``."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from detect.data.synthetic.categories import CATEGORIES
from detect.data.synthetic.scene import make_image
from detect.io import atomic_write_text

EMPTY_EVERY = 12  # image i of a split has no object when i % EMPTY_EVERY == EMPTY_EVERY // 2
JPEG_QUALITY = 90


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
