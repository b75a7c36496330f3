"""`ExportGraph` in eager mode against `MultiHeadDetector.detect`, and `nms_reference` by hand."""
from dataclasses import replace

import pytest
import torch

from detect.api import Detector
from detect.config import ConfigError
from detect.export.graph import ExportGraph, nms_reference

SIZE = 64


@pytest.fixture(scope="module")
def det(tiny_model) -> Detector:
    return Detector.from_config("configs/demo.yaml", tiny_model + [f"data.image_size={SIZE}"],
                                categories=["a", "b", "c"])


def test_nms_reference_by_hand():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 9]]],
                         dtype=torch.float32)  # [1, 4, 4]: 0, 1 and 3 overlap (IoU > 0.8)
    scores = torch.tensor([[[0.9, 0.8, 0.7, 0.0],  # class 0: box 1 suppressed by box 0
                            [0.0, 0.6, 0.0, 0.5]]])  # class 1: box 3 suppressed by box 1
    sel = nms_reference(boxes, scores, max_per_class=10, iou=0.5, score_thresh=0.05)
    assert sorted(sel.tolist()) == [[0, 0, 0], [0, 0, 2], [0, 1, 1]]
    capped = nms_reference(boxes, scores, max_per_class=1, iou=0.5, score_thresh=0.05)
    assert sorted(capped.tolist()) == [[0, 0, 0], [0, 1, 1]]  # the best of each class
    none = nms_reference(boxes, scores, max_per_class=10, iou=0.5, score_thresh=0.95)
    assert none.shape == (0, 3)


def _eager(det: Detector, images: torch.Tensor, params) -> list:
    with torch.no_grad():
        return det.model.detect(det.model(images), [(SIZE, SIZE)] * len(images), params)


@pytest.mark.parametrize("nms_op, class_agnostic", [("onnx", False), ("torch", True)])
def test_graph_equals_detect(det, nms_op, class_agnostic):
    """Per-level top-k binding (20 of each level), many candidates, both NMS variants."""
    params = replace(det.params, score_thresh=0.0, topk_per_level=20, max_detections=30,
                     class_agnostic=class_agnostic)
    graph = ExportGraph(det.model, SIZE, params, (5, 6, 9), nms_op)
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        boxes, scores, labels, num, kpts = graph(images)
    assert boxes.shape == (2, 30, 4) and kpts.shape == (2, 30, 13, 3) and num.shape == (2,)
    for b, d in enumerate(_eager(det, images, params)):
        n = int(num[b])
        assert n == len(d) > 0
        torch.testing.assert_close(scores[b, :n], d.scores)
        torch.testing.assert_close(boxes[b, :n], d.boxes)
        assert labels[b, :n].tolist() == [(5, 6, 9)[i] for i in d.labels]
        torch.testing.assert_close(kpts[b, :n], d.fields["keypoints"])


def test_fewer_candidates_than_max_detections_are_padded(det):
    params = replace(det.params, score_thresh=0.0, topk_per_level=2, max_detections=50)
    graph = ExportGraph(det.model, SIZE, params, (1, 2, 3))
    assert graph.num_candidates == 2 * len(graph.per_level)
    images = torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8)
    with torch.no_grad():
        boxes, scores, labels, num, kpts = graph(images)
    n = int(num[0])
    assert 0 < n <= graph.num_candidates and boxes.shape == (1, 50, 4)
    assert (labels[0, n:] == -1).all() and not scores[0, n:].any() and not kpts[0, n:].any()
    assert len(_eager(det, images, params)[0]) == n


def test_soft_nms_cannot_be_exported(det):
    with pytest.raises(ConfigError, match="soft_nms_sigma"):
        ExportGraph(det.model, SIZE, replace(det.params, soft_nms_sigma=0.5), (1, 2, 3))


def _graph_run(det: Detector) -> tuple:
    """(params, images [2, 3, S, S], the graph's outputs, the eager network's outputs) with every
    candidate kept (score threshold 0), categories (5, 6, 9) and ONNX NMS."""
    params = replace(det.params, score_thresh=0.0, topk_per_level=20, max_detections=30)
    graph = ExportGraph(det.model, SIZE, params, (5, 6, 9), "onnx")
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return params, images, graph(images), det.model(images)


def test_graph_with_keypoint_refinement_equals_detect(tiny_model):
    """The offset-field refinement and the category mask inside the graph, against eager
    detect()."""
    torch.manual_seed(0)
    det = Detector.from_config("configs/demo.yaml", tiny_model + [
        f"data.image_size={SIZE}", "model.heads.keypoints.field=true",
        "model.heads.keypoints.handedness=none",
        "model.matcher.kind=atss", "model.anchors.ratios=[1.0]", "model.anchors.scales=[1.0]"],
        categories=["a", "b", "c"])
    head = det.model.heads["keypoints"]
    assert head.num_fields == 13
    head.set_classes(torch.tensor([True, False, True]))
    with torch.no_grad():  # strong, varied maps so that refinement moves keypoints
        head.map_predictor.bias[:] = 2.0
        head.map_predictor.weight[:] *= 300
    params, images, (_, _, labels, num, kpts), out = _graph_run(det)
    anchors = det.model.anchors(out.feature_sizes, torch.device("cpu"))
    for b, d in enumerate(_eager(det, images, params)):
        n = int(num[b])
        torch.testing.assert_close(kpts[b, :n], d.fields["keypoints"])
        assert (d.fields["keypoints"][d.labels == 1] == 0).all() and (d.fields["keypoints"][d.labels != 1, :, 2] > 0).all()
    # the refinement moved keypoints: unrefined decoding differs
    raw = head.decode(out.preds["keypoints"][0], anchors)  # [A, K, 3]
    first = _eager(det, images, params)[0]
    kept = first.labels != 1
    assert kept.any()
    assert not any(torch.allclose(first.fields["keypoints"][i], raw[j]) for i in torch.nonzero(kept)[:, 0][:3]
                   for j in range(raw.shape[0]))


def test_graph_with_keypoint_handedness_equals_detect(tiny_model):
    """The handedness swap inside the graph (the per-anchor logit), against eager detect(), with
    logits of both signs. The left/right pairs come from ``data.flip_pairs``
    (`Detector.from_config` has no data to read them from)."""
    torch.manual_seed(0)
    det = Detector.from_config("configs/demo.yaml", tiny_model + [
        f"data.image_size={SIZE}", "model.heads.keypoints.handedness=anchor",
        "data.flip_pairs=[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]]"],
        categories=["a", "b", "c"])
    head = det.model.heads["keypoints"]
    assert head.num_sides == 1 and det.keypoints.flip_pairs[0] == (1, 2)
    with torch.no_grad():  # handedness logits of both signs across anchors
        head.predictor.weight[3 * 13] *= 100
    params, images, (_, _, _, num, kpts), out = _graph_run(det)
    sides = out.preds["keypoints"][..., 3 * 13]
    assert (sides > 0).any() and (sides < 0).any()
    for b, d in enumerate(_eager(det, images, params)):
        torch.testing.assert_close(kpts[b, :int(num[b])], d.fields["keypoints"])


def test_graph_with_crop_handedness_equals_detect(tiny_model):
    """``keypoints.handedness: crop``: the graph crops the backbone's C4 map in each detection's
    clipped box and swaps its pairs by the crop classifier's logit, as eager detect() does; logits
    of both signs among the detections, and the swap changes keypoints."""
    torch.manual_seed(0)
    det = Detector.from_config("configs/demo.yaml", tiny_model + [
        f"data.image_size={SIZE}", "model.heads.keypoints.handedness=crop",
        "model.heads.keypoints.tower_channels=null",
        "data.flip_pairs=[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]]"],
        categories=["a", "b", "c"])
    head = det.model.heads["keypoints"]
    assert head.num_sides == 0 and head.side_crop is not None
    with torch.no_grad():  # logits centred on the detections': both signs
        head.side_crop.classify.weight *= 100
        _, _, (boxes, _, _, num, _), out = _graph_run(det)
        logits = head.side_crop(out.maps["keypoints"], boxes)[num[:, None] > torch.arange(30)]
        middle = logits.sort().values[len(logits) // 2 - 1:len(logits) // 2 + 1]
        head.side_crop.classify.bias -= middle.mean()  # between two logits: none near 0
    params, images, (boxes, _, _, num, kpts), out = _graph_run(det)
    eager = _eager(det, images, params)
    signs = []
    for b, d in enumerate(eager):
        n = int(num[b])
        torch.testing.assert_close(kpts[b, :n], d.fields["keypoints"])
        signs.append(head.side_crop(out.maps["keypoints"][b:b + 1], boxes[b:b + 1, :n])[0] > 0)
    signs = torch.cat(signs)
    assert signs.any() and not signs.all()
    with torch.no_grad():  # all negative: nothing swapped, so the positive ones were
        head.side_crop.classify.bias.fill_(-1e6)
        unswapped = _eager(det, images, params)
    moved = torch.cat([(a.fields["keypoints"] != u.fields["keypoints"]).any(-1).any(-1)
                       for a, u in zip(eager, unswapped)])
    assert torch.equal(moved, signs)
    for bad in ("[[1, 13]]", "[[1, 1]]", "[[1, 2], [2, 3]]"):
        with pytest.raises(ValueError, match="each keypoint at most once, in range for 13"):
            Detector.from_config("configs/demo.yaml", tiny_model + [f"data.flip_pairs={bad}"],
                                 categories=["a"])
