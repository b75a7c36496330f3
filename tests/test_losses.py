import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.ops
from pycocotools.cocoeval import COCOeval

from detect.losses import (
    COCO_PERSON_KEYPOINTS,
    COCO_PERSON_SIGMAS,
    COCO_PERSON_SKELETON,
    focal_loss,
    giou_loss,
    oks,
    oks_loss,
    smooth_l1_loss,
    visibility_loss,
)


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 4] valid xyxy boxes."""
    xy = torch.rand(n, 2, generator=generator) * 100
    wh = torch.rand(n, 2, generator=generator) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


def random_keypoints(p: int, k: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """gt [p, k, 3] with at least one labelled keypoint per object, areas [p], pred [p, k, 2]."""
    areas = torch.rand(p, generator=generator, dtype=torch.float64) * 5000 + 100
    xy = torch.rand(p, k, 2, generator=generator, dtype=torch.float64) * 200
    vis = torch.randint(0, 3, (p, k), generator=generator).double()
    vis[:, 0] = 2
    noise = torch.randn(p, k, 2, generator=generator, dtype=torch.float64)
    pred = xy + noise * areas.sqrt()[:, None, None] * 0.05
    return torch.cat([xy, vis[..., None]], dim=-1), areas, pred


# ---- focal -------------------------------------------------------------------------------------

def test_focal_matches_torchvision_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g) * 3
    targets = F.one_hot(torch.randint(0, 8, (50,), generator=g), 8)[:, :7].float()  # 8 = background
    expected = torchvision.ops.sigmoid_focal_loss(logits, targets, 0.25, 2.0, reduction="sum")
    loss = focal_loss(logits, targets)
    assert loss.shape == ()
    torch.testing.assert_close(loss, expected)
    expected = torchvision.ops.sigmoid_focal_loss(logits, targets, 0.5, 1.0, reduction="sum")
    torch.testing.assert_close(focal_loss(logits, targets, alpha=0.5, gamma=1.0), expected)


def test_focal_hand_computed() -> None:
    logits = torch.tensor([[0.5, -1.0]])
    targets = torch.tensor([[1.0, 0.0]])
    p = torch.sigmoid(logits)[0]
    positive = -0.25 * (1 - p[0]) ** 2 * math.log(p[0])
    negative = -0.75 * p[1] ** 2 * math.log(1 - p[1])
    torch.testing.assert_close(focal_loss(logits, targets), positive + negative)


# ---- GIoU and smooth L1 ------------------------------------------------------------------------

def test_giou_matches_torchvision_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(1)
    pred, target = random_boxes(40, g), random_boxes(40, g)
    loss = giou_loss(pred, target)
    assert loss.shape == (40,)
    torch.testing.assert_close(loss, torchvision.ops.generalized_box_iou_loss(pred, target))
    torch.testing.assert_close(giou_loss(target, target), torch.zeros(40), atol=1e-6, rtol=0)


def test_giou_hand_computed() -> None:
    # intersection 1, union 7, enclosing box 9: GIoU = 1/7 - (9 - 7)/9
    loss = giou_loss(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]]))
    torch.testing.assert_close(loss, torch.tensor([1 - (1 / 7 - 2 / 9)]))


def test_smooth_l1_hand_computed() -> None:
    beta = 1 / 9
    pred = torch.tensor([[0.05, 1.0], [-0.5, 0.0]])
    loss = smooth_l1_loss(pred, torch.zeros(2, 2))
    expected = torch.tensor([[0.5 * 0.05**2 / beta, 1.0 - 0.5 * beta], [0.5 - 0.5 * beta, 0.0]])
    assert loss.shape == (2, 2)
    torch.testing.assert_close(loss, expected)


# ---- OKS ---------------------------------------------------------------------------------------

def test_oks_hand_computed() -> None:
    gt = torch.tensor([[[10.0, 10.0, 2.0], [20.0, 20.0, 1.0]]])  # [1, 2, 3]
    pred = torch.tensor([[[13.0, 10.0], [23.0, 24.0]]])  # distances 3 and 5
    sigmas = torch.tensor([0.1, 0.2])  # k^2 = 0.04, 0.16
    area = torch.tensor([100.0])
    expected = (math.exp(-9 / (2 * 100 * 0.04)) + math.exp(-25 / (2 * 100 * 0.16))) / 2
    torch.testing.assert_close(oks(pred, gt, area, sigmas), torch.tensor([expected]))
    gt[0, 1, 2] = 0  # the second keypoint is no longer labelled: only the first counts
    torch.testing.assert_close(oks(pred, gt, area, sigmas), torch.tensor([math.exp(-9 / 8)]))


def pycocotools_oks(gt: torch.Tensor, areas: torch.Tensor, pred: torch.Tensor,
                    sigmas: np.ndarray) -> np.ndarray:
    """OKS of each (pred[i], gt[i]) pair by pycocotools' own COCOeval.computeOks."""
    evaluator = COCOeval(iouType="keypoints")
    evaluator.params.kpt_oks_sigmas = sigmas
    evaluator.params.maxDets = [len(gt)]
    scores = np.linspace(1, 0.5, len(gt))  # computeOks sorts detections by score: keep order
    for i in range(len(gt)):
        d = torch.cat([pred[i], torch.ones_like(pred[i][:, :1])], dim=1)  # [K, 3]
        evaluator._dts[1, 1].append({"keypoints": d.flatten().tolist(), "score": scores[i]})
        evaluator._gts[1, 1].append({"keypoints": gt[i].flatten().tolist(),
                                     "area": float(areas[i]), "bbox": [0, 0, 10, 10]})
    return np.diag(evaluator.computeOks(1, 1))


def test_oks_matches_pycocotools_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(2)
    gt, areas, pred = random_keypoints(30, 17, g)
    ours = oks(pred, gt, areas, COCO_PERSON_SIGMAS)
    expected = pycocotools_oks(gt, areas, pred, np.array(COCO_PERSON_SIGMAS))
    assert ours.shape == (30,)
    assert 0.05 < ours.mean() < 0.95  # the noise level makes a non-trivial comparison
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10)


def test_oks_loss_zero_for_perfect_prediction() -> None:
    g = torch.Generator().manual_seed(3)
    gt, areas, _ = random_keypoints(10, 17, g)
    loss = oks_loss(gt[..., :2], gt, areas, COCO_PERSON_SIGMAS)
    assert loss.shape == (10,)
    torch.testing.assert_close(loss, torch.zeros(10, dtype=torch.float64))


def test_oks_loss_without_labelled_keypoints_is_finite_with_gradient() -> None:
    gt = torch.zeros(3, 17, 3)  # nothing labelled
    gt[0, :, 2] = 2  # ... except the first object
    areas = torch.tensor([400.0, 400.0, 0.0])  # a degenerate area too
    pred = (torch.rand(3, 17, 2) * 50).requires_grad_()
    values = oks(pred, gt, areas, COCO_PERSON_SIGMAS)
    assert values[1] == 0 and values[2] == 0
    loss = oks_loss(pred, gt, areas, COCO_PERSON_SIGMAS)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad[0].abs().sum() > 0
    assert (pred.grad[1:] == 0).all()


# ---- visibility --------------------------------------------------------------------------------

def test_visibility_loss_labelled_counts_as_present() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    gt_vis = torch.tensor([[0.0, 1.0, 2.0]])
    loss = visibility_loss(logits, gt_vis)
    p = torch.sigmoid(logits)[0]
    expected = torch.stack([-torch.log(1 - p[0]), -torch.log(p[1]), -torch.log(p[2])])[None]
    assert loss.shape == (1, 3)
    torch.testing.assert_close(loss, expected)


# ---- constants ---------------------------------------------------------------------------------

def test_coco_person_constants() -> None:
    assert len(COCO_PERSON_KEYPOINTS) == len(COCO_PERSON_SIGMAS) == 17
    assert len(COCO_PERSON_SKELETON) == 19
    assert all(0 <= i < 17 and 0 <= j < 17 for i, j in COCO_PERSON_SKELETON)
    name = COCO_PERSON_KEYPOINTS.index
    assert (name("left_ankle"), name("left_knee")) in COCO_PERSON_SKELETON
    assert (name("left_shoulder"), name("right_shoulder")) in COCO_PERSON_SKELETON
    for i, n in enumerate(COCO_PERSON_KEYPOINTS):  # left/right pairs share their sigma
        if n.startswith("left_"):
            assert COCO_PERSON_SIGMAS[i] == COCO_PERSON_SIGMAS[name("right_" + n[5:])]
    assert COCO_PERSON_SIGMAS[name("nose")] == pytest.approx(0.026)
