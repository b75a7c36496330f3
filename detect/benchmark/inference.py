"""Inference suites: ``infer`` (RetinaNet R50-FPN against torchvision's), ``infer-floor`` (the light
config end to end against its backbone + FPN alone) and ``keypoints`` (ATSS R50-FPN with a
keypoint head against torchvision's Keypoint R-CNN). All batch 1, end to end from a BGR uint8
image: letterbox / resize, to tensor, network, decoding, NMS, boxes in original pixels."""
from __future__ import annotations

import numpy as np
import torch
import torchvision

from detect.benchmark import peers
from detect.benchmark.common import Options, Row, setup, speed_row, time_interleaved
from detect.data.annotations import flip_pairs_from_names
from detect.data.synthetic.categories import KEYPOINT_NAMES

RETINANET = "configs/retinanet_r50_fpn_coco.yaml"
LIGHT = "configs/light_lite0_coco.yaml"
ATSS_KEYPOINTS = "configs/atss_r50_fpn_coco_keypoints.yaml"
DEMO = "configs/demo.yaml"


def _candidates(det: peers.Detector, peer: torch.nn.Module, image: np.ndarray,
                device: str) -> tuple[int, int]:
    """Boxes entering NMS in one untimed call of each side (summed over NMS calls)."""
    with peers.count_nms_inputs() as counts:
        det.predict(image)
        peers.torchvision_predict(peer, image, device)
    return sum(counts["ours"]), sum(counts["peer"])


def _retinanet_rows(opts: Options, image: np.ndarray, size: int, policy: peers.ScorePolicy,
                    frozen_bn: bool, target: float | None, optimize: bool = False) -> Row:
    det = peers.ours(RETINANET, size, 0, policy, opts.device)
    if optimize:
        det.optimize()  # a frozen graph (tools/infer.py --optimize)
    peer = peers.torchvision_retinanet(size, frozen_bn, policy).eval().to(opts.device)
    n_ours, n_peer = _candidates(det, peer, image, opts.device)
    times = time_interleaved({"ours": lambda: det.predict(image),
                              "peer": lambda: peers.torchvision_predict(peer, image, opts.device)},
                             opts.rounds(7, 2), device=opts.device)
    bn = "FrozenBatchNorm2d" if frozen_bn else "nn.BatchNorm2d"
    label = ("FrozenBN" if frozen_bn else "BN") + (", ours optimize()" if optimize else "")
    row = speed_row("infer", f"retinanet r50 {size} {policy}, tv {label}", times, target,
                    f"pre-NMS candidates ours {n_ours}, torchvision {n_peer}; torchvision {bn}")
    row.extra.update(candidates_ours=n_ours, candidates_peer=n_peer, policy=policy,
                     torchvision_bn=bn, ours_frozen_graph=optimize)
    return row


def infer(opts: Options) -> list[Row]:
    """Ours (retinanet config) vs torchvision RetinaNet R50-FPN, 640 px, batch 1."""
    setup(opts)
    size = 320 if opts.quick else 640
    image = peers.source_image()
    rows = [_retinanet_rows(opts, image, size, "dense", False, 1.3),
            _retinanet_rows(opts, image, size, "dense", True, None),
            _retinanet_rows(opts, image, size, "dense", False, 1.3, optimize=True),
            _retinanet_rows(opts, image, size, "dense", True, None, optimize=True)]
    if not opts.quick:
        rows.append(_retinanet_rows(opts, image, size, "prior", False, None))
    return rows


def infer_floor(opts: Options) -> list[Row]:
    """Light config: end to end time / time of its backbone + FPN alone (same input size)."""
    setup(opts)
    image = peers.source_image()
    rows = []
    for policy in ("dense", "prior"):
        det = peers.ours(LIGHT, 320, 17, policy, opts.device)
        model = det.model
        batch = torch.zeros(1, 3, 320, 320, dtype=torch.uint8, device=opts.device)

        @torch.inference_mode()
        def floor() -> None:
            model.features(batch)

        with peers.count_nms_inputs() as counts:
            det.predict(image)
        times = time_interleaved({"ours": lambda: det.predict(image), "peer": floor},
                                 opts.rounds(15, 3), device=opts.device)
        row = speed_row("infer-floor", f"light 320 e2e / backbone+FPN, {policy}", times,
                        note=f"peer = backbone + FPN alone; pre-NMS candidates {sum(counts['ours'])}")
        row.ratio, row.ratio_is = round(row.ours / row.peer, 3), "ours e2e / backbone+FPN time"
        row.target, row.target_op = (1.25, "<=") if policy == "dense" else (None, "<=")
        row.extra.update(candidates_ours=sum(counts["ours"]), policy=policy)
        rows.append(row)
    return rows


def keypoints(opts: Options) -> list[Row]:
    """Ours (ATSS R50-FPN + keypoint head) vs torchvision Keypoint R-CNN R50-FPN, 640 px."""
    setup(opts)
    size = 320 if opts.quick else 640
    image = peers.source_image()
    det = peers.ours(ATSS_KEYPOINTS, size, 17, "dense", opts.device)
    peer = torchvision.models.detection.keypointrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=size, max_size=size).eval().to(opts.device)
    ours_out = det.predict(image)
    peer_out = peers.torchvision_predict(peer, image, opts.device)
    times = time_interleaved({"ours": lambda: det.predict(image),
                              "peer": lambda: peers.torchvision_predict(peer, image, opts.device)},
                             opts.rounds(5, 2), device=opts.device)
    n_ours, n_peer = len(ours_out.boxes), len(peer_out["boxes"])
    row = speed_row("keypoints", f"atss r50 kpt {size} vs keypoint r-cnn", times, 4.0,
                    f"detections with keypoints: ours {n_ours}, torchvision {n_peer} "
                    "(random weights, classification bias 0)")
    row.extra.update(detections_ours=n_ours, detections_peer=n_peer)
    return [row]


def keypoint_cost(opts: Options) -> list[Row]:
    """What the keypoint head costs: the demo model (light config, 320 px, the sample set's 4
    classes) end to end with its keypoint head (13 keypoints, and the config's offset field) vs the
    same model box-only. Classification bias at the prior: detections as sparse as a trained
    model's, so the keypoints decoded per image are few, as in use."""
    setup(opts)
    image = peers.source_image(320)
    # the same network either way, weights irrelevant; the sample figure's left/right pairs, so
    # that the head has its handedness logit as in the demo
    pairs = [list(pair) for pair in flip_pairs_from_names(KEYPOINT_NAMES)]
    weights = ("model.backbone.weights=null", f"data.flip_pairs={pairs}")
    with_kpts = peers.ours(DEMO, 320, 13, "prior", opts.device, weights)
    box_only = peers.ours(DEMO, 320, 0, "prior", opts.device, weights)
    times = time_interleaved({"ours": lambda: with_kpts.predict(image),
                              "peer": lambda: box_only.predict(image)},
                             opts.rounds(21, 3), device=opts.device)
    row = speed_row("keypoint-cost", "demo model 320: with keypoint head / box-only", times,
                    note="peer = the same model without its keypoint head")
    row.ratio, row.ratio_is = round(row.ours / row.peer, 3), "with keypoints / box-only time"
    row.target, row.target_op = 1.10, "<="
    params = sum(p.numel() for p in with_kpts.model.heads["keypoints"].parameters())
    row.extra.update(keypoint_head_parameters=params,
                     model_parameters=sum(p.numel() for p in with_kpts.model.parameters()))
    return [row]


def mask_cost(opts: Options) -> list[Row]:
    """What the mask head costs: the light box model (the demo config without keypoints, 320 px)
    end to end with its mask head vs without, both giving exactly 20 detections per image
    (every score at 0.5, at most 20 kept) so that 20 masks are decoded and resampled to the
    original image, as a trained model's detections would be."""
    setup(opts)
    image = peers.source_image(320)
    common = ("model.backbone.weights=null", "postprocess.max_detections=20",
              "postprocess.score_thresh=0.0")
    with_masks = peers.ours(DEMO, 320, 0, "dense", opts.device, (
        *common, "model.heads.masks.enabled=true", "train.heads=[cls,box,masks]"))
    box_only = peers.ours(DEMO, 320, 0, "dense", opts.device, (*common, "train.heads=[cls,box]"))
    n = len(with_masks.predict(image).scores)
    times = time_interleaved({"ours": lambda: with_masks.predict(image),
                              "peer": lambda: box_only.predict(image)},
                             opts.rounds(21, 3), device=opts.device)
    row = speed_row("mask-cost", "light box model 320: with mask head / without", times,
                    note=f"peer = the same model without its mask head; {n} detections each")
    row.ratio, row.ratio_is = round(row.ours / row.peer, 3), "with masks / without time"
    row.target, row.target_op = 1.20, "<="
    params = sum(p.numel() for p in with_masks.model.heads["masks"].parameters())
    row.extra.update(mask_head_parameters=params, detections=n,
                     model_parameters=sum(p.numel() for p in with_masks.model.parameters()))
    return [row]
