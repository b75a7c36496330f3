"""Keypoint heatmaps on the finest FPN level, and the refinement that snaps regressed keypoints
onto them (the idea of CenterNet and KAPAO: regression finds the joint, a heatmap places it).

A regressed keypoint must come from one feature vector at the object's anchor, so it lands near
its joint but rarely on it. A heatmap is local: "a wrist is here" is a pattern a convolution sees
at every position, and every labelled keypoint trains it. The keypoint head predicts ``J``
heatmap logits per anchor; on the finest level (stride ``s``, one anchor per location) they form
J maps, one per joint *type*: a left/right pair shares a map (which side a joint is on is the
regression's call, which the heatmap cannot make locally).

Refinement, per keypoint: the (2R + 1)^2 cells around the regressed point ``r`` compete with
``r`` itself in one softmax,

    logit_c = h_c - |p_c - r|^2 / (2 tau^2)       (p_c: cell centre, h_c: heatmap logit)
    logit_r = ``keep_logit``
    refined = sum_c softmax(logit)_c p_c + softmax(logit)_r r

so a clear peak near ``r`` wins, its neighbours interpolate it below a cell, and where the
heatmap sees nothing the regression stays. Pure tensor functions; batched for the exported graph.
"""
from __future__ import annotations

import torch
from torch import Tensor

RADIUS = 2  # cells searched on each side of the regressed point
TAU = 1.5  # cells: the distance prior's scale
KEEP_LOGIT = -1.0  # the regressed point's own logit: a peak must be more likely than sigmoid(-1)
MIN_SIGMA, MAX_SIGMA = 0.5, 2.0  # target Gaussian width, in cells
# the heatmap loss's weight among the keypoint head's terms: at 1 it dominated the head's total
# and the regression it refines learned less (docs/KEYPOINTS.md)
HEATMAP_WEIGHT = 0.2


def joint_groups(num_keypoints: int, flip_pairs: tuple[tuple[int, int], ...]) -> list[int]:
    """[K]: the heatmap of each keypoint; the two keypoints of a flip pair share one."""
    group = list(range(num_keypoints))
    for a, b in flip_pairs:
        group[max(a, b)] = group[min(a, b)]
    ids = {g: i for i, g in enumerate(dict.fromkeys(group))}
    return [ids[g] for g in group]


def heatmap_targets(centres: Tensor, keypoints: Tensor, areas: Tensor, sigmas: Tensor,
                    groups: Tensor, num_groups: int, stride: float) -> Tensor:
    """Soft targets of one image's heatmaps: at each cell, the largest Gaussian of the joints of
    its type.

    Args:
        centres: [M, 2] cell centres (pixels) of the finest level.
        keypoints: [N, K, 3] ground truth; only labelled keypoints (v > 0) count.
        areas: [N] object areas: the Gaussian's width is the joint's OKS scale
            ``2 * sigma_k * sqrt(area)``, kept within [MIN_SIGMA, MAX_SIGMA] cells.
        sigmas: [K] OKS sigmas; groups: [K] heatmap of each keypoint; stride: cell size.
    Returns:
        [M, J] targets in [0, 1].
    """
    width = (2 * sigmas[None] * areas.clamp(min=1).sqrt()[:, None]).clamp(
        MIN_SIGMA * stride, MAX_SIGMA * stride)  # [N, K] pixels
    d2 = (centres[:, None, None, :] - keypoints[None, ..., :2]).pow(2).sum(-1)  # [M, N, K]
    g = torch.exp(-d2 / (2 * width.pow(2))) * (keypoints[..., 2] > 0)  # [M, N, K]
    per_keypoint = g.amax(dim=1) if g.shape[1] else g.new_zeros(len(centres), keypoints.shape[1])
    out = per_keypoint.new_zeros(len(centres), num_groups)  # [M, J]
    index = groups[None].expand_as(per_keypoint)
    return out.scatter_reduce(1, index, per_keypoint, reduce="amax")


def refine_keypoints(keypoints: Tensor, heat: Tensor, groups: Tensor, size: tuple[int, int],
                     stride: float) -> Tensor:
    """Regressed keypoints moved onto nearby heatmap peaks (module docstring).

    Args:
        keypoints: [B, N, K, 3] (x, y, score) in pixels of the network input.
        heat: [B, H * W, J] heatmap logits of the finest level, row-major cells.
        groups: [K] heatmap of each keypoint; size: (H, W); stride: cell size in pixels.
    Returns:
        [B, N, K, 3], scores unchanged.
    """
    h, w = size
    b, n, k = keypoints.shape[:3]
    xy = keypoints[..., :2]  # [B, N, K, 2]
    steps = torch.arange(-RADIUS, RADIUS + 1, device=xy.device)
    offsets = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), -1).view(-1, 2)  # [W2, 2]
    cells = torch.floor(xy / stride).long()[..., None, :] + offsets  # [B, N, K, W2, 2]
    cx, cy = cells[..., 0], cells[..., 1]
    inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)  # [B, N, K, W2]
    rows = cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)
    index = rows * heat.shape[-1] + groups.view(1, 1, k, 1)  # into heat[b].flatten()
    logits = heat.flatten(1).gather(1, index.flatten(1)).view(index.shape)  # [B, N, K, W2]
    centres = (cells.to(xy.dtype) + 0.5) * stride  # [B, N, K, W2, 2]
    logits = logits - (centres - xy[..., None, :]).pow(2).sum(-1) / (2 * (TAU * stride) ** 2)
    logits = torch.where(inside, logits, torch.full_like(logits, float("-inf")))
    keep = torch.full_like(logits[..., :1], KEEP_LOGIT)
    weights = torch.softmax(torch.cat([logits, keep], -1), dim=-1)  # [B, N, K, W2 + 1]
    points = torch.cat([centres, xy[..., None, :]], dim=-2)  # [B, N, K, W2 + 1, 2]
    refined = (weights[..., None] * points).sum(-2)  # [B, N, K, 2]
    return torch.cat([refined, keypoints[..., 2:]], dim=-1)
