"""Anchor generation for FPN levels.

Conventions (shared with every head's output layout):

* Order: level-major; within a level row (y), then column (x), then the anchor index ``a`` at that
  location, i.e. a ``[H, W, A_per_loc]`` grid flattened. A head output ``[B, A_per_loc * K, H, W]``
  must therefore be permuted to ``[B, H, W, A_per_loc, K]`` before flattening to ``[B, H*W*A, K]``.
* The anchor index ``a`` runs over ratios (outer) and scales (inner): ``a = i_ratio * S + i_scale``.
* Centres at ``((x + offset) * stride, (y + offset) * stride)`` pixels: ``offset`` 0.5 (cell
  centres, the default) or 0 (cell corners, torchvision's `AnchorGenerator`).
* ``round_to_pixels`` reproduces torchvision's whole-pixel anchors: each ``size * s`` truncated to an
  integer, then the cell anchor's corners rounded (in float32, half to even).
* For ratio ``r = h / w`` and scale ``s``: ``w = size * s / sqrt(r)``, ``h = size * s * sqrt(r)``,
  so every ratio keeps the area ``(size * s)**2``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class AnchorGenerator:
    """Anchors ``[sum_l H_l * W_l * A_per_loc, 4]`` xyxy for a list of feature-map sizes.

    RetinaNet: the defaults (9 anchors per location). ATSS: one square anchor of 8 x stride,
    ``AnchorGenerator(strides, sizes=[8 * s for s in strides], ratios=(1.0,), scales=(1.0,))``.
    """

    def __init__(
        self,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        offset: float = 0.5,
        round_to_pixels: bool = False,
    ) -> None:
        if len(strides) != len(sizes):
            raise ValueError(f"got {len(strides)} strides but {len(sizes)} sizes")
        self.strides = tuple(int(s) for s in strides)
        self.sizes = tuple(float(s) for s in sizes)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = tuple(float(s) for s in scales)
        self.offset, self.round_to_pixels = float(offset), round_to_pixels
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.ratios) * len(self.scales)

    def num_anchors_per_level(self, feature_sizes: Sequence[tuple[int, int]]) -> list[int]:
        """Anchor count of each level: ``H_l * W_l * A_per_loc``."""
        return [h * w * self.num_anchors_per_location for h, w in feature_sizes]

    def cell_anchors(self, size: float) -> Tensor:
        """[A_per_loc, 4] xyxy anchors centred at the origin, ratio-major then scale."""
        if self.round_to_pixels:
            return self._rounded_cell_anchors(size)
        wh = [
            (size * s / math.sqrt(r), size * s * math.sqrt(r)) for r in self.ratios for s in self.scales
        ]
        half = torch.tensor(wh, dtype=torch.float64) / 2  # [A_per_loc, 2]
        return torch.cat([-half, half], dim=1)  # [A_per_loc, 4]

    def _rounded_cell_anchors(self, size: float) -> Tensor:
        """torchvision's ``AnchorGenerator.generate_anchors`` for sizes ``int(size * s)``."""
        sizes = torch.tensor([float(int(size * s)) for s in self.scales])  # [S] float32
        h_ratios = torch.sqrt(torch.tensor(self.ratios))  # [R]
        ws = (1 / h_ratios[:, None] * sizes[None, :]).reshape(-1)  # [R * S]
        hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)  # [R * S]
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round().double()  # [A_per_loc, 4]

    def level_anchors(self, height: int, width: int, stride: int, size: float) -> Tensor:
        """[H * W * A_per_loc, 4] xyxy (float64) anchors of one level, ordered (y, x, a)."""
        ys = (torch.arange(height, dtype=torch.float64) + self.offset) * stride  # [H]
        xs = (torch.arange(width, dtype=torch.float64) + self.offset) * stride  # [W]
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W] each
        centres = torch.stack([cx, cy, cx, cy], dim=-1)  # [H, W, 4]
        anchors = centres[:, :, None, :] + self.cell_anchors(size)  # [H, W, A_per_loc, 4]
        return anchors.reshape(-1, 4)  # [H * W * A_per_loc, 4]

    def __call__(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Anchors of all levels, [sum_l H_l * W_l * A_per_loc, 4] xyxy, cached per call signature.

        The cached tensor is returned as is: do not modify it in place.

        Args:
            feature_sizes: (H_l, W_l) of each level, one per stride.
        """
        feature_sizes = tuple((int(h), int(w)) for h, w in feature_sizes)
        if len(feature_sizes) != len(self.strides):
            raise ValueError(f"got {len(feature_sizes)} feature maps for {len(self.strides)} strides")
        key = (feature_sizes, str(torch.device(device)), dtype)
        if key not in self._cache:
            if len(self._cache) >= 32:  # many distinct image sizes: keep memory bounded
                self._cache.clear()
            levels = [
                self.level_anchors(h, w, stride, size)
                for (h, w), stride, size in zip(feature_sizes, self.strides, self.sizes)
            ]
            self._cache[key] = torch.cat(levels).to(device=device, dtype=dtype)  # [A, 4]
        return self._cache[key]
