"""Training suites: ``train`` (one optimiser step of RetinaNet R50-FPN, ours against torchvision's,
with peak memory) and ``data`` (the train transform pipeline against training consumption)."""
from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import nn

from detect.balancing import FixedWeights, head_totals
from detect.benchmark import peers
from detect.benchmark.common import (Options, Row, median, setup, shared_data_root, speed_row,
                                     time_interleaved)
from detect.config import load_config
from detect.data.build import EpochSampler, build_dataset, build_loader
from detect.models.build import build_model
from detect.models.detector import MultiHeadDetector
from detect.structures import Batch, Target

RETINANET = "configs/retinanet_r50_fpn_coco.yaml"
LIGHT = "configs/light_lite0_coco.yaml"
LR = 1e-4  # small: many repeated steps on one batch must stay finite


def synthetic_batch(batch_size: int, size: int, num_classes: int = peers.NUM_CLASSES,
                    seed: int = 0) -> Batch:
    """``batch_size`` copies of the test image at ``size`` with 3-6 random boxes each."""
    rng = np.random.default_rng(seed)
    rgb = cv2.resize(peers.source_image(), (size, size))[..., ::-1]
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)  # [3, H, W]
    targets = []
    for _ in range(batch_size):
        n = int(rng.integers(3, 7))
        xy = rng.uniform(0, size * 0.7, (n, 2))
        wh = rng.uniform(size * 0.05, size * 0.3, (n, 2))
        boxes = torch.tensor(np.concatenate([xy, np.minimum(xy + wh, size)], 1), dtype=torch.float32)
        labels = torch.tensor(rng.integers(0, num_classes, n), dtype=torch.int64)
        targets.append(Target(boxes, labels))
    return Batch(image.expand(batch_size, -1, -1, -1).contiguous(), targets,
                 [(size, size)] * batch_size)


def ours_step(model: MultiHeadDetector, batch: Batch,
              heads: tuple[str, ...]) -> Callable[[], float]:
    """One SGD step of our model on ``batch`` (matching, per-head losses, balancing)."""
    model.train()
    balancer = FixedWeights(list(heads))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9)

    def step() -> float:
        out = model(batch.images)
        totals = head_totals(model.losses(out, batch.targets, heads))
        info = balancer.backward(totals, [], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return info["loss"]

    return step


def torchvision_step(model: nn.Module, batch: Batch) -> Callable[[], float]:
    """One SGD step of a torchvision detector on the same images and boxes."""
    model.train()
    images = [img.float() / 255 for img in batch.images]
    targets = [{"boxes": t.boxes, "labels": t.labels} for t in batch.targets]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9)

    def step() -> float:
        loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def _train_models(kind: str, size: int) -> Callable[[], float]:
    batch = synthetic_batch(4, size)
    if kind == "ours":
        cfg = load_config(RETINANET)
        return ours_step(build_model(cfg.model, peers.NUM_CLASSES, 0), batch, ("cls", "box"))
    frozen = kind == "peer_frozen"
    return torchvision_step(peers.torchvision_retinanet(size, frozen, "prior"), batch)


def _rss_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process from /proc, KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_memory_child(kind: str, size: int, threads: int) -> tuple[int, int]:
    """In a fresh process: (RSS after building, peak RSS over two steps), KiB.

    The peak is the process's VmHWM, reset after building (``clear_refs``). ``ru_maxrss`` would
    not do: a spawned child starts with its parent's high-water mark (Linux keeps it across
    fork and exec), so a large parent hides the child's own peak.
    """
    torch.set_num_threads(threads)
    step = _train_models(kind, size)
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    step()
    step()
    return before, _rss_kib("VmHWM")


def peak_memory_mib(kind: str, size: int, threads: int) -> tuple[float, float]:
    """(peak RSS growth during two training steps, peak RSS) in MiB, measured in a subprocess."""
    if not sys.platform.startswith("linux"):
        return float("nan"), float("nan")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        before, after = pool.apply(_peak_memory_child, (kind, size, threads))
    return (after - before) / 1024, after / 1024


def train(opts: Options) -> list[Row]:
    """One optimiser step, batch 4, R50-FPN RetinaNet: ours vs torchvision (two builds)."""
    setup(opts)
    size = 256 if opts.quick else 512
    ours = _train_models("ours", size)
    measure_memory = opts.device == "cpu" and not opts.quick
    if measure_memory:  # ours once, each torchvision build below
        grow_ours, peak_ours = peak_memory_mib("ours", size, torch.get_num_threads())
    rows = []
    for kind, bn in (("peer_frozen", "FrozenBatchNorm2d, stem+layer1 frozen"),
                     ("peer", "nn.BatchNorm2d, all layers trained")):
        peer = _train_models(kind, size)
        times = time_interleaved({"ours": ours, "peer": peer}, opts.rounds(5, 2))
        row = speed_row("train", f"r50 step b4 {size}, tv {bn.split(',')[0]}", times, 1.3,
                        f"torchvision: {bn}")
        if measure_memory:
            grow_peer, peak_peer = peak_memory_mib(kind, size, torch.get_num_threads())
            row.extra.update(peak_rss_growth_mib={"ours": grow_ours, "peer": grow_peer},
                             peak_rss_mib={"ours": peak_ours, "peer": peak_peer})
            rows.append(row)
            rows.append(Row("train", f"  peak RSS growth, tv {bn.split(',')[0]}",
                            round(grow_ours), round(grow_peer), "MiB",
                            round(grow_peer / grow_ours, 3) if grow_ours > 0 else float("nan"),
                            "peer/ours memory",
                            note="peak RSS (VmHWM) growth over two steps, one subprocess per model"))
        else:
            rows.append(row)
        del peer
    return rows


def _loader_images_per_s(loader, limit: int) -> tuple[float, float]:
    """(images/s after the first batch, seconds to the first batch) over ``limit`` batches."""
    start = time.perf_counter()
    first, images = None, 0
    for i, batch in enumerate(loader):
        if first is None:
            first = time.perf_counter()
        else:
            images += len(batch.targets)
        if i + 1 >= limit:
            break
    return images / (time.perf_counter() - first), first - start


def data(opts: Options) -> list[Row]:
    """Train pipeline on coco-mini at 640 with 2 workers vs our light-config train step."""
    setup(opts)
    root = shared_data_root() / "coco-mini"
    if not (root / "train2017").is_dir():
        raise FileNotFoundError(f"{root}: no coco-mini (set DETECT_SHARED_DATA)")
    size, batch_size = 640, 4 if opts.quick else 8
    cfg = load_config(LIGHT, [
        f"data.train.images={root / 'train2017'}",
        f"data.train.annotations=[{root / 'annotations/instances_train2017.json'},"
        f"{root / 'annotations/person_keypoints_train2017.json'}]",
        f"data.image_size={size}", "data.workers=2"])
    ds = build_dataset(cfg.data, cfg.data.train, train=True)
    loader = build_loader(ds, batch_size, EpochSampler(len(ds), True), 2, cfg.data.size_divisor)
    limit = 5 if opts.quick else len(loader)
    loader_ips, startup = _loader_images_per_s(loader, limit)
    batch = next(iter(build_loader(ds, batch_size, EpochSampler(len(ds), True), 0,
                                   cfg.data.size_divisor)))
    model = build_model(cfg.model, ds.ann.categories.num_classes, 17)
    step = ours_step(model, batch, ("cls", "box", "keypoints"))
    times = time_interleaved({"step": step}, opts.rounds(5, 2))
    train_ips = batch_size / median(times["step"])
    return [Row("data", f"loader {size} 2 workers vs light train", round(loader_ips, 2),
                round(train_ips, 2), "img/s", round(loader_ips / train_ips, 3),
                "loader / train images/s", 1.0, ">=",
                f"ours = loader images/s (first batch after {startup:.1f} s excluded), peer = "
                f"light-config train step images/s, batch {batch_size}",
                {"loader_startup_s": round(startup, 2), "batches": limit})]
