"""The crop handedness classifier (`detect.heads.keypoint_side`) and its place in the detector:
crops per image and clamped to the map, a loss by hand, no gradient into the backbone, learning a
toy cue, and detect() swapping each detection's pairs by its crop's logit."""
import math

import pytest
import torch
from torchvision.ops import roi_align

from detect.config import ConfigError, PostprocessConfig, load_config
from detect.heads.keypoint_side import CropHandedness, jitter_boxes, sample_seed
from detect.models.build import build_model
from detect.structures import Target

PAIRS = torch.tensor([[1, 2]])


def _person(box: list[float], facing: bool | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A 3-keypoint person in ``box`` (xyxy): head, left, right; ``facing``: its left keypoint
    on the image's right; None: the right keypoint not labelled (handedness unknown)."""
    x1, y1, x2, y2 = box
    left, right = (x2 - 2, x1 + 2) if facing else (x1 + 2, x2 - 2)
    kpts = torch.tensor([[(x1 + x2) / 2, y1 + 1, 2], [left, y2 - 1, 2],
                         [right, y2 - 1, 0 if facing is None else 2]])
    return torch.tensor(box, dtype=torch.float32), kpts


def _target(people: list[tuple[list[float], bool | None]]) -> Target:
    boxes, kpts = zip(*[_person(b, f) for b, f in people])
    return Target(boxes=torch.stack(boxes), labels=torch.zeros(len(boxes), dtype=torch.int64),
                  keypoints=torch.stack(kpts))


def test_crops_are_per_image_and_clamped_to_the_map():
    torch.manual_seed(0)
    crop = CropHandedness(4, stride=16)
    features = torch.randn(2, 4, 6, 8)  # a 128 x 96 input
    boxes = torch.tensor([[[10.0, 20.0, 60.0, 90.0], [-40.0, -30.0, 200.0, 50.0]],
                          [[10.0, 20.0, 60.0, 90.0], [0.0, 0.0, 128.0, 50.0]]])
    logits = crop(features, boxes)  # [2, 2]
    for b in range(2):  # each image's boxes read that image's map
        torch.testing.assert_close(logits[b], crop(features[b:b + 1], boxes[b:b + 1])[0])
    assert logits[0, 0] != logits[1, 0]  # the same box on two different maps
    # out of the map: clamped to it, so the second box of image 0 reads what (0, 0, 128, 50) reads
    torch.testing.assert_close(crop(features[:1], boxes[1:, 1:]), crop(features[:1], boxes[:1, 1:]))
    # the crop itself: RoIAlign of the box in map cells (stride 16), 7 x 7, then the classifier
    want = roi_align(features[:1], [boxes[0, :1]], 7, 1 / 16, sampling_ratio=2, aligned=True)
    hidden = torch.relu(crop.reduce(want)).flatten(1)
    torch.testing.assert_close(logits[0, 0], crop.classify(hidden)[0, 0])


def test_loss_by_hand_counts_the_persons_whose_handedness_is_known():
    crop = CropHandedness(4, stride=8).eval()  # eval: no jitter
    with torch.no_grad():
        crop.classify.weight.zero_()
        crop.classify.bias.fill_(1.5)  # every logit 1.5
    features = torch.randn(2, 4, 8, 8)
    targets = [_target([([0, 0, 30, 40], True), ([30, 10, 60, 60], None)]),
               _target([([5, 5, 50, 50], False)])]
    loss = crop.loss(features, targets, PAIRS)
    # two persons count: one facing (BCE = log(1 + e^-1.5)), one not (log(1 + e^1.5))
    want = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(1.5))) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)
    none = crop.loss(features, [_target([([0, 0, 30, 40], None)]), Target(
        boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.int64), keypoints=None)], PAIRS)
    assert none.item() == 0.0 and none.requires_grad


def test_loss_trains_the_classifier_and_nothing_it_reads():
    crop = CropHandedness(4, stride=8)
    features = torch.randn(1, 4, 8, 8, requires_grad=True)
    crop.loss(features, [_target([([0, 0, 30, 40], True)])], PAIRS).backward()
    assert features.grad is None
    assert crop.reduce.weight.grad.abs().sum() > 0 and crop.classify.weight.grad.abs().sum() > 0


def test_learns_a_cue_inside_the_box():
    """Facing persons carry a bright patch in channel 0 inside their box; after 60 steps every
    held-out person's logit has the right sign, whatever the box's jitter."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    def sample() -> tuple[torch.Tensor, Target]:
        features = torch.randn(1, 4, 12, 12, generator=gen) * 0.3
        people = []
        for x in (0, 48):
            y = int(torch.randint(0, 40, (1,), generator=gen))
            facing = bool(torch.rand(1, generator=gen) < 0.5)
            if facing:
                features[0, 0, y // 8 + 1:y // 8 + 4, x // 8 + 1:x // 8 + 4] += 2.0
            people.append(([x, y, x + 40, y + 48], facing))
        return features, _target(people)

    crop = CropHandedness(4, stride=8)
    opt = torch.optim.Adam(crop.parameters(), 1e-2)
    for _ in range(60):
        features, target = sample()
        opt.zero_grad()
        crop.loss(features, [target], PAIRS).backward()
        opt.step()
    crop.eval()
    for _ in range(10):
        features, target = sample()
        logits = crop(features, target.boxes[None])[0]
        facing = target.keypoints[:, 1, 0] > target.keypoints[:, 2, 0]
        assert ((logits > 0) == facing).all()


def test_jitter_moves_each_edge_by_at_most_its_share():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0]] * 500)
    out = jitter_boxes(boxes, 0.1, torch.Generator().manual_seed(0))
    limit = torch.tensor([4.0, 8.0, 4.0, 8.0])
    assert ((out - boxes).abs() <= limit + 1e-5).all()
    assert ((out - boxes).abs() > limit * 0.9).any()  # it does move them
    assert (out[:, 2:] > out[:, :2]).all()
    # training draws it from the sample: the same sample, the same jitter; another, another
    seed = sample_seed(7, boxes[:2])
    assert seed == sample_seed(7, boxes[:2].clone()) >= 0
    assert len({seed, sample_seed(8, boxes[:2]), sample_seed(7, boxes[:2] + 1)}) == 3


def crop_model():
    args = ["model.backbone.name=resnet18", "model.neck.channels=32", "model.heads.tower_depth=1",
            "model.heads.norm=gn", "model.matcher.kind=atss", "model.anchors.ratios=[1.0]",
            "model.anchors.scales=[1.0]", "model.backbone.frozen_stages=0",
            "model.anchors.sizes=[32,64,128,256,512]",
            "model.heads.keypoints.handedness=crop",
            "model.heads.keypoints.num_keypoints=3", "model.heads.keypoints.sigmas=[0.05,0.05,0.05]"]
    return build_model(load_config(None, args).model, 2, 3, flip_pairs=((1, 2),))


def test_detector_trains_the_crop_classifier_on_c4_alone_and_swaps_by_it():
    torch.manual_seed(0)
    model = crop_model()
    head = model.heads["keypoints"]
    assert head.num_sides == 0 and head.handed and head.predictor.out_channels == 3 * 3
    assert head.side_crop.reduce.in_channels == 256 and head.side_crop.stride == 16  # R18's C4
    images = torch.randint(0, 255, (2, 3, 128, 128), dtype=torch.uint8)
    out = model(images)
    assert out.maps["keypoints"].shape == (2, 256, 8, 8)  # the head's extra map: C4
    targets = [_target([([10, 10, 70, 100], True)]), _target([([40, 20, 120, 110], False)])]
    side = model.losses(out, targets)["keypoints"]["loss_kpt_side"]
    side.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
    assert grads and all(n.startswith("heads.keypoints.side_crop.") for n in grads)
    # detect(): each detection's pairs swapped where its crop's logit is positive
    model.eval()
    with torch.no_grad():
        out = model(images)
        head.side_crop.classify.weight.zero_()
        head.side_crop.classify.bias.zero_()  # logit 0: not swapped
        every = PostprocessConfig(score_thresh=0.0, max_detections=20)
        plain = model.detect(out, None, every)
        for sign in (1.0, -1.0):
            head.side_crop.classify.bias.fill_(sign)
            dets = model.detect(out, None, every)
            for d, p in zip(dets, plain):
                assert len(d) > 0
                want = p.fields["keypoints"][:, [0, 2, 1]] if sign > 0 else p.fields["keypoints"]
                torch.testing.assert_close(d.fields["keypoints"], want)


def test_crop_term_cannot_be_balanced_apart():
    with pytest.raises(ConfigError, match="drop it from train.balance_apart"):
        load_config(None, ["model.heads.keypoints.handedness=crop",
                           "train.balance_apart=[loss_kpt_side]"])


def test_crop_classifier_has_an_optimiser_group_of_its_own():
    from detect.engine.optim import build_optimizer
    cfg = load_config(None, ["train.optimizer=adamw", "train.lr=0.002",
                             "model.heads.keypoints.crop_lr=5"])
    model = crop_model()
    groups = build_optimizer(cfg.train, model).param_groups
    own = {id(p) for p in model.heads["keypoints"].side_crop.parameters()}
    assert len(own) == 4 and model.heads["keypoints"].own_terms == ("loss_kpt_side",)
    crop = [g for g in groups if {id(p) for p in g["params"]} == own]
    assert len(crop) == 1 and crop[0]["lr"] == pytest.approx(0.01) and crop[0]["weight_decay"] == 0
    others = [id(p) for g in groups if g is not crop[0] for p in g["params"]]
    assert not own & set(others) and len(others) + 4 == sum(1 for _ in model.parameters())
    with pytest.raises(ConfigError, match="keypoints.crop_lr must be a positive number"):
        load_config(None, ["model.heads.keypoints.crop_lr=0"])


def test_the_crop_classifier_changes_nothing_else_in_training(tiny_overrides, tmp_path):
    """Two training steps of the demo config (crop handedness, loss_norm) with the crop term and
    with it switched off: every other parameter ends the same (balancing, clipping and the
    optimiser see nothing of the term), and the classifier itself moved."""
    from detect.engine.trainer import Trainer
    cfg = load_config("configs/demo.yaml", tiny_overrides + [
        "train.max_steps=2", "train.batch_size=4", "train.ema=false", "train.eval_every=0",
        "train.grad_clip=0.5"])
    assert cfg.model.heads.keypoints.handedness == "crop" and cfg.train.balancing == "loss_norm"

    def train(with_term: bool, out) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        trainer = Trainer(cfg, out, device="cpu", show_progress=False)
        crop = trainer.model.heads["keypoints"].side_crop
        if not with_term:  # the same term, times 0: no gradient, no value
            loss = crop.loss
            crop.loss = lambda *a: 0.0 * loss(*a)
        start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        return start, trainer.model.state_dict()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise equality: one thread's summation order in both runs
    try:
        start, on = train(True, tmp_path / "on")
        _, off = train(False, tmp_path / "off")
    finally:
        torch.set_num_threads(threads)
    crop = [k for k in on if ".side_crop." in k]
    assert crop and all(not torch.equal(on[k], start[k]) for k in crop)
    assert all(torch.equal(off[k], start[k]) for k in crop)
    moved = [k for k in on if k not in crop and not torch.equal(on[k], start[k])]
    assert moved  # the rest trained
    for k in on:
        if k not in crop:
            torch.testing.assert_close(on[k], off[k], rtol=0, atol=0)
