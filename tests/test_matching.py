import pytest
import torch
import torchvision
from torchvision.models.detection._utils import Matcher as TVMatcher

from detect.anchors import AnchorGenerator
from detect.matching import ATSSMatcher, IoUMatcher, match_batch
from detect.structures import Matches, Target

BG, IGN = Matches.BACKGROUND, Matches.IGNORED
NO_IGNORE = torch.zeros(0, 4)

# Five 10x10 anchors in a row plus one far away; shared by several tests.
ROW = torch.tensor(
    [[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0], [20.0, 0.0, 30.0, 10.0], [30.0, 0.0, 40.0, 10.0],
     [100.0, 100.0, 110.0, 110.0]]
)  # [A=5, 4]


# ----------------------------------------------------------------------------- IoUMatcher


def test_iou_matcher_worked_example():
    # The example of IoUMatcher's docstring.
    iou = torch.tensor(
        [[0.90, 0.45, 0.00, 0.00],
         [0.10, 0.20, 0.30, 0.30],  # gt1's best anchors a2, a3 tie at 0.3 < bg_iou
         [0.00, 0.00, 0.00, 0.00]]  # gt2 overlaps nothing: no low-quality match
    )
    assert IoUMatcher(0.5, 0.4, allow_low_quality=True).match_iou(iou).tolist() == [0, IGN, 1, 1]
    assert IoUMatcher(0.5, 0.4, allow_low_quality=False).match_iou(iou).tolist() == [0, IGN, BG, BG]


def test_iou_matcher_low_quality_goes_to_the_gt_it_is_best_for():
    # a0's arg-max is gt0 (0.45, ignore band) but a0 is gt1's best anchor: a0 -> gt1.
    # a1 is gt0's best (0.6 >= fg) -> gt0. torchvision would give a0 to gt0, leaving gt1 without an anchor.
    iou = torch.tensor([[0.45, 0.60], [0.35, 0.10]])
    assert IoUMatcher().match_iou(iou).tolist() == [1, 0]
    # a0 is the best anchor of both gts: the higher IoU (gt1, 0.35) wins; a1 (0.2) is background.
    iou = torch.tensor([[0.30, 0.10], [0.35, 0.20]])
    assert IoUMatcher().match_iou(iou).tolist() == [1, BG]


def test_iou_matcher_thresholds_match_torchvision_without_low_quality():
    g = torch.Generator().manual_seed(0)
    iou = torch.rand(6, 50, generator=g)
    expected = TVMatcher(0.5, 0.4, allow_low_quality_matches=False)(iou)
    torch.testing.assert_close(IoUMatcher(0.5, 0.4, allow_low_quality=False).match_iou(iou), expected)


def test_iou_matcher_on_boxes_uses_iou():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [12.0, 0.0, 22.0, 10.0]])
    # a1 vs gt1: intersection 8x10 = 80, union 120 -> 0.667 >= 0.5; a2 vs gt1: 20 / 180 -> background
    matched = IoUMatcher()(ROW, [5], gt, NO_IGNORE)
    assert matched.tolist() == [0, 1, BG, BG, BG]


# ----------------------------------------------------------------------------- ATSSMatcher


def grid_anchors(sizes: list[tuple[int, int]], strides: tuple[int, ...]) -> tuple[torch.Tensor, list[int]]:
    """ATSS-style square anchors of size 2 x stride (small grids keep hand computation easy)."""
    gen = AnchorGenerator(strides, sizes=[2 * s for s in strides], ratios=(1.0,), scales=(1.0,))
    return gen(sizes, device="cpu"), gen.num_anchors_per_level(sizes)


def test_atss_threshold_is_adaptive():
    # One 4x4 level, stride 8, 16x16 anchors; anchor a = 4 * row + col, centre (8 col + 4, 8 row + 4).
    anchors, per_level = grid_anchors([(4, 4)], (8,))
    gt = torch.tensor([[4.0, 4.0, 20.0, 20.0]])  # centre (12, 12) == centre of a5, same box: IoU 1
    # topk=5 candidates: a5 (distance 0) and its 4 neighbours a1, a4, a6, a9 (distance 8, next is 11.3).
    # Each neighbour overlaps half the gt: IoU = 128 / 384 = 1/3.
    # mean = (1 + 4/3) / 5 = 0.467; unbiased std = sqrt((0.533^2 + 4 * 0.133^2) / 4) = 0.298
    # threshold = 0.765: only a5 is positive (a plain IoU >= 0.3 rule would also take the neighbours).
    matched = ATSSMatcher(topk=5)(anchors, per_level, gt, NO_IGNORE)
    expected = torch.full((16,), BG)
    expected[5] = 0
    assert matched.tolist() == expected.tolist()


def test_atss_topk_is_per_level():
    # Level 0: 4x4, stride 8, 16x16 anchors (0..15); level 1: 2x2, stride 16, 32x32 anchors (16..19).
    anchors, per_level = grid_anchors([(4, 4), (2, 2)], (8, 16))
    gt = torch.tensor([[8.0, 8.0, 40.0, 40.0]])  # 32x32, centre (24, 24) == centre of anchor 19
    # topk=4 per level: level 0 -> a10, a11, a14, a15 (all at distance 5.66), each fully inside the
    # gt: IoU 256 / 1024 = 0.25; level 1 -> all four: a16 0.143, a17 = a18 = 1/3, a19 = 1.
    # mean = 0.351, std = 0.269, threshold = 0.620 -> only a19 (level 1) is positive.
    matcher = ATSSMatcher(topk=4)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert sorted(matcher.candidates(centers, per_level, gt)[0].tolist()) == [10, 11, 14, 15, 16, 17, 18, 19]
    matched = matcher(anchors, per_level, gt, NO_IGNORE)
    assert matched[19].item() == 0
    assert (matched[:19] == BG).all()


def test_atss_conflict_goes_to_highest_iou():
    anchors, per_level = grid_anchors([(4, 4)], (8,))
    gt_b = torch.tensor([6.0, 4.0, 22.0, 20.0])  # centre (14, 12)
    gt_a = torch.tensor([4.0, 4.0, 20.0, 20.0])  # == a5
    # gt_b alone: candidates a5 (0.778), a6 (0.455), a1, a9 (0.28), a4 (0.231); threshold
    # 0.405 + 0.225 = 0.630 -> a5 is its positive. gt_a also claims a5, with IoU 1 > 0.778: a5 -> gt_a.
    alone = ATSSMatcher(topk=5)(anchors, per_level, gt_b[None], NO_IGNORE)
    assert alone[5].item() == 0 and (alone != BG).sum().item() == 1
    both = ATSSMatcher(topk=5)(anchors, per_level, torch.stack([gt_b, gt_a]), NO_IGNORE)
    assert both[5].item() == 1  # index 1 is gt_a
    assert (both != BG).sum().item() == 1  # gt_b is left with nothing


def test_atss_requires_centre_inside_gt():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor(
        [[1.0, 1.0, 9.0, 9.0],  # centre (5, 5) inside, IoU 0.64
         [-10.2, 0.0, 9.8, 10.0]]  # centre (-0.2, 5) just outside, IoU 98 / 202 = 0.485
        + [[20.0 + 7 * i, 0.0, 30.0 + 7 * i, 10.0] for i in range(6)]  # far away, IoU 0
    )
    # topk=8 takes all anchors: mean 0.141 + std 0.264 = threshold 0.404, so both a0 and a1 pass the
    # IoU test; a1 is rejected only because its centre is outside the gt.
    assert ATSSMatcher(topk=8)(anchors, [8], gt, NO_IGNORE).tolist()[:2] == [0, BG]
    assert ATSSMatcher(topk=8, inside_eps=-1e9)(anchors, [8], gt, NO_IGNORE).tolist()[:2] == [0, 0]


def test_atss_std_is_unbiased():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0],  # IoU 1
         [0.0, 0.0, 10.0, 8.5]]  # IoU 0.85, centre (5, 4.25) inside
        + [[50.0 + 20 * i, 0.0, 60.0 + 20 * i, 10.0] for i in range(3)]  # IoU 0
    )
    # IoUs [1, 0.85, 0, 0, 0]: mean 0.37; unbiased std 0.509 -> threshold 0.879 (a1 out);
    # a biased std (0.456) would give 0.826 and let a1 in.
    assert ATSSMatcher(topk=5)(anchors, [5], gt, NO_IGNORE).tolist() == [0, BG, BG, BG, BG]


def reference_atss(anchors, per_level, gt, topk):
    """Slow per-gt, per-level loop implementation of ATSS (no ignore regions)."""
    iou = torchvision.ops.box_iou(gt, anchors)
    ac = (anchors[:, :2] + anchors[:, 2:]) / 2
    best = torch.full((anchors.shape[0],), -1.0)
    matched = torch.full((anchors.shape[0],), BG)
    for n, box in enumerate(gt):
        gc = (box[:2] + box[2:]) / 2
        cands, start = [], 0
        for count in per_level:
            d = ((ac[start:start + count] - gc) ** 2).sum(1).sqrt()
            cands += (d.argsort()[:topk] + start).tolist()
            start += count
        vals = iou[n, cands]
        thr = vals.mean() + vals.std()
        for a in cands:
            x, y = ac[a].tolist()
            inside = min(x - box[0], y - box[1], box[2] - x, box[3] - y) > 0.01
            if iou[n, a] >= thr and inside and iou[n, a] > best[a]:
                best[a], matched[a] = iou[n, a], n
    return matched


def test_atss_matches_reference_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    anchors, per_level = grid_anchors([(8, 8), (4, 4), (2, 2)], (8, 16, 32))
    xy = torch.rand(6, 2, generator=g) * 50
    gt = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 40 + 4], dim=1)
    matched = ATSSMatcher(topk=5)(anchors, per_level, gt, NO_IGNORE)
    assert matched.tolist() == reference_atss(anchors, per_level, gt, 5).tolist()
    assert (matched >= 0).any()


# ----------------------------------------------------------------------------- both matchers

MATCHERS = [IoUMatcher(), ATSSMatcher(topk=9)]


@pytest.mark.parametrize("matcher", MATCHERS, ids=["iou", "atss"])
def test_ignore_regions_turn_background_into_ignored(matcher):
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # == a0: a0 is positive for both matchers
    crowd = torch.tensor([[0.0, 0.0, 25.0, 10.0]])  # covers a0, a1 fully and half of a2
    # a0 stays positive although inside the crowd box; a1 (IoA 1) and a2 (IoA 0.5) become ignored;
    # a3 and a4 (IoA 0) stay background.
    assert matcher(ROW, [5], gt, crowd).tolist() == [0, IGN, IGN, BG, BG]
    assert matcher(ROW, [5], gt, NO_IGNORE).tolist() == [0, BG, BG, BG, BG]
    stricter = type(matcher)(ignore_ioa=0.6)
    assert stricter(ROW, [5], gt, crowd).tolist() == [0, IGN, BG, BG, BG]


@pytest.mark.parametrize("matcher", MATCHERS, ids=["iou", "atss"])
def test_zero_gt_is_all_background(matcher):
    matched = matcher(ROW, [5], torch.zeros(0, 4), NO_IGNORE)
    assert matched.dtype == torch.int64
    assert matched.tolist() == [BG] * 5
    crowd_only = matcher(ROW, [5], torch.zeros(0, 4), torch.tensor([[95.0, 95.0, 120.0, 120.0]]))
    assert crowd_only.tolist() == [BG, BG, BG, BG, IGN]


# ----------------------------------------------------------------------------- match_batch


def batch_targets(with_keypoints: bool) -> list[Target]:
    kpts0 = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3) + 1  # [N=2, K=2, 3]
    return [
        Target(
            boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0], [30.0, 0.0, 40.0, 10.0]]),  # -> a0, a3
            labels=torch.tensor([3, 1]),
            keypoints=kpts0 if with_keypoints else None,
            areas=torch.tensor([50.0, 70.0]),
        ),
        Target(  # no objects
            boxes=torch.zeros(0, 4),
            labels=torch.zeros(0, dtype=torch.int64),
            keypoints=torch.zeros(0, 2, 3) if with_keypoints else None,
        ),
        Target(boxes=torch.tensor([[10.0, 0.0, 20.0, 10.0]]), labels=torch.tensor([2])),  # -> a1, no keypoints
    ]


def test_match_batch_gathers_per_anchor_targets():
    m = match_batch(IoUMatcher(), ROW, [5], batch_targets(with_keypoints=True))
    assert m.matched.tolist() == [[0, BG, BG, 1, BG], [BG] * 5, [BG, 0, BG, BG, BG]]
    assert m.boxes.shape == (3, 5, 4)
    assert m.labels.tolist() == [[3, -1, -1, 1, -1], [-1] * 5, [-1, 2, -1, -1, -1]]
    assert m.areas.tolist() == [[50.0, 1, 1, 70.0, 1], [1.0] * 5, [1, 100.0, 1, 1, 1]]  # image 2: box area
    torch.testing.assert_close(m.boxes[0, 3], torch.tensor([30.0, 0.0, 40.0, 10.0]))
    torch.testing.assert_close(m.boxes[2, 1], torch.tensor([10.0, 0.0, 20.0, 10.0]))
    assert m.boxes[1].abs().sum() == 0 and m.boxes[0, 1].abs().sum() == 0
    targets = batch_targets(with_keypoints=True)
    keypoints = m.gather([t.keypoints if t.keypoints is not None else torch.zeros(len(t.boxes), 2, 3)
                          for t in targets], 0.0)  # what a head gathers for itself
    assert keypoints.shape == (3, 5, 2, 3)
    kpts0 = targets[0].keypoints
    torch.testing.assert_close(keypoints[0, 0], kpts0[0])
    torch.testing.assert_close(keypoints[0, 3], kpts0[1])
    assert keypoints[0, 1].abs().sum() == 0 and keypoints[1:].abs().sum() == 0
    assert m.gather([t.labels.float() for t in targets], -7.0)[1].tolist() == [-7.0] * 5
    assert m.num_positive.item() == 3.0


def test_match_batch_without_keypoints_and_all_empty():
    m = match_batch(ATSSMatcher(), ROW, [5], batch_targets(with_keypoints=False))
    assert m.matched.shape == m.labels.shape == m.areas.shape == (3, 5)
    empty = Target(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64))
    m = match_batch(ATSSMatcher(), ROW, [5], [empty, empty])
    assert m.boxes.shape == (2, 5, 4) and m.boxes.abs().sum() == 0
    assert (m.labels == -1).all() and (m.areas == 1).all() and not m.positive.any()
