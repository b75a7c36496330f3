"""``accuracy`` suite: the demo config trained for N minutes against torchvision's RetinaNet on the
same backbone + FPN for the same N minutes, both evaluated by `detect.evaluation.evaluate`.

Both sides get the same data loader (the demo's train pipeline), optimiser (AdamW with the demo's
lr and weight decay, none on 1-d parameters), linear warm-up then constant lr, gradient clipping
at 10, no EMA. The peer wraps our EfficientNet-Lite0 + FPN (P3-P6, same ImageNet weights) as
torchvision's backbone and uses torchvision's RetinaNet recipe on top: 3 scales x 3 ratios
anchors, IoU matcher, 4-conv towers, focal + L1 losses. Ours trains its keypoint head too, with
the demo's loss balancing, as the demo does; only box metrics are compared.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator

from detect.balancing import build_balancer, head_totals
from detect.benchmark.common import Options, Row, setup
from detect.config import Config, load_config
from detect.config_data import keypoint_sigmas, model_keypoints, resolve_keypoints
from detect.data.build import EpochSampler, build_dataset, build_loader
from detect.data.synthetic.write import generate
from detect.engine.inference import coco_records, evaluate_model
from detect.evaluation import evaluate
from detect.models.build import build_model
from detect.models.detector import FPN_INPUTS, MultiHeadDetector
from detect.prediction import Prediction
from detect.structures import Batch, Detections, map_to_original

DEMO = "configs/demo.yaml"
DATA = Path("data/synthetic")
GRAD_CLIP = 10.0


class FeaturePyramid(nn.Module):
    """Our backbone + FPN as a torchvision detection backbone: normalised images [B, 3, H, W] ->
    OrderedDict {"0": P3, "1": P4, ...}, each [B, out_channels, H_l, W_l]."""

    def __init__(self, model: MultiHeadDetector, out_channels: int) -> None:
        super().__init__()
        self.backbone, self.neck = model.backbone, model.neck
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        levels = self.backbone(images.contiguous(memory_format=torch.channels_last))
        feats = self.neck(levels[FPN_INPUTS])
        return OrderedDict((str(i), f) for i, f in enumerate(feats))


def ensure_sample_data(root: Path = DATA) -> Path:
    """The sample dataset, generated as ``make data`` does when missing."""
    if not (root / "annotations" / "val.json").is_file():
        generate(root, 400, 100, 320, 0)
    return root


def demo_config(root: Path) -> Config:
    return load_config(DEMO, [f"data.train.images={root / 'train'}",
                              f"data.train.annotations=[{root / 'annotations/train.json'}]",
                              f"data.val.images={root / 'val'}",
                              f"data.val.annotations=[{root / 'annotations/val.json'}]"])


def torchvision_peer(cfg: Config, num_classes: int) -> RetinaNet:
    """torchvision RetinaNet on a fresh copy of our backbone + FPN (P3-P6, strides 8-64)."""
    ours = build_model(cfg.model, num_classes, 0)
    levels = 3 + cfg.model.neck.extra_levels
    sizes = tuple((s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)) for s in (32 * 2 ** i for i in range(levels)))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)
    size = cfg.data.image_size
    return RetinaNet(FeaturePyramid(ours, cfg.model.neck.channels), num_classes,
                     min_size=size, max_size=size, image_mean=list(ours.backbone.pixel_mean),
                     image_std=list(ours.backbone.pixel_std), anchor_generator=anchors,
                     score_thresh=cfg.postprocess.score_thresh,
                     detections_per_img=cfg.postprocess.max_detections,
                     nms_thresh=cfg.postprocess.nms_iou, topk_candidates=cfg.postprocess.topk_per_level)


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.train.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.train.lr)


def train_for(seconds: float, loader: DataLoader, sampler: EpochSampler, model: nn.Module,
              loss_fn: Callable[[Batch], Tensor], cfg: Config) -> dict[str, float]:
    """Train ``model`` until ``seconds`` have passed (data loading included); steps and images."""
    optimizer = _optimizer(cfg, model)
    warmup = cfg.train.warmup_steps
    model.train()
    steps, images, epoch = 0, 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        sampler.set_epoch(epoch)
        for batch in loader:
            for group in optimizer.param_groups:
                group["lr"] = cfg.train.lr * min(1.0, (steps + 1) / max(warmup, 1))
            loss = loss_fn(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps, images = steps + 1, images + len(batch.targets)
            if time.perf_counter() - start >= seconds:
                break
        epoch += 1
    took = time.perf_counter() - start
    return {"steps": steps, "images": images, "seconds": round(took, 1),
            "images_per_s": round(images / took, 2)}


def ours_loss(model: MultiHeadDetector, heads: tuple[str, ...],
              cfg: Config) -> Callable[[Batch], Tensor]:
    """The config's loss balancing (as the demo trains); strategies that need their own backward
    pass or extra parameters (gradnorm, pcgrad, uncertainty) are not supported here."""
    if cfg.train.balancing not in ("fixed", "loss_norm"):
        raise ValueError(f"the accuracy suite supports train.balancing fixed or loss_norm, not "
                         f"{cfg.train.balancing}")
    balancer = build_balancer(cfg.train.balancing, list(heads), cfg.train.loss_weights,
                              ema_momentum=cfg.train.balancing_ema)
    return lambda batch: balancer(head_totals(model.losses(model(batch.images), batch.targets, heads)))


def torchvision_loss(model: RetinaNet) -> Callable[[Batch], Tensor]:
    def loss(batch: Batch) -> Tensor:
        images = [img.float() / 255 for img in batch.images]
        targets = [{"boxes": t.boxes, "labels": t.labels} for t in batch.targets]
        return sum(model(images, targets).values())
    return loss


@torch.inference_mode()
def torchvision_predictions(model: RetinaNet, loader: DataLoader, categories) -> list[dict]:
    """COCO results of a torchvision detector over our val loader, in original pixels."""
    model.eval()
    results: list[dict] = []
    for batch in loader:
        outs = model([img.float() / 255 for img in batch.images])
        for t, out in zip(batch.targets, outs):
            d = Detections(map_to_original(out["boxes"], t.scale, t.offset), out["scores"],
                           out["labels"])
            h, w = t.orig_size
            d.boxes[:, 0::2] = d.boxes[:, 0::2].clamp(0, w)
            d.boxes[:, 1::2] = d.boxes[:, 1::2].clamp(0, h)
            labels = d.labels.cpu().numpy()
            pred = Prediction(d.boxes.cpu().numpy(), d.scores.cpu().numpy(),
                              np.array([categories.category_id(int(i)) for i in labels]),
                              [categories.names[int(i)] for i in labels])
            results += coco_records(pred, t.image_id)
    return results


def accuracy(opts: Options, data_root: Path = DATA) -> list[Row]:
    """Box AP after ``opts.minutes`` of training each: demo config vs torchvision RetinaNet."""
    setup(opts)
    cfg = demo_config(ensure_sample_data(data_root))
    train_ds = build_dataset(cfg.data, cfg.data.train, train=True, seed=cfg.train.seed)
    val_ds = build_dataset(cfg.data, cfg.data.val, train=False, name="data.val")
    categories, num_classes = train_ds.ann.categories, train_ds.ann.categories.num_classes
    kmeta = train_ds.ann.keypoints
    cfg = resolve_keypoints(cfg, kmeta.names if kmeta else (), "data.train")
    sigmas = keypoint_sigmas(cfg.model.heads.keypoints) or None
    val_loader = build_loader(val_ds, cfg.train.batch_size, EpochSampler(len(val_ds), False),
                              cfg.data.workers, cfg.data.size_divisor)
    seconds = opts.minutes * 60

    def loader() -> tuple[DataLoader, EpochSampler]:
        sampler = EpochSampler(len(train_ds), True, cfg.train.seed)
        return build_loader(train_ds, cfg.train.batch_size, sampler, cfg.data.workers,
                            cfg.data.size_divisor, drop_last=True), sampler

    torch.manual_seed(cfg.train.seed)
    ours = build_model(cfg.model, num_classes, model_keypoints(cfg))
    heads = tuple(h for h in cfg.train.heads if h in ours.heads)
    ours_run = train_for(seconds, *loader(), ours, ours_loss(ours, heads, cfg), cfg)
    ours_metrics, _ = evaluate_model(ours, val_loader, val_ds.ann.gt, categories,
                                     cfg.postprocess, torch.device("cpu"))
    torch.manual_seed(cfg.train.seed)
    peer = torchvision_peer(cfg, num_classes)
    peer_run = train_for(seconds, *loader(), peer, torchvision_loss(peer), cfg)
    peer_preds = torchvision_predictions(peer, val_loader, categories)
    peer_metrics = evaluate(val_ds.ann.gt, peer_preds, kpt_sigmas=sigmas)
    rows = []
    for head, stat in (("bbox", "AP"), ("bbox", "AP50"), ("box_class_agnostic", "AP")):
        a, b = ours_metrics[head][stat], peer_metrics[head][stat]
        rows.append(Row("accuracy", f"{head}.{stat} after {opts.minutes:g} min", round(a, 4),
                        round(b, 4), "AP", round(a / b, 3) if b > 0 else float("nan"),
                        "ours / peer AP", note="" if rows else
                        f"steps ours {ours_run['steps']} ({ours_run['images_per_s']} img/s), "
                        f"torchvision {peer_run['steps']} ({peer_run['images_per_s']} img/s)"))
    rows[0].extra.update(ours_run=ours_run, peer_run=peer_run, ours_metrics=ours_metrics,
                         peer_metrics=peer_metrics)
    return rows
