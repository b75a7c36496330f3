"""A short-range offset field on the finest FPN level, and the refinement that walks regressed
keypoints along it onto their joints (PersonLab's short-range offsets, Papandreou et al. 2018).

A regressed keypoint must come from one feature vector at the object's anchor, so it lands near
its joint but rarely on it (for the limbs' ends most of all). Where a joint lies relative to a
place a few cells away is local evidence a convolution sees at every position, and every cell
near a labelled keypoint trains it densely. The keypoint head predicts ``2J`` more values per
anchor; on the finest level (stride ``s``, one anchor per location) they form, per joint *type*
``j``, the offset (in cells) from each cell's centre to the nearest joint of that type, trained
on the cells within ``FIELD_RADIUS`` cells of one (L1). With handedness every keypoint is its own
type, in image-left, image-right order; without, a left/right pair shares a type: which side a
joint is on is then the regression's call, which a local field cannot make.

Refinement, per keypoint and ``FIELD_STEPS`` times: read the field of its type at the cell that
contains it and move to that cell's centre plus the offset (at most ``FIELD_RADIUS`` cells).
Pure tensor functions; batched for the exported graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FIELD_RADIUS = 3.0  # cells: trained within this distance of a joint; the longest step taken
FIELD_STEPS = 2  # refinement steps: the first lands near the joint, the second on it


def joint_groups(num_keypoints: int, flip_pairs: tuple[tuple[int, int], ...]) -> list[int]:
    """[K]: the joint type of each keypoint; the two keypoints of a flip pair share one."""
    group = list(range(num_keypoints))
    for a, b in flip_pairs:
        group[max(a, b)] = group[min(a, b)]
    ids = {g: i for i, g in enumerate(dict.fromkeys(group))}
    return [ids[g] for g in group]


def type_members(groups: list[int]) -> list[list[int]]:
    """[J][G]: the keypoints of each joint type (``groups`` [K]: the type of each keypoint),
    padded with K (no keypoint) to the largest type's size G."""
    members = [[i for i, g in enumerate(groups) if g == j] for j in range(len(set(groups)))]
    size = max(map(len, members), default=0)
    return [m + [len(groups)] * (size - len(m)) for m in members]


def field_targets(centres: Tensor, keypoints: Tensor, members: Tensor,
                  stride: float) -> tuple[Tensor, Tensor]:
    """One image's field targets: per cell and joint type, the offset to the nearest labelled
    joint of that type, and whether it is within ``FIELD_RADIUS`` cells.

    Args:
        centres: [M, 2] cell centres (pixels) of the finest level.
        keypoints: [N, K, 3] ground truth; only labelled keypoints (v > 0) count.
        members: [J, G] the keypoints of each joint type (`type_members`); stride: cell size
            in pixels.
    Returns:
        (offsets [M, J, 2] in cells, trained [M, J] bool).
    """
    m, n, j = len(centres), len(keypoints), len(members)
    if n == 0:
        return centres.new_zeros(m, j, 2), centres.new_zeros(m, j).bool()
    xy = F.pad(keypoints[..., :2], (0, 0, 0, 1))  # [N, K + 1, 2]: keypoint K is the padding
    d2 = ((xy[None] - centres[:, None, None]) / stride).pow(2).sum(-1)  # [M, N, K + 1]
    d2 = d2.masked_fill(F.pad(keypoints[..., 2], (0, 1))[None] <= 0, float("inf"))
    d2, nearest = d2[:, :, members].transpose(1, 2).flatten(2).min(-1)  # [M, J] over N * G
    g = members.shape[1]
    k = members[torch.arange(j, device=members.device), nearest % g]  # [M, J]
    offsets = (xy[torch.div(nearest, g, rounding_mode="floor"), k] - centres[:, None]) / stride
    return offsets, d2 <= FIELD_RADIUS ** 2


def refine_with_field(keypoints: Tensor, field: Tensor, groups: Tensor, size: tuple[int, int],
                      stride: float) -> Tensor:
    """Regressed keypoints walked along the field (module docstring).

    Args:
        keypoints: [B, N, K, 3] (x, y, score) in pixels of the network input.
        field: [B, H * W, J, 2] predicted offsets (cells) of the finest level, row-major cells.
        groups: [K] joint type of each keypoint; size: (H, W); stride: cell size in pixels.
    Returns:
        [B, N, K, 3], scores unchanged.
    """
    h, w = size
    b, n, k = keypoints.shape[:3]
    xy = keypoints[..., :2]  # [B, N, K, 2]
    image = torch.arange(b, device=field.device).view(b, 1, 1)
    for _ in range(FIELD_STEPS):
        cx = torch.floor(xy[..., 0] / stride).long().clamp(0, w - 1)  # [B, N, K]
        cy = torch.floor(xy[..., 1] / stride).long().clamp(0, h - 1)
        step = field[image, cy * w + cx, groups.view(1, 1, k)]  # [B, N, K, 2], no copy of field
        length = step.pow(2).sum(-1, keepdim=True).sqrt()  # [B, N, K, 1]
        step = step * (FIELD_RADIUS / length.clamp(min=FIELD_RADIUS))
        xy = (torch.stack([cx, cy], -1).to(xy.dtype) + 0.5 + step) * stride
    return torch.cat([xy, keypoints[..., 2:]], dim=-1)
