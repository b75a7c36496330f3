import math

import pytest
import torch
import torchvision.ops

from detect.nms import nms_keep, postprocess, soft_nms_keep


def random_boxes(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """[*shape, 4] valid xyxy boxes, dense enough to overlap often."""
    xy = torch.rand(*shape, 2, generator=generator) * 60
    wh = torch.rand(*shape, 2, generator=generator) * 40 + 1
    return torch.cat([xy, xy + wh], dim=-1)


def row_boxes(num_images: int, num_anchors: int) -> torch.Tensor:
    """[B, A, 4] disjoint boxes; anchor a is [10a, 0, 10a + 5, 5], so x1 / 10 recovers it."""
    x = torch.arange(num_anchors, dtype=torch.float32) * 10
    boxes = torch.stack([x, torch.zeros_like(x), x + 5, torch.full_like(x, 5)], dim=1)
    return boxes.expand(num_images, -1, -1).clone()


def anchors_of(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 0] / 10).round().long()


def test_nms_keep_matches_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes((200,), g)
    scores = torch.randint(0, 6, (200,), generator=g) / 5.0  # many ties
    labels = torch.randint(0, 3, (200,), generator=g)
    keep = nms_keep(boxes, scores, labels, 0.5)
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, labels, 0.5))
    assert len(keep) < 200  # something was suppressed
    agnostic = nms_keep(boxes, scores, labels, 0.5, class_agnostic=True)
    assert torch.equal(agnostic, torchvision.ops.nms(boxes, scores, 0.5))
    assert len(agnostic) < len(keep)
    empty = nms_keep(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,)


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_nms_keep_of_thousands_and_its_limit(class_agnostic: bool) -> None:
    """Above 1000 boxes torchvision loops over the classes; ours moves them apart and, with a
    limit, runs NMS on growing prefixes by score: the same boxes either way."""
    g = torch.Generator().manual_seed(3)
    n = 3000
    xy = torch.rand(n, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 20], 1)  # most suppressed
    scores = torch.rand(n, generator=g)  # no ties
    labels = torch.randint(0, 4, (n,), generator=g)
    if class_agnostic:
        full = torchvision.ops.nms(boxes, scores, 0.5)
    else:
        full = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)
    assert torch.equal(nms_keep(boxes, scores, labels, 0.5, class_agnostic), full)
    best = scores.argsort(descending=True)[:4 * 150]  # the first prefix for a limit of 150
    assert len(torchvision.ops.nms(boxes[best], scores[best], 0.5)) < 150 < len(full)
    for limit in (1, 20, 150, len(full), n):
        kept = nms_keep(boxes, scores, labels, 0.5, class_agnostic, limit=limit)
        assert torch.equal(kept, full[:limit]), limit


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_postprocess_equals_batched_nms_on_one_level(class_agnostic: bool) -> None:
    g = torch.Generator().manual_seed(1)
    num_images, num_anchors, num_classes = 2, 80, 3
    boxes = random_boxes((num_images, num_anchors), g)
    scores = torch.randint(0, 6, (num_images, num_anchors, num_classes), generator=g) / 5.0  # ties
    dets = postprocess(scores, boxes, [num_anchors], score_thresh=0.0, topk_per_level=10**6,
                       max_detections=10**6, class_agnostic=class_agnostic)
    assert len(dets) == num_images
    for b, det in enumerate(dets):
        flat_boxes = boxes[b].repeat_interleave(num_classes, dim=0)  # [A*C, 4]
        flat_scores = scores[b].flatten()  # [A*C]
        flat_labels = torch.arange(num_classes).repeat(num_anchors)  # [A*C]
        above = flat_scores > 0
        flat_boxes, flat_scores = flat_boxes[above], flat_scores[above]
        flat_labels = flat_labels[above]
        if class_agnostic:
            keep = torchvision.ops.nms(flat_boxes, flat_scores, 0.5)
        else:
            keep = torchvision.ops.batched_nms(flat_boxes, flat_scores, flat_labels, 0.5)
        assert 0 < len(keep) < above.sum()
        assert torch.equal(det.boxes, flat_boxes[keep])
        assert torch.equal(det.scores, flat_scores[keep])
        assert torch.equal(det.labels, flat_labels[keep])
        assert det.labels.dtype == torch.int64 and det.fields == {}


def test_postprocess_respects_per_level_topk_and_max_detections() -> None:
    g = torch.Generator().manual_seed(2)
    levels, num_classes, k = [30, 20, 2], 2, 5  # the last level has fewer than k pairs
    num_anchors = sum(levels)
    boxes = row_boxes(2, num_anchors)  # disjoint: NMS removes nothing
    scores = torch.rand(2, num_anchors, num_classes, generator=g)
    scores[1, 30:50] = 0.01  # image 1, level 1: nothing above the threshold
    dets = postprocess(scores, boxes, levels, score_thresh=0.05, topk_per_level=k,
                       max_detections=1000)
    many = postprocess(scores, boxes, levels, score_thresh=0.05, topk_per_level=k, max_detections=7)
    for b in range(2):
        expected = []
        start = 0
        for n in levels:
            level = scores[b, start : start + n].flatten()  # [A_l*C]
            top = level.topk(min(k, level.numel())).values
            expected.append(top[top > 0.05])
            start += n
        expected = torch.cat(expected).sort(descending=True).values
        assert torch.equal(dets[b].scores, expected)
        assert torch.equal(many[b].scores, expected[:7])
        anchors = anchors_of(dets[b].boxes)
        torch.testing.assert_close(scores[b, anchors, dets[b].labels], dets[b].scores)
    assert len(dets[0]) == 2 * k + int((scores[0, 50:] > 0.05).sum())
    assert len(dets[1]) == k + int((scores[1, 50:] > 0.05).sum())


def test_postprocess_class_agnostic() -> None:
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10]]])  # IoU 0.81
    scores = torch.tensor([[[0.9, 0.0], [0.0, 0.8]]])  # different classes
    aware = postprocess(scores, boxes, [2])[0]
    assert aware.labels.tolist() == [0, 1]
    agnostic = postprocess(scores, boxes, [2], class_agnostic=True)[0]
    assert agnostic.labels.tolist() == [0] and agnostic.scores.tolist() == [pytest.approx(0.9)]


def test_keypoints_travel_with_boxes() -> None:
    g = torch.Generator().manual_seed(3)
    num_anchors, num_kpts = 40, 4
    boxes = row_boxes(2, num_anchors)
    scores = torch.rand(2, num_anchors, 3, generator=g)
    keypoints = torch.rand(2, num_anchors, num_kpts, 3, generator=g)
    keypoints[..., 0] = torch.arange(num_anchors, dtype=torch.float32)[:, None]  # x = anchor index
    dets = postprocess(scores, boxes, [25, 15], {"keypoints": keypoints}, topk_per_level=6,
                       max_detections=9)
    for b, det in enumerate(dets):
        assert det.fields["keypoints"] is not None and det.fields["keypoints"].shape == (9, num_kpts, 3)
        anchors = anchors_of(det.boxes)
        assert torch.equal(det.fields["keypoints"], keypoints[b, anchors])  # scores untouched
        assert torch.equal(det.fields["keypoints"][:, 0, 0].long(), anchors)


def test_empty_outputs_have_the_right_shapes() -> None:
    def check(det, num_kpts: int) -> None:
        assert det.boxes.shape == (0, 4) and det.scores.shape == (0,)
        assert det.labels.shape == (0,) and det.labels.dtype == torch.int64
        assert det.fields["keypoints"].shape == (0, num_kpts, 3)

    no_anchors = postprocess(torch.zeros(2, 0, 3), torch.zeros(2, 0, 4), [0, 0],
                             {"keypoints": torch.zeros(2, 0, 5, 3)}, image_sizes=[(10, 10)] * 2)
    assert len(no_anchors) == 2
    for det in no_anchors:
        check(det, 5)
    low = torch.full((2, 6, 3), 0.01)
    low[1, 2, 0] = 0.9
    dets = postprocess(low, row_boxes(2, 6), [6], {"keypoints": torch.zeros(2, 6, 5, 3)})
    check(dets[0], 5)
    assert len(dets[1]) == 1 and dets[1].labels.tolist() == [0]
    for sigma in (None, 0.5):
        check(postprocess(low, row_boxes(2, 6), [6], {"keypoints": torch.zeros(2, 6, 5, 3)},
                          soft_nms_sigma=sigma)[0], 5)
    assert postprocess(torch.zeros(0, 6, 3), torch.zeros(0, 6, 4), [6]) == []


def test_clips_boxes_to_image_size() -> None:
    boxes = torch.tensor([[[-5.0, -5.0, 50.0, 200.0]], [[-5.0, -5.0, 50.0, 200.0]]])
    scores = torch.full((2, 1, 1), 0.9)
    dets = postprocess(scores, boxes, [1], image_sizes=[(100, 40), (300, 60)])  # (height, width)
    assert dets[0].boxes.tolist() == [[0.0, 0.0, 40.0, 100.0]]
    assert dets[1].boxes.tolist() == [[0.0, 0.0, 50.0, 200.0]]
    assert postprocess(scores, boxes, [1])[0].boxes.tolist() == [[-5.0, -5.0, 50.0, 200.0]]


def soft_nms_case() -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.tensor([[[0.0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10], [50, 50, 60, 60]]])
    scores = torch.zeros(1, 4, 2)  # [B, A, C]
    scores[0, 0, 0], scores[0, 1, 0], scores[0, 2, 1], scores[0, 3, 0] = 0.9, 0.8, 0.7, 0.6
    return scores, boxes


def test_soft_nms_decays_overlapping_scores() -> None:
    scores, boxes = soft_nms_case()
    sigma = 0.5
    third = 1 / 3  # IoU of the first two boxes: 50 / 150
    det = postprocess(scores, boxes, [4], soft_nms_sigma=sigma, nms_iou=0.0)[0]
    # class-aware: box 1 decays by the overlap with box 0; box 2 (other class) does not
    expected = sorted([0.9, 0.8 * math.exp(-third**2 / sigma), 0.7, 0.6], reverse=True)
    torch.testing.assert_close(det.scores, torch.tensor(expected))
    assert det.labels.tolist() == [0, 1, 0, 0]
    # class-agnostic: box 2 (identical to box 0, IoU 1) decays, then again by box 1
    det = postprocess(scores, boxes, [4], soft_nms_sigma=sigma, class_agnostic=True)[0]
    second = 0.8 * math.exp(-third**2 / sigma)
    third_score = 0.7 * math.exp(-1 / sigma) * math.exp(-third**2 / sigma)
    torch.testing.assert_close(det.scores, torch.tensor([0.9, second, 0.6, third_score]))
    # ... and it falls under a higher threshold, so it is dropped
    det = postprocess(scores, boxes, [4], score_thresh=0.08, soft_nms_sigma=sigma,
                      class_agnostic=True)[0]
    assert len(det) == 3 and det.labels.tolist() == [0, 0, 0]
    det = postprocess(scores, boxes, [4], soft_nms_sigma=sigma, max_detections=2)[0]
    assert len(det) == 2


def test_soft_nms_keep_with_tiny_sigma_equals_hard_nms_at_zero_iou() -> None:
    g = torch.Generator().manual_seed(4)
    boxes = random_boxes((60,), g)
    scores = torch.rand(60, generator=g) * 0.9 + 0.1
    labels = torch.randint(0, 2, (60,), generator=g)
    keep, kept_scores = soft_nms_keep(boxes, scores, labels, 1e-6, 0.05, 1000)
    hard = torchvision.ops.batched_nms(boxes, scores, labels, 0.0)
    assert torch.equal(keep, hard)
    assert torch.equal(kept_scores, scores[hard])


def test_rejects_mismatched_levels() -> None:
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        postprocess(torch.zeros(1, 5, 2), torch.zeros(1, 5, 4), [2, 2])


def test_postprocess_with_few_or_no_candidates_above_the_threshold() -> None:
    """The per-level top-k shrinks to the most candidates above the threshold of any image:
    the same detections as a full top-k, none where nothing is above it."""
    g = torch.Generator().manual_seed(4)
    levels = [40, 10]
    boxes = row_boxes(2, 50)  # disjoint
    scores = torch.rand(2, 50, 3, generator=g) * 0.05  # nothing above 0.05 ...
    scores[0, 3, 1], scores[0, 45, 2], scores[1, 7, 0] = 0.5, 0.3, 0.9  # ... but these three
    dets = postprocess(scores, boxes, levels, score_thresh=0.05, topk_per_level=1000)
    assert torch.equal(dets[0].scores, torch.tensor([0.5, 0.3]))
    assert torch.equal(dets[0].labels, torch.tensor([1, 2]))
    assert torch.equal(anchors_of(dets[0].boxes), torch.tensor([3, 45]))
    assert torch.equal(anchors_of(dets[1].boxes), torch.tensor([7]))
    none = postprocess(scores.clamp(max=0.05), boxes, levels, score_thresh=0.05)
    assert [len(d) for d in none] == [0, 0]
