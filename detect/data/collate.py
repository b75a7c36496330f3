"""Collation: transformed samples -> a padded `Batch`."""
from __future__ import annotations

import torch

from detect.data.dataset import BadImage, samples_to_tensors
from detect.data.transforms import Sample
from detect.structures import Batch


class Collate:
    """Pads images (bottom/right, value 114) so H and W are multiples of ``size_divisor``.

    `BadImage` entries are dropped and listed in ``Batch.skipped``.
    """

    def __init__(self, size_divisor: int = 128, pad_value: int = 114) -> None:
        self.size_divisor = size_divisor
        self.pad_value = pad_value

    def __call__(self, samples: list[Sample | BadImage]) -> Batch:
        skipped = [f"{s.path}: {s.reason}" for s in samples if isinstance(s, BadImage)]
        good = [samples_to_tensors(s) for s in samples if not isinstance(s, BadImage)]
        sizes = [(int(img.shape[1]), int(img.shape[2])) for img, _ in good]
        d = self.size_divisor
        h = max([s[0] for s in sizes], default=d)
        w = max([s[1] for s in sizes], default=d)
        h, w = -(-h // d) * d, -(-w // d) * d
        images = torch.full((len(good), 3, h, w), self.pad_value, dtype=torch.uint8)  # [B, 3, H, W]
        for i, (img, _) in enumerate(good):
            images[i, :, : img.shape[1], : img.shape[2]] = img
        return Batch(images, [t for _, t in good], sizes, skipped)
