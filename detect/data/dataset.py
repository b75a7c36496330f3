"""A COCO-format detection dataset: image folder + one or more annotation files.

``dataset[i]`` is a transformed `Sample`, or a `BadImage` when the file cannot be read (the
collate function drops it and lists it in ``Batch.skipped``; the trainer counts it or stops, as
``data.on_bad_image`` says). `check_images` reads every header up front.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from detect.data.annotations import CocoAnnotations, DatasetError, ImageRecord, load_annotations
from detect.data.image_io import ImageError, probe_image, read_image, resolve_inside
from detect.data.segmentation import decode_masks
from detect.data.transforms import Sample

Transform = Callable[[Sample, np.random.Generator], Sample]


@dataclass
class BadImage:
    """An image that could not be read; ``reason`` does not repeat the path."""

    path: str
    reason: str

    @classmethod
    def from_message(cls, path: Path, message: str) -> "BadImage":
        """From an error message that starts with "<path>: "."""
        return cls(str(path), message.removeprefix(f"{path}: "))


class CocoDetection(Dataset):
    """Samples of a COCO dataset; see `detect.data.annotations` for validation."""

    def __init__(self, images_dir: str | Path, annotations: CocoAnnotations, transform: Transform,
                 max_pixels: int = 100_000_000, seed: int = 0) -> None:
        self.images_dir = Path(images_dir)
        self.ann = annotations
        self.transform = transform
        self.max_pixels = max_pixels
        self.seed = seed
        self.masks = True  # decode the objects' masks when the annotations have segmentations
        if not self.images_dir.is_dir():
            raise DatasetError(f"{images_dir}: image folder not found")
        self.paths = [self._path(r) for r in annotations.images]

    @classmethod
    def from_files(cls, images_dir: str | Path, annotation_files: list[str] | tuple[str, ...],
                   transform: Transform, keep_empty: bool = True,
                   flip_pairs: tuple[tuple[int, int], ...] | None = None,
                   **kwargs) -> "CocoDetection":
        ann = load_annotations(annotation_files, keep_empty=keep_empty, flip_pairs=flip_pairs)
        return cls(images_dir, ann, transform, **kwargs)

    def _path(self, rec: ImageRecord) -> Path:
        try:
            path = resolve_inside(self.images_dir, rec.file_name)
        except ImageError as e:
            raise DatasetError(f"image id {rec.id}: {e}") from None
        if not path.is_file():
            raise DatasetError(f"{path}: image file not found (image id {rec.id})")
        return path

    def check_images(self, drop_unreadable: bool) -> list[str]:
        """Read every image header (no decoding). A size that disagrees with the annotations
        (after EXIF orientation) is a `DatasetError`; unreadable, empty or too large files are
        dropped from the dataset and returned as "path: reason" when ``drop_unreadable``, else
        the first one is a `DatasetError`."""
        keep, problems = [], []
        for rec, path in zip(self.ann.images, self.paths):
            try:
                w, h = probe_image(path, self.max_pixels)
            except ImageError as e:
                if not drop_unreadable:
                    raise DatasetError(str(e)) from None
                problems.append(str(e))
                continue
            if (w, h) != (rec.width, rec.height):
                raise DatasetError(_size_mismatch(path, w, h, rec))
            keep.append((rec, path))
        self.ann.images = [r for r, _ in keep]
        self.paths = [p for _, p in keep]
        return problems

    def __len__(self) -> int:
        return len(self.ann.images)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample | BadImage:
        """Sample ``index`` (or ``(epoch, index)``, as `EpochSampler` gives; a plain index is
        epoch 0), its augmentation seeded by (seed, epoch, index): reproducible for a seed,
        varied per epoch."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rec = self.ann.images[index]
        path = self.paths[index]
        try:
            image = read_image(path, self.max_pixels)
        except ImageError as e:
            return BadImage.from_message(path, str(e))
        h, w = image.shape[:2]
        if (w, h) != (rec.width, rec.height):
            return BadImage.from_message(path, _size_mismatch(path, w, h, rec))
        sample = Sample(image=image, boxes=rec.boxes.copy(), labels=rec.labels.copy(),
                        keypoints=None if rec.keypoints is None else rec.keypoints.copy(),
                        ignore_boxes=rec.ignore_boxes.copy(), image_id=rec.id, orig_size=(h, w))
        if rec.segmentations is not None and self.masks:
            sample.masks = decode_masks(rec.segmentations, w, h)  # [N, H, W]
            sample.has_mask = np.array([s is not None for s in rec.segmentations], bool)
        rng = np.random.default_rng([self.seed, epoch, index])
        return self.transform(sample, rng)


def _size_mismatch(path: Path, w: int, h: int, rec: ImageRecord) -> str:
    return (f"{path}: image is {w}x{h} after EXIF orientation but the annotations say "
            f"{rec.width}x{rec.height} (image id {rec.id})")


def samples_to_tensors(sample: Sample) -> tuple[torch.Tensor, "Target"]:
    """[3, H, W] uint8 image tensor and the `Target` of a transformed sample."""
    from detect.structures import Target

    image = torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1)))  # [3, H, W]
    target = Target(
        boxes=torch.from_numpy(sample.boxes.astype(np.float32)).reshape(-1, 4),
        labels=torch.from_numpy(sample.labels.astype(np.int64)).reshape(-1),
        keypoints=None if sample.keypoints is None else torch.from_numpy(
            sample.keypoints.astype(np.float32)),
        ignore_boxes=torch.from_numpy(sample.ignore_boxes.astype(np.float32)).reshape(-1, 4),
        image_id=sample.image_id, orig_size=sample.orig_size, scale=sample.scale,
        offset=sample.offset,
        # a copy: an empty array may keep a flipped view's negative strides
        masks=None if sample.masks is None else torch.from_numpy(
            sample.masks.astype(np.uint8, copy=True)),
        has_mask=None if sample.has_mask is None else torch.from_numpy(sample.has_mask.astype(bool)),
    )
    return image, target
