"""``levers`` suite: each speed lever of our model measured alone, ours with it against ours
without it (same weights, same input, interleaved). Ratio = time without / time with: > 1 means
the lever pays.

Levers: frozen BatchNorm folded into the convolutions (`detect.models.fold`), channels_last
memory (`MultiHeadDetector.channels_last`) and lazy decoding (`MultiHeadDetector.detect` decodes
boxes of the pre-NMS candidates and keypoints of the final detections only, instead of every
anchor).
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from detect.api import Detector
from detect.benchmark import peers
from detect.benchmark.common import Options, Row, setup, speed_row, time_interleaved
from detect.benchmark.training import ours_step, synthetic_batch
from detect.config import load_config
from detect.models.backbone import build_backbone
from detect.models.detector import MultiHeadDetector
from detect.nms import postprocess

LIGHT = "configs/light_lite0_coco.yaml"
RETINANET = "configs/retinanet_r50_fpn_coco.yaml"
ATSS_KEYPOINTS = "configs/atss_r50_fpn_coco_keypoints.yaml"


def unfolded(model: MultiHeadDetector, config: str) -> MultiHeadDetector:
    """A copy of ``model`` whose backbone applies its frozen BatchNorm separately (same weights)."""
    b = load_config(config).model.backbone
    other = copy.deepcopy(model)
    backbone = build_backbone(b.name, None, b.freeze_bn, b.frozen_stages, fold_bn=False)
    backbone.load_state_dict(model.backbone.state_dict())
    other.backbone = backbone
    return other.set_memory_format(model.channels_last)


def in_memory_format(model: MultiHeadDetector, channels_last: bool) -> MultiHeadDetector:
    """A copy of ``model`` running in channels_last (NHWC) or contiguous (NCHW) memory."""
    return copy.deepcopy(model).set_memory_format(channels_last)


def with_model(det: Detector, model: MultiHeadDetector) -> Detector:
    """``det`` with another network (same config, categories and post-processing), eager."""
    other = Detector(model, det.cfg, det.categories, det.keypoints, det.device)
    other.params = det.params
    return other


def _lever_row(name: str, with_lever: Callable[[], object], without: Callable[[], object],
               repeats: int, note: str = "") -> Row:
    times = time_interleaved({"ours": with_lever, "peer": without}, repeats)
    row = speed_row("levers", name, times, note=note)
    row.ratio_is = "without / with lever time"
    return row


def _train_rows(opts: Options, config: str, label: str, size: int, batch_size: int,
                num_keypoints: int) -> list[Row]:
    det = peers.ours(config, size, num_keypoints, "prior")
    batch = synthetic_batch(batch_size, size)
    heads = ("cls", "box") if not num_keypoints else ("cls", "box", "keypoints")
    if num_keypoints:  # every object gets K labelled keypoints inside its box
        for t in batch.targets:
            centre = (t.boxes[:, None, :2] + t.boxes[:, None, 2:]) / 2  # [N, 1, 2]
            spread = torch.rand(len(t.boxes), num_keypoints, 2) - 0.5  # [N, K, 2]
            xy = centre + spread * (t.boxes[:, None, 2:] - t.boxes[:, None, :2])
            t.keypoints = torch.cat([xy, torch.full_like(xy[..., :1], 2.0)], -1)  # [N, K, 3]
    model = det.model
    step = ours_step(model, batch, heads)
    no_fold = ours_step(unfolded(model, config), batch, heads)
    nhwc = ours_step(in_memory_format(model, True), batch, heads)
    nchw = ours_step(in_memory_format(model, False), batch, heads)
    repeats = opts.rounds(5, 2)
    return [_lever_row(f"fold BN, {label} train b{batch_size} {size}", step, no_fold, repeats),
            _lever_row(f"channels_last, {label} train b{batch_size} {size}", nhwc, nchw, repeats)]


def _infer_rows(opts: Options, config: str, label: str, size: int, num_keypoints: int) -> list[Row]:
    det = peers.ours(config, size, num_keypoints, "dense")
    image = peers.source_image()
    other = with_model(det, unfolded(det.model, config))
    nhwc = with_model(det, in_memory_format(det.model, True))
    nchw = with_model(det, in_memory_format(det.model, False))
    frozen = with_model(nhwc, nhwc.model).optimize()  # shares nhwc's weights; nhwc stays eager
    repeats = opts.rounds(7, 2)
    return [_lever_row(f"fold BN, {label} infer {size}", lambda: det.predict(image),
                       lambda: other.predict(image), repeats),
            _lever_row(f"channels_last, {label} infer {size}", lambda: nhwc.predict(image),
                       lambda: nchw.predict(image), repeats),
            _lever_row(f"frozen graph (Detector.optimize), {label} infer {size}",
                       lambda: frozen.predict(image), lambda: nhwc.predict(image), repeats,
                       note="frozen graph of the backbone's kind, channels_last, vs eager")]


def decode_all(model: MultiHeadDetector, out, image_sizes, params) -> list:
    """The eager alternative to `MultiHeadDetector.detect`: decode every anchor, then select
    (timing only: a crop handedness classifier, which reads the final boxes, is not applied)."""
    anchors = model.anchors(out.feature_sizes, out.preds["cls"].device)
    scores = model.heads["cls"].decode(out.preds["cls"], anchors)  # [B, A, C]
    boxes = model.heads["box"].decode(out.preds["box"], anchors)  # [B, A, 4]
    fields = None
    if "keypoints" in model.heads:  # [B, A, K, 3]
        fields = {"keypoints": model.heads["keypoints"].decode(out.preds["keypoints"], anchors)}
    return postprocess(scores, boxes, model.anchor_generator.num_anchors_per_level(out.feature_sizes),
                       fields, image_sizes, params.score_thresh, params.topk_per_level,
                       params.nms_iou, params.max_detections, params.class_agnostic,
                       params.soft_nms_sigma)


def _decode_row(opts: Options, config: str, label: str, size: int, num_keypoints: int) -> Row:
    det = peers.ours(config, size, num_keypoints, "dense")
    model = det.model
    rgb = np.ascontiguousarray(peers.source_image(size)[..., ::-1])
    with torch.inference_mode():
        out = model(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    sizes = [(size, size)]

    @torch.inference_mode()
    def lazy() -> None:
        model.detect(out, sizes, det.params)

    @torch.inference_mode()
    def eager() -> None:
        decode_all(model, out, sizes, det.params)

    return _lever_row(f"lazy decode, {label} {size} (post-processing only)", lazy, eager,
                      opts.rounds(15, 3), "network excluded: decoding + NMS of one image")


def levers(opts: Options) -> list[Row]:
    setup(opts)
    r50_train, r50_infer = (256, 320) if opts.quick else (512, 640)
    light_train = 320
    rows = _train_rows(opts, LIGHT, "light", light_train, 8, 17)
    rows += _infer_rows(opts, LIGHT, "light", 320, 17)
    rows += _train_rows(opts, RETINANET, "r50 retinanet", r50_train, 4, 0)
    rows += _infer_rows(opts, RETINANET, "r50 retinanet", r50_infer, 0)
    rows.append(_decode_row(opts, ATSS_KEYPOINTS, "atss r50 kpt", r50_infer, 17))
    rows.append(_decode_row(opts, LIGHT, "light", 320, 17))
    return rows
