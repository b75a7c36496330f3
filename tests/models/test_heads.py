"""Head shapes, losses on empty ground truth, and the detector's loss/detect paths."""
import pytest
import torch

from detect.box_coder import BoxCoder
from detect.config import ConfigError, load_config
from detect.heads import BoxHead, ClassificationHead, KeypointHead, Tower
from detect.heads.base import flatten_levels
from detect.heads.keypoints import handedness, swap_pairs
from detect.losses import COCO_PERSON_SIGMAS
from detect.models.build import build_model
from detect.models.detector import HeadOutputs
from detect.nms import postprocess
from detect.structures import Matches, Target, partner_index

LEVELS = [(8, 8), (4, 4), (2, 2)]


def feats(b=2, c=16):
    return [torch.randn(b, c, h, w) for h, w in LEVELS]


@pytest.mark.parametrize("per_loc", [1, 9])
def test_head_output_shapes(per_loc):
    a = sum(h * w for h, w in LEVELS) * per_loc
    coder = BoxCoder()
    heads = {
        "cls": (ClassificationHead(16, per_loc, 5, Tower(16, 2, "gn")), 5),
        "box": (BoxHead(16, per_loc, Tower(16, 1, "bn"), coder), 4),
        "kpt": (KeypointHead(16, per_loc, 17, None, coder, COCO_PERSON_SIGMAS), 51),
    }
    for name, (head, d) in heads.items():
        assert head(feats()).shape == (2, a, d), name


def test_flatten_levels_matches_anchor_order():
    # value at (level, y, x, anchor, d) must land at row offset + (y * W + x) * a + anchor
    b, a, d, h, w = 1, 3, 2, 2, 4
    m = torch.arange(b * a * d * h * w, dtype=torch.float32).view(b, a * d, h, w)
    flat = flatten_levels([m], d)  # [1, H*W*a, D]
    y, x, anc, k = 1, 2, 2, 1
    assert flat[0, (y * w + x) * a + anc, k] == m[0, anc * d + k, y, x]


def test_classification_bias_prior():
    head = ClassificationHead(8, 1, 3, None, prior_prob=0.01)
    probs = head.decode(head(feats(1, 8)), torch.zeros(1, 4))
    assert torch.allclose(probs.mean(), torch.tensor(0.01), atol=2e-3)


def tiny_model(num_keypoints=17, **over):
    args = ["model.backbone.name=resnet18", "model.neck.channels=32", "model.heads.tower_depth=1",
            "model.heads.norm=gn", "model.matcher.kind=atss", "model.anchors.sizes=[64,128,256,512,1024]",
            "model.anchors.ratios=[1.0]", "model.anchors.scales=[1.0]",
            f"model.heads.keypoints.num_keypoints={num_keypoints}", "model.backbone.frozen_stages=0"]
    args += [f"model.{k}={v}" for k, v in over.items()]
    cfg = load_config(None, args)
    return build_model(cfg.model, 3, num_keypoints)


def empty_target():
    return Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 17, 3))


def test_no_ground_truth_gives_zero_box_and_keypoint_losses_with_gradients():
    model = tiny_model()
    out = model(torch.randint(0, 255, (2, 3, 128, 128), dtype=torch.uint8))
    losses = model.losses(out, [empty_target(), empty_target()])
    flat = {k: v for terms in losses.values() for k, v in terms.items()}
    assert set(flat) == {"loss_cls", "loss_box", "loss_kpt", "loss_kpt_l1", "loss_kpt_vis"}
    assert all(torch.isfinite(v) for v in flat.values())
    assert flat["loss_box"].item() == 0 and flat["loss_kpt"].item() == 0
    assert flat["loss_kpt_vis"].item() == 0 and flat["loss_kpt_l1"].item() == 0
    assert flat["loss_cls"].item() > 0
    sum(flat.values()).backward()
    for name, p in model.heads.named_parameters():
        assert p.grad is not None, name
    assert any(p.grad.abs().sum() > 0 for p in model.heads["cls"].parameters())


def test_keypoint_loss_zero_without_visible_keypoints_but_positive_matches():
    model = tiny_model()
    t = Target(torch.tensor([[10.0, 10.0, 100.0, 110.0]]), torch.tensor([1]), torch.zeros(1, 17, 3))
    out = model(torch.randint(0, 255, (1, 3, 128, 128), dtype=torch.uint8))
    losses = model.losses(out, [t])
    assert losses["box"]["loss_box"].item() > 0
    assert losses["keypoints"]["loss_kpt"].item() == 0
    assert losses["keypoints"]["loss_kpt"].requires_grad


def test_forward_returns_the_same_type_in_train_and_eval_and_detect_shapes():
    model = tiny_model()
    x = torch.randint(0, 255, (2, 3, 128, 96), dtype=torch.uint8)
    train_out = model.train()(x)
    eval_out = model.eval()(x)
    assert isinstance(train_out, HeadOutputs) and isinstance(eval_out, HeadOutputs)
    assert {k: v.shape for k, v in train_out.preds.items()} == {k: v.shape for k, v in eval_out.preds.items()}
    dets = model.detect(eval_out, [(128, 96)] * 2)
    assert len(dets) == 2 and dets[0].fields["keypoints"].shape[1:] == (17, 3)
    assert (dets[0].boxes[:, 2] <= 96).all()


def test_model_without_keypoints_has_no_keypoint_head():
    model = tiny_model(num_keypoints=0)
    assert set(model.heads) == {"cls", "box"}
    out = model(torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8))
    assert model.detect(out, None)[0].fields == {}


@pytest.mark.parametrize("depth, expected", [(None, 2), (1, 1), (0, 0)])
def test_keypoint_tower_depth_is_its_own_setting(depth, expected):
    over = {"heads.tower_depth": 2, "heads.norm": "bn"}
    if depth is not None:
        over["heads.keypoints.tower_depth"] = depth
    heads = tiny_model(**over).heads
    convs = {name: 0 if h.tower is None else len(h.tower.convs) for name, h in heads.items()}
    assert convs == {"cls": 2, "box": 2, "keypoints": expected}


def test_every_head_has_its_own_tower_depth():
    heads = tiny_model(**{"heads.tower_depth": 2, "heads.cls.tower_depth": 1,
                          "heads.box.tower_depth": 0}).heads
    convs = {name: 0 if h.tower is None else len(h.tower.convs) for name, h in heads.items()}
    assert convs == {"cls": 1, "box": 0, "keypoints": 2}


def test_keypoint_tower_can_be_narrower_than_the_features():
    model = tiny_model(**{"heads.keypoints.tower_channels": 8, "heads.keypoints.field": "true",
                          "heads.tower_depth": 2, "heads.norm": "bn"})
    head = model.heads["keypoints"]
    assert [(c.in_channels, c.out_channels) for c in head.tower.convs] == [(32, 8), (8, 8)]
    assert all(n.num_features == 8 for level in head.tower.norms for n in level)
    assert head.predictor.in_channels == head.map_predictor.in_channels == 8
    out = model(torch.randint(0, 255, (1, 3, 256, 256), dtype=torch.uint8))  # BN: 2x2 on P7
    assert out.preds["keypoints"].shape[-1] == head.outputs_per_anchor == 17 * 3 + 2 * 17
    assert all(torch.isfinite(v).all() for v in model.losses(out, [empty_target()])["keypoints"].values())
    with pytest.raises(ConfigError, match="keypoints.tower_channels needs a tower"):
        tiny_model(**{"heads.keypoints.tower_channels": 8, "heads.keypoints.tower_depth": 0})
    for bad in ({"heads.keypoints.tower_depth": -1}, {"heads.cls.tower_depth": -1},
                {"heads.tower_depth": -2}):
        with pytest.raises(ConfigError, match="must be >= 0"):
            tiny_model(**bad)
    with pytest.raises(ConfigError, match="must be >= 1"):
        tiny_model(**{"heads.keypoints.tower_channels": 0})


def test_detect_decodes_lazily_with_the_same_result_as_decoding_every_anchor():
    torch.manual_seed(0)
    model = tiny_model().eval()
    with torch.no_grad():
        model.heads["cls"].predictor.bias.zero_()  # scores ~0.5: many candidates reach NMS
        out = model(torch.randint(0, 255, (2, 3, 128, 96), dtype=torch.uint8))
    sizes = [(128, 96)] * 2
    anchors = model.anchors(out.feature_sizes, torch.device("cpu"))
    scores = model.heads["cls"].decode(out.preds["cls"], anchors)  # [B, A, C]
    boxes = model.heads["box"].decode(out.preds["box"], anchors)  # [B, A, 4]
    kpts = model.heads["keypoints"].decode(out.preds["keypoints"], anchors)  # [B, A, K, 3]
    expected = postprocess(scores, boxes, model.anchor_generator.num_anchors_per_level(
        out.feature_sizes), {"keypoints": kpts}, sizes)
    for lazy, eager in zip(model.detect(out, sizes), expected, strict=True):
        assert len(lazy) > 10
        for field in ("boxes", "scores", "labels"):
            assert torch.equal(getattr(lazy, field), getattr(eager, field)), field
        assert torch.equal(lazy.fields["keypoints"], eager.fields["keypoints"])


def test_detect_without_detections_gives_empty_keypoints():
    model = tiny_model().eval()
    with torch.no_grad():
        model.heads["cls"].predictor.bias.fill_(-20.0)  # no score above the threshold
        out = model(torch.randint(0, 255, (2, 3, 128, 96), dtype=torch.uint8))
    for det in model.detect(out, [(128, 96)] * 2):
        assert len(det) == 0 and det.fields["keypoints"].shape == (0, 17, 3)
        assert det.fields["keypoints"].dtype == torch.float32


def test_memory_format_is_a_config_choice_with_equal_outputs():
    torch.manual_seed(0)
    nchw = tiny_model(channels_last="false").eval()
    nhwc = tiny_model(channels_last="true").eval()
    nhwc.load_state_dict(nchw.state_dict())
    conv = next(m for m in nchw.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous()
    assert next(m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
                ).weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randint(0, 255, (1, 3, 96, 64), dtype=torch.uint8)
    assert nchw.normalize(x).is_contiguous() and not nhwc.normalize(x).is_contiguous()
    a, b = nchw(x), nhwc(x)
    for k in a.preds:
        torch.testing.assert_close(a.preds[k], b.preds[k], atol=1e-4, rtol=1e-4)


def test_keypoints_decode_relative_to_their_anchor():
    head = KeypointHead(16, 1, 2, None, BoxCoder(), (0.05, 0.05))
    # hand case: offsets (dx, dy) from the anchor centre in anchor sizes; visibility logit 0
    pred = torch.tensor([[0.25, -0.5, -0.5, 0.0, 0.0, 0.0]])  # [1, 3K]
    anchor = torch.tensor([[10.0, 20.0, 50.0, 40.0]])  # centre (30, 30), 40 x 20
    expected = torch.tensor([[[40.0, 20.0, 0.5], [10.0, 30.0, 0.5]]])
    torch.testing.assert_close(head.decode(pred, anchor), expected)


def _one_positive(keypoints: torch.Tensor, anchor: torch.Tensor) -> Matches:
    """One image, one anchor matched to one 100 x 50 object (area 5000) with ``keypoints``
    [1, K, 3]."""
    box = torch.tensor([[0.0, 0.0, 100.0, 50.0]])
    target = Target(box, torch.zeros(1, dtype=torch.int64), keypoints,
                    areas=torch.tensor([5000.0]))
    return Matches(anchors=anchor, matched=torch.zeros(1, 1, dtype=torch.int64), boxes=box[None],
                   labels=torch.zeros(1, 1, dtype=torch.int64), areas=torch.tensor([[5000.0]]),
                   num_positive=torch.tensor(1.0), num_anchors_per_level=(1,), targets=[target])


def test_keypoint_loss_is_zero_for_a_perfect_prediction():
    head = KeypointHead(16, 1, 2, None, BoxCoder(), (0.05, 0.05))
    anchor = torch.tensor([[40.0, 10.0, 60.0, 30.0]])
    offsets = torch.tensor([[0.1, 0.2, -0.3, 0.4]])
    gt_xy = head.coder.decode_points(offsets.view(1, 2, 2), anchor)  # [1, K, 2]
    matches = _one_positive(torch.cat([gt_xy, torch.full((1, 2, 1), 2.0)], -1), anchor)
    pred = torch.cat([offsets, torch.full((1, 2), 20.0)], -1)[None]  # [1, 1, 6], confident
    losses = head.loss(pred, matches)
    assert losses["loss_kpt"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_kpt_l1"].item() == pytest.approx(0.0, abs=1e-6)


def test_handedness_by_hand():
    # keypoints 0 (unpaired), 1 = left, 2 = right: x_left - x_right decides, v = 0 does not count
    gt = torch.tensor([[[5, 0, 2], [10, 0, 2], [0, 0, 2]],  # left on the image's right
                       [[5, 0, 2], [0, 0, 2], [10, 0, 1]],  # left on the image's left
                       [[5, 0, 2], [0, 0, 0], [10, 0, 2]]],  # the pair is not labelled on both
                      dtype=torch.float32)
    mirrored, known = handedness(gt, torch.tensor([[1, 2]]))
    assert mirrored.tolist() == [True, False, False] and known.tolist() == [True, True, False]
    swapped = swap_pairs(gt, torch.tensor(partner_index(3, ((1, 2),))), mirrored)
    torch.testing.assert_close(swapped[0], gt[0, [0, 2, 1]])
    torch.testing.assert_close(swapped[1:], gt[1:])
    assert partner_index(5, ((1, 2), (3, 4))) == [0, 2, 1, 4, 3]


def test_handedness_head_learns_image_order_and_decodes_back():
    """A person facing the camera (left keypoints on the image's right): the head's perfect
    prediction is the pairs in image-left, image-right order plus a positive handedness logit;
    it has zero position loss, and decoding it gives the person's own keypoints back."""
    head = KeypointHead(16, 1, 3, None, BoxCoder(), (0.05, 0.05, 0.05), handedness_pairs=((1, 2),))
    assert head.num_sides == 1 and head.predictor.out_channels == 3 * 3 + 1
    anchor = torch.tensor([[40.0, 10.0, 60.0, 30.0]])
    image_order = torch.tensor([[0.0, -0.4, -0.3, 0.1, 0.3, 0.1]])  # keypoint 1 left of 2
    xy = head.coder.decode_points(image_order.view(1, 3, 2), anchor)  # [1, K, 2]
    person = torch.cat([xy[:, [0, 2, 1]], torch.full((1, 3, 1), 2.0)], -1)  # left on the right
    for side, side_loss in ((20.0, 0.0), (-20.0, 20.0)):
        pred = torch.cat([image_order, torch.full((1, 3), 20.0), torch.tensor([[side]])], -1)
        losses = head.loss(pred[None], _one_positive(person, anchor))
        assert losses["loss_kpt"].item() == pytest.approx(0.0, abs=1e-6)
        assert losses["loss_kpt_l1"].item() == pytest.approx(0.0, abs=1e-6)
        assert losses["loss_kpt_side"].item() == pytest.approx(side_loss, abs=1e-6)
        decoded = head.decode(pred, anchor)[0]
        torch.testing.assert_close(decoded[:, :2], person[0, :, :2] if side > 0 else xy[0])
    head.side_weight = 2.0  # model.heads.keypoints.side_weight scales the handedness term only
    doubled = head.loss(pred[None], _one_positive(person, anchor))
    assert doubled["loss_kpt_side"].item() == pytest.approx(2 * losses["loss_kpt_side"].item())
    assert doubled["loss_kpt"].item() == pytest.approx(losses["loss_kpt"].item())
