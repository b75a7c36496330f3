"""Keypoint heatmaps: joint groups, targets and refinement by hand, and the head's heatmap loss."""
import math

import pytest
import torch

from detect.box_coder import BoxCoder
from detect.heads import KeypointHead
from detect.heads.keypoint_heatmap import (KEEP_LOGIT, heatmap_targets, joint_groups,
                                           refine_keypoints)
from detect.losses import quality_focal_loss

H, W, S = 6, 8, 8.0


def _centres() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (torch.stack([xs, ys], -1).view(-1, 2).float() + 0.5) * S  # [H*W, 2]


def test_left_right_pairs_share_a_heatmap() -> None:
    assert joint_groups(5, ((1, 2), (3, 4))) == [0, 1, 1, 2, 2]
    assert joint_groups(3, ()) == [0, 1, 2]


def test_targets_peak_at_the_keypoint_cell_with_the_oks_width() -> None:
    # one object, area 100^2; keypoint 0 (sigma 0.02 -> width 4 px, kept at 0.5 cells = 4 px)
    # at the centre of cell (3, 2); keypoint 1 not labelled; keypoint 2 shares group 0
    kpts = torch.tensor([[[28.0, 20.0, 2.0], [5.0, 5.0, 0.0], [56.0, 40.0, 1.0]]])
    t = heatmap_targets(_centres(), kpts, torch.tensor([1e4]), torch.tensor([0.02, 0.02, 0.2]),
                        torch.tensor([0, 1, 0]), 2, S)
    assert t.shape == (H * W, 2)
    assert t[2 * W + 3, 0] == pytest.approx(1.0)
    assert t[2 * W + 2, 0] == pytest.approx(math.exp(-64 / (2 * 16)))  # one cell (8 px) away
    assert t[:, 1].max() == 0  # nothing labelled in group 1
    # keypoint 2: width 2 * 0.2 * 100 = 40 px, capped at 2 cells = 16 px; its cell (7, 5)
    assert t[5 * W + 7, 0] == pytest.approx(math.exp(-(4 ** 2 + 4 ** 2) / (2 * 16 ** 2)))
    empty = heatmap_targets(_centres(), torch.zeros(0, 3, 3), torch.zeros(0),
                            torch.ones(3), torch.tensor([0, 1, 0]), 2, S)
    assert empty.shape == (H * W, 2) and empty.max() == 0


def test_refinement_snaps_to_a_near_peak_and_keeps_the_regression_otherwise() -> None:
    heat = torch.full((1, H * W, 1), -10.0)
    heat[0, 2 * W + 3, 0] = 6.0  # a clear peak in cell (3, 2), centre (28, 20)
    groups = torch.tensor([0])
    near = torch.tensor([[[[32.0, 20.0, 0.9]]]])  # half a cell away
    out = refine_keypoints(near, heat, groups, (H, W), S)
    assert out[0, 0, 0, 0] == pytest.approx(28.0, abs=0.1) and out[0, 0, 0, 1] == pytest.approx(20.0, abs=0.1)
    assert out[0, 0, 0, 2] == pytest.approx(0.9)
    far = torch.tensor([[[[60.0, 44.0, 0.9]]]])  # 4 cells away: outside the window
    torch.testing.assert_close(refine_keypoints(far, heat, groups, (H, W), S), far, atol=0.02, rtol=0)
    flat = torch.full((1, H * W, 1), -10.0)  # no peak anywhere: the regression stays
    torch.testing.assert_close(refine_keypoints(near, flat, groups, (H, W), S), near, atol=0.02, rtol=0)
    edge = torch.tensor([[[[1.0, 1.0, 0.5]]]])  # cells outside the map take no part
    assert torch.isfinite(refine_keypoints(edge, heat, groups, (H, W), S)).all()
    # two equal peaks: the refined point is the softmax-weighted mean of the two cell centres
    # and the regressed point (hand-computed weights)
    two = torch.full((1, H * W, 1), -30.0)
    two[0, 2 * W + 2, 0] = two[0, 2 * W + 4, 0] = 2.0  # centres (20, 20) and (36, 20)
    r = torch.tensor([[[[30.0, 20.0, 1.0]]]])  # 10 px from the left peak, 6 from the right
    logit = [2.0 - d ** 2 / (2 * (1.5 * S) ** 2) for d in (10.0, 6.0)] + [KEEP_LOGIT]
    w = torch.softmax(torch.tensor(logit, dtype=torch.float64), 0)
    got = refine_keypoints(r, two, groups, (H, W), S)
    assert got[0, 0, 0, 0].item() == pytest.approx(float(w @ torch.tensor([20.0, 36.0, 30.0],
                                                                         dtype=torch.float64)), abs=1e-4)
    assert got[0, 0, 0, 1].item() == pytest.approx(20.0, abs=1e-4)


def test_quality_focal_loss_hand_case() -> None:
    logits, targets = torch.tensor([0.0, 2.0]), torch.tensor([0.5, 0.0])
    p = torch.sigmoid(torch.tensor(2.0))
    expected = torch.tensor([math.log(2) * 0.0, -math.log(1 - p) * p ** 2])
    torch.testing.assert_close(quality_focal_loss(logits, targets), expected)


def test_head_heatmap_loss_trains_the_heatmap_channels_only_on_the_finest_level() -> None:
    head = KeypointHead(8, 1, 3, None, BoxCoder(), (0.05, 0.05, 0.05), heatmap_groups=[0, 1, 1])
    assert head.outputs_per_anchor == 3 * 3 + 2 and head.num_heatmaps == 2
    levels = [(H, W), (3, 4)]
    pred = head([torch.randn(1, 8, h, w) for h, w in levels]).detach().requires_grad_()
    assert torch.sigmoid(pred[0, :H * W, 9:]).mean().item() == pytest.approx(0.01, abs=0.01)  # prior
    assert (pred[0, H * W:, 9:] == 0).all()  # maps are predicted on the finest level only
    from detect.structures import Matches, Target
    coarse = (_centres() * 2)[: 3 * 4]
    anchors = torch.cat([_centres(), coarse]).repeat(1, 2) + torch.tensor([-16.0, -16, 16, 16])
    kpts = torch.tensor([[[28.0, 20.0, 2.0], [12.0, 12.0, 2.0], [44.0, 28.0, 2.0]]])
    target = Target(torch.tensor([[8.0, 8.0, 48.0, 40.0]]), torch.tensor([0]), kpts)
    a = len(anchors)
    matched = torch.full((1, a), -1)
    matched[0, 2 * W + 3] = 0
    m = Matches(anchors, matched, torch.zeros(1, a, 4), torch.full((1, a), -1),
                torch.zeros(1, a, 3, 3), torch.ones(1, a), torch.tensor(1.0), torch.tensor(1.0),
                torch.tensor(3.0), num_anchors_per_level=(H * W, 12), targets=[target])
    m.boxes[0, 2 * W + 3] = target.boxes[0]
    m.keypoints[0, 2 * W + 3] = kpts[0]
    losses = head.loss(pred, m)
    assert set(losses) == {"loss_kpt", "loss_kpt_l1", "loss_kpt_vis", "loss_kpt_heat"}
    losses["loss_kpt_heat"].backward()
    grad = pred.grad[0]
    assert grad[: H * W, 9:].abs().sum() > 0
    assert grad[:, :9].abs().sum() == 0 and grad[H * W:].abs().sum() == 0
