"""Keypoint offset fields: targets and refinement by hand, the head's field loss, and their order
with handedness."""
import pytest
import torch

from detect.box_coder import BoxCoder
from detect.heads import KeypointHead
from detect.heads.keypoint_field import (FIELD_RADIUS, field_targets, refine_with_field,
                                         type_members)
from detect.heads.base import Selected
from detect.structures import Matches, Target

H, W, S = 6, 8, 8.0


def _centres() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (torch.stack([xs, ys], -1).view(-1, 2).float() + 0.5) * S  # [H*W, 2]


def _members(groups: torch.Tensor) -> torch.Tensor:
    return torch.tensor(type_members(groups.tolist()))


def test_type_members_pad_to_the_largest_type() -> None:
    assert type_members([0, 1, 1, 2, 2]) == [[0, 5], [1, 2], [3, 4]]
    assert type_members([0, 1, 2]) == [[0], [1], [2]]


def test_targets_point_to_the_nearest_labelled_joint_of_the_type_within_reach() -> None:
    # two objects; type 0 = keypoints 0 and 2 (a left/right pair), type 1 = keypoint 1
    kpts = torch.tensor([[[10.0, 10.0, 2.0], [40.0, 40.0, 0.0], [60.0, 12.0, 1.0]],
                         [[20.0, 44.0, 2.0], [5.0, 5.0, 2.0], [0.0, 0.0, 0.0]]])
    groups = torch.tensor([0, 1, 0])
    offsets, trained = field_targets(_centres(), kpts, _members(groups), S)
    assert offsets.shape == (H * W, 2, 2) and trained.shape == (H * W, 2)
    # cell (1, 1), centre (12, 12): nearest type-0 joint (10, 10); type 1: (5, 5) of object 1
    torch.testing.assert_close(offsets[W + 1], torch.tensor([[-0.25, -0.25], [-0.875, -0.875]]))
    # cell (7, 1), centre (60, 12): object 0's keypoint 2 (60, 12), 0 cells away
    torch.testing.assert_close(offsets[W + 7, 0], torch.zeros(2))
    # cell (2, 5), centre (20, 44): object 1's keypoint 0; the unlabelled (40, 40) is ignored
    torch.testing.assert_close(offsets[5 * W + 2, 0], torch.zeros(2))
    assert FIELD_RADIUS == 3.0
    # reach: cell (5, 5), centre (44, 44), is exactly 3 cells from (20, 44): trained for type 0
    # (inclusive); type 1's only joint (5, 5) is 6.9 cells away
    assert trained[5 * W + 5, 0] and not trained[5 * W + 5, 1]
    assert not trained[5 * W + 7, 0]  # centre (60, 44): 4 cells from (60, 12), 5 from (20, 44)
    d = (offsets.pow(2).sum(-1).sqrt())
    assert (d[trained] <= FIELD_RADIUS).all() and (d[~trained] > FIELD_RADIUS - 1e-6).all()
    none, untrained = field_targets(_centres(), torch.zeros(0, 3, 3), _members(groups), S)
    assert none.shape == (H * W, 2, 2) and not untrained.any()


def test_refinement_lands_on_the_joint_of_a_perfect_field_and_caps_each_step() -> None:
    kpts = torch.tensor([[[28.0, 21.0, 2.0], [50.0, 30.0, 2.0]]])
    groups = torch.tensor([0, 1])
    offsets, _ = field_targets(_centres(), kpts, _members(groups), S)
    field = offsets[None]  # [1, H*W, 2, 2]: the targets everywhere, even out of reach
    start = torch.tensor([[[[35.0, 30.0, 0.9], [10.0, 30.0, 0.4]]]])
    out = refine_with_field(start, field, groups, (H, W), S)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([28.0, 21.0, 0.9]))  # within reach
    # keypoint 1 starts 5 cells from its joint: the first step (from its cell (1, 3), centre
    # (12, 28), 4.75 cells away) is capped at FIELD_RADIUS cells, the second lands
    torch.testing.assert_close(out[0, 0, 1], torch.tensor([50.0, 30.0, 0.4]))
    capped = torch.zeros(1, H * W, 2, 2)
    capped[..., 0] = 10.0  # "10 cells to the right" everywhere
    moved = refine_with_field(torch.tensor([[[[4.0, 4.0, 1.0], [4.0, 4.0, 1.0]]]]), capped,
                              groups, (H, W), S)
    # (4, 4) -> cell (0, 0)'s centre + 3 cells = x 28 -> cell (3, 0)'s centre + 3 cells = x 52
    torch.testing.assert_close(moved[0, 0, :, 0], torch.tensor([52.0, 52.0]))
    outside = torch.tensor([[[[-50.0, 400.0, 1.0], [1e4, -3.0, 1.0]]]])  # clamped to edge cells
    assert torch.isfinite(refine_with_field(outside, field, groups, (H, W), S)).all()


LEVELS = [(H, W), (3, 4)]


def _finest_level_match(kpts: torch.Tensor) -> Matches:
    """One image, one object with keypoints ``kpts`` [1, K, 3] matched to one anchor of the
    finest level (cell (3, 2)) of `LEVELS`."""
    coarse = (_centres() * 2)[: 3 * 4]
    anchors = torch.cat([_centres(), coarse]).repeat(1, 2) + torch.tensor([-16.0, -16, 16, 16])
    target = Target(torch.tensor([[8.0, 8.0, 48.0, 40.0]]), torch.tensor([0]), kpts)
    a = len(anchors)
    matched = torch.full((1, a), -1)
    matched[0, 2 * W + 3] = 0
    m = Matches(anchors, matched, torch.zeros(1, a, 4), torch.full((1, a), -1),
                torch.ones(1, a), torch.tensor(1.0), num_anchors_per_level=(H * W, 12),
                targets=[target])
    m.boxes[0, 2 * W + 3] = target.boxes[0]
    return m


def test_head_field_loss_is_the_mean_l1_of_the_reachable_cells_on_the_finest_level() -> None:
    head = KeypointHead(8, 1, 3, None, BoxCoder(), (0.05, 0.05, 0.05), field_groups=[0, 1, 1],
                        field_weight=0.5)
    assert head.outputs_per_anchor == 3 * 3 + 4 and head.num_fields == 2
    pred = head([torch.randn(1, 8, h, w) for h, w in LEVELS]).detach().requires_grad_()
    assert head.predictor.out_channels == 3 * 3 and head.map_predictor.out_channels == 4
    assert (pred[0, H * W:, 9:] == 0).all()  # fields are predicted on the finest level only
    kpts = torch.tensor([[[28.0, 20.0, 2.0], [12.0, 12.0, 2.0], [44.0, 28.0, 2.0]]])
    losses = head.loss(pred, _finest_level_match(kpts))
    assert set(losses) == {"loss_kpt", "loss_kpt_l1", "loss_kpt_vis", "loss_kpt_field"}
    offsets, trained = field_targets(_centres(), kpts, head.field_members, S)
    field = pred[0, : H * W, 9:].detach().view(H * W, 2, 2)
    expected = 0.5 * ((field - offsets).abs().sum(-1) * trained).sum() / trained.sum()
    assert losses["loss_kpt_field"].item() == pytest.approx(expected.item(), rel=1e-5)
    losses["loss_kpt_field"].backward()
    grad = pred.grad[0]
    assert grad[: H * W, 9:].abs().sum() > 0
    assert grad[:, :9].abs().sum() == 0 and grad[H * W:].abs().sum() == 0


def test_with_handedness_fields_are_per_keypoint_in_image_order_and_refined_before_the_swap():
    """A person facing the camera (left keypoint 1 on the image's right): the field of keypoint 1
    is trained towards the image-left one of the pair; decoding refines the regressed image-order
    keypoints on a perfect field, then swaps the pair back into the person's order."""
    head = KeypointHead(8, 1, 3, None, BoxCoder(), (0.05, 0.05, 0.05), field_groups=[0, 1, 2],
                        handedness_pairs=((1, 2),))
    person = torch.tensor([[[28.0, 12.0, 2.0], [44.0, 28.0, 2.0], [12.0, 28.0, 2.0]]])
    image_order = person[:, [0, 2, 1]]
    pred = head([torch.randn(1, 8, h, w) for h, w in LEVELS]).detach()
    losses = head.loss(pred.requires_grad_(), _finest_level_match(person))
    offsets, trained = field_targets(_centres(), image_order, head.field_members, S)
    field = pred[0, : H * W, 10:].view(H * W, 3, 2)
    expected = ((field - offsets).abs().sum(-1) * trained).sum() / trained.sum()
    assert losses["loss_kpt_field"].item() == pytest.approx(expected.item(), rel=1e-5)
    # decoding: a regression a few pixels off each image-order keypoint, a positive handedness
    # logit, and the perfect field on the finest level
    anchor = torch.tensor([[[20.0, 12.0, 36.0, 28.0]]])  # centre (28, 20), size 16
    near = image_order[0, :, :2] + torch.tensor([[5.0, -3.0], [-4.0, 6.0], [3.0, 3.0]])
    offsets_in_anchor_sizes = (near - torch.tensor([28.0, 20.0])) / 16.0  # [K, 2]
    raw = torch.cat([offsets_in_anchor_sizes.flatten(), torch.full((3,), 20.0),
                     torch.tensor([20.0])])  # confident visibility, positive handedness
    torch.testing.assert_close(head.coder.decode_points(raw[:6].view(1, 3, 2), anchor[0])[0], near)
    pred = torch.zeros(1, H * W + 12, 10 + 6)  # every anchor: the regression, then the fields
    pred[0, : H * W, 10:] = offsets.flatten(1)  # the perfect field, on the finest level
    pred[0, 2 * W + 3, :10] = raw  # the detection's anchor
    sel = Selected(torch.tensor([[2 * W + 3]]), anchor, torch.zeros(1, 1, 4),
                   torch.zeros(1, 1, dtype=torch.int64), LEVELS, [S, 2 * S], [H * W, 12])
    out = head.decode_detections(pred, None, sel)[0, 0]
    torch.testing.assert_close(out[:, :2], person[0, :, :2])
    unrefined = head.decode(raw, anchor[0, 0])  # the regression alone, swapped back
    torch.testing.assert_close(unrefined[:, :2], near[[0, 2, 1]])


def test_a_field_with_several_anchors_per_location_is_a_config_error() -> None:
    from detect.config import ConfigError, load_config
    from detect.models.build import build_model

    cfg = load_config("configs/retinanet_r50_fpn_coco.yaml",
                      ["model.heads.keypoints.field=true", "model.backbone.weights=null"])
    with pytest.raises(ConfigError, match=r"model.heads.keypoints.field needs one anchor per "
                                          r"location .* not 9"):
        build_model(cfg.model, 3, 17)  # COCO keypoints: their sigmas are known
