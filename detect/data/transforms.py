"""Train and val transforms on `Sample`s (numpy, before collation).

Val: `letterbox` (resize the longest side to ``size``, pad bottom/right), exactly invertible with
the recorded scale and offset. Train: albumentations does the geometry that must move boxes and
keypoints together (resize, scale jitter, pad, random crop) and the colour jitter; the horizontal
flip is ours because it must also swap left/right keypoints. Boxes are clipped to the image; a box
that becomes degenerate is dropped with its keypoints and mask, and keypoints that leave the image
get visibility 0. Masks move with the image (resized with its interpolation, padded with 0).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import cv2
import numpy as np

from detect.structures import partner_index

PAD_VALUE = 114
MIN_BOX_SIDE = 1.0  # pixels; smaller boxes are dropped after a transform


@dataclass
class Sample:
    """One image with its objects; coordinates in pixels of ``image``.

    image [H, W, 3] uint8 RGB; boxes [N, 4] xyxy float32; labels [N] int64; keypoints [N, K, 3]
    float32 or None; ignore_boxes [M, 4]; masks [N, H, W] uint8 0/1 or None (the dataset has no
    segmentations) with has_mask [N] bool (False: the object has no mask, its row is zeros);
    transformed = original * scale + offset.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    keypoints: np.ndarray | None
    ignore_boxes: np.ndarray
    image_id: int = -1
    orig_size: tuple[int, int] = (0, 0)
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)
    masks: np.ndarray | None = None
    has_mask: np.ndarray | None = None


def resize_masks(masks: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """[N, H, W] uint8 -> [N, h, w] for ``size`` (w, h)."""
    out = np.zeros((len(masks), size[1], size[0]), np.uint8)
    for i, m in enumerate(masks):
        out[i] = cv2.resize(m, size, interpolation=interpolation)
    return out


def letterbox(sample: Sample, size: int, divisor: int | None = None) -> Sample:
    """Resize so the longest side is ``size`` and pad bottom/right to ``size x size``, or with
    ``divisor`` only to the next multiples of it (a 640 x 480 photo at 320: 320 x 256 for a
    divisor of 64, 20 % fewer pixels for the network than the square)."""
    h, w = sample.image.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(sample.image, (nw, nh), interpolation=interp)
    ch, cw = (size, size) if divisor is None else (-(-nh // divisor) * divisor,
                                                   -(-nw // divisor) * divisor)
    canvas = np.full((ch, cw, 3), PAD_VALUE, np.uint8)
    canvas[:nh, :nw] = resized
    kpts = sample.keypoints
    if kpts is not None:
        kpts = kpts.copy()
        kpts[..., :2] *= s
    masks = sample.masks
    if masks is not None:
        masks = np.zeros((len(masks), ch, cw), np.uint8)
        masks[:, :nh, :nw] = resize_masks(sample.masks, (nw, nh), interp)
    return replace(sample, image=canvas, boxes=sample.boxes * s, keypoints=kpts, masks=masks,
                   ignore_boxes=sample.ignore_boxes * s, scale=sample.scale * s,
                   offset=(sample.offset[0] * s, sample.offset[1] * s))


def letterbox_image(image: np.ndarray, size: int, divisor: int | None = None) -> Sample:
    """An RGB image letterboxed to ``size`` x ``size``, or to multiples of ``divisor``
    (`letterbox`; ``.scale``/``.offset`` map back)."""
    empty = np.zeros((0, 4), np.float32)
    return letterbox(Sample(image, empty, np.zeros(0, np.int64), None, empty), size, divisor)


def stack_padded(images: list[np.ndarray]) -> np.ndarray:
    """[H_i, W_i, 3] uint8 images -> [B, H, W, 3], each padded bottom/right to the largest."""
    h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    out = np.full((len(images), h, w, 3), PAD_VALUE, np.uint8)
    for b, img in enumerate(images):
        out[b, :img.shape[0], :img.shape[1]] = img
    return out


def hflip(sample: Sample, flip_pairs: tuple[tuple[int, int], ...]) -> Sample:
    """Mirror the image, boxes and keypoints; swap left/right keypoints."""
    w = sample.image.shape[1]
    image = np.ascontiguousarray(sample.image[:, ::-1])
    boxes = _flip_boxes(sample.boxes, w)
    ignore = _flip_boxes(sample.ignore_boxes, w)
    kpts = sample.keypoints
    if kpts is not None:
        kpts = kpts.copy()
        kpts[..., 0] = np.where(kpts[..., 2] > 0, w - kpts[..., 0], 0.0)
        kpts = kpts[:, partner_index(kpts.shape[1], flip_pairs)]
    masks = None if sample.masks is None else np.ascontiguousarray(sample.masks[:, :, ::-1])
    return replace(sample, image=image, boxes=boxes, keypoints=kpts, ignore_boxes=ignore,
                   masks=masks)


def _flip_boxes(boxes: np.ndarray, w: int) -> np.ndarray:
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return out


class ValTransform:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return letterbox(sample, self.size)


class TrainTransform:
    """Scale jitter + random crop/pad to ``size`` + colour jitter (albumentations), then flip."""

    def __init__(self, size: int, scale_jitter: tuple[float, float] = (0.75, 1.25),
                 hflip_prob: float = 0.5, color_jitter: float = 0.2,
                 flip_pairs: tuple[tuple[int, int], ...] = ()) -> None:
        # imported here: 0.6 s that inference (letterbox only) does not pay
        # (and albumentations asks the network for a newer version unless told not to)
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        import albumentations as A

        self.size, self.hflip_prob, self.flip_pairs = size, hflip_prob, flip_pairs
        lo, hi = scale_jitter
        ops: list = [A.LongestMaxSize(max_size=size)]
        if (lo, hi) != (1.0, 1.0):
            ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), p=1.0))
        ops += [A.PadIfNeeded(size, size, position="random", border_mode=cv2.BORDER_CONSTANT,
                              fill=PAD_VALUE),
                A.RandomCrop(size, size)]
        if color_jitter > 0:
            c = color_jitter
            ops.append(A.ColorJitter(brightness=c, contrast=c, saturation=c, hue=min(c / 10, 0.5),
                                     p=0.8))
        self.pipeline = A.Compose(
            ops,
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_index"], clip=True,
                                     filter_invalid_bboxes=True),
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
            seed=None,
        )

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng or np.random.default_rng()
        self.pipeline.set_random_seed(int(rng.integers(2**31)))
        out = self._geometry(sample)
        if rng.random() < self.hflip_prob:
            out = hflip(out, self.flip_pairs)
        return out

    def _geometry(self, sample: Sample) -> Sample:
        n, m = len(sample.boxes), len(sample.ignore_boxes)
        all_boxes = np.concatenate([sample.boxes, sample.ignore_boxes]).reshape(-1, 4)  # [N+M, 4]
        k = 0 if sample.keypoints is None else sample.keypoints.shape[1]
        points = (sample.keypoints[..., :2].reshape(-1, 2) if k else np.zeros((0, 2), np.float32))
        extra = {"masks": sample.masks} if sample.masks is not None and n else {}
        r = self.pipeline(image=sample.image, bboxes=all_boxes, box_index=np.arange(n + m),
                          keypoints=points, **extra)
        boxes = np.asarray(r["bboxes"], np.float32).reshape(-1, 4)  # [P, 4] survivors
        index = np.asarray(r["box_index"], np.int64).reshape(-1)
        wh = boxes[:, 2:] - boxes[:, :2]
        ok = (wh >= MIN_BOX_SIDE).all(axis=1)
        boxes, index = boxes[ok], index[ok]
        obj = index < n
        kpts = None
        if sample.keypoints is not None:
            moved = np.asarray(r["keypoints"], np.float32).reshape(n, k, 2)  # [N, K, 2]
            vis = sample.keypoints[..., 2].copy()
            h, w = r["image"].shape[:2]
            inside = ((moved[..., 0] >= 0) & (moved[..., 0] <= w) & (moved[..., 1] >= 0)
                      & (moved[..., 1] <= h))
            vis[~inside] = 0
            kpts = np.concatenate([moved, vis[..., None]], axis=-1)  # [N, K, 3]
            kpts[kpts[..., 2] == 0, :2] = 0
            kpts = kpts[index[obj]]
        return replace(sample, image=r["image"], boxes=boxes[obj],
                       labels=sample.labels[index[obj]], keypoints=kpts,
                       ignore_boxes=boxes[~obj].reshape(-1, 4),
                       **self._kept_masks(sample, r, index[obj]))

    @staticmethod
    def _kept_masks(sample: Sample, r: dict, kept: np.ndarray) -> dict:
        """The transformed masks of the objects ``kept`` (indices into the sample's)."""
        if sample.masks is None:
            return {}
        h, w = r["image"].shape[:2]
        moved = np.asarray(r["masks"], np.uint8) if "masks" in r else np.zeros((0, h, w), np.uint8)
        return {"masks": moved[kept].reshape(-1, h, w), "has_mask": sample.has_mask[kept]}
