"""Helpers of tests/reliability: small COCO datasets written by the tests, a fast Trainer.

Every image is 64x64 with two objects: a box of category 2 and a "person" of category 5 with two
keypoints (category ids are deliberately not contiguous).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from detect.config import load_config
from detect.engine.trainer import Trainer

SIZE = 64
CATEGORIES = [{"id": 2, "name": "box"},
              {"id": 5, "name": "person", "keypoints": ["left_hand", "right_hand"],
               "skeleton": [[1, 2]]}]


def default_objects(i: int) -> list[dict]:
    """The two objects of image ``i`` (COCO annotation fields without id/image_id)."""
    return [{"category_id": 2, "bbox": [4 + i, 6, 20, 16], "iscrowd": 0, "area": 320},
            {"category_id": 5, "bbox": [30, 20 + i, 20, 30], "iscrowd": 0, "area": 600,
             "keypoints": [34, 30 + i, 2, 46, 30 + i, 2], "num_keypoints": 2}]


def write_dataset(root: Path, objects: list[list[dict]], size: int = SIZE,
                  categories: list[dict] | None = None) -> dict[str, Path]:
    """One ``size`` x ``size`` JPEG per entry of ``objects`` (its annotations, drawn as filled
    rectangles on noise) under ``root/images``, and ``root/ann.json``."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(objects))
    images, anns = [], []
    for i, objs in enumerate(objects):
        name = f"{i:03d}.jpg"
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        for o in objs:
            if len(o["bbox"]) != 4 or not np.isfinite(o["bbox"]).all():
                continue
            x, y, w, h = (int(v) for v in o["bbox"])
            cv2.rectangle(img, (x, y), (x + w, y + h), (200, 60 + 40 * i % 150, 90), -1)
        cv2.imwrite(str(img_dir / name), img)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for o in objs:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, **o})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": categories or CATEGORIES}))
    return {"images": img_dir, "annotations": ann}


def overrides(tiny_model: list[str], data: dict[str, Path], *extra: str,
              val: dict[str, Path] | None = None) -> list[str]:
    """configs/demo.yaml overrides: the tiny model on ``data`` at 64 px, 2 keypoints."""
    val = val or {"images": "", "annotations": ""}
    val_ann = f"[{val['annotations']}]" if val["annotations"] else "[]"
    return [f"data.train.images={data['images']}",
            f"data.train.annotations=[{data['annotations']}]",
            f"data.val.images={val['images']}", f"data.val.annotations={val_ann}",
            f"data.image_size={SIZE}", "model.heads.keypoints.num_keypoints=2",
            "model.heads.keypoints.sigmas=[0.05,0.05]", "train.eval_every=0",
            "train.batch_size=2", "train.max_steps=1", *tiny_model, *extra]


def make_trainer(tiny_model: list[str], data: dict[str, Path], out: Path, *extra: str,
                 resume: Path | None = None, val: dict[str, Path] | None = None) -> Trainer:
    cfg = load_config("configs/demo.yaml", overrides(tiny_model, data, *extra, val=val))
    return Trainer(cfg, out, resume=resume, device="cpu", show_progress=False)
