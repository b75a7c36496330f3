"""The training loop: data, model, optimiser, schedule, EMA, evaluation, checkpoints, logging.

Distributed training runs under ``torchrun`` (DDP; NCCL on GPU, gloo on CPU): the same entry
point, no process management of our own. Only rank 0 logs, evaluates and writes files.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from detect.balancing import (build_balancer, group_losses, group_mismatch, head_totals,
                              own_terms_gradient_only)
from detect.config import Config, config_to_dict, save_config
from detect.config_data import data_notes, model_masks, resolve_keypoints, resolve_masks
from detect.data.build import EpochSampler, build_dataset, build_loader
from detect.distributed import (any_rank, cleanup_distributed, gather_lists, init_distributed,
                                local_rank)
from detect.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint
from detect.engine.ema import ModelEMA
from detect.engine.grad_diagnostics import ConflictSummary, format_conflicts, head_gradient_stats
from detect.engine.inference import drawn_predictions, evaluate_model
from detect.engine.init_from import init_model
from detect.engine.logging import RunLog
from detect.engine.tracking import build_trackers
from detect.engine.optim import build_optimizer, clip_groups, freeze_parts
from detect.engine.run_state import (check_compatible, checkpoint_meta, rng_state, seed_everything,
                                     set_rng_state)
from detect.engine.schedule import warmup_cosine
from detect.evaluation import format_table
from detect.evaluation.table import metric_value
from detect.io import atomic_write_json
from detect.models.backbones.base import native_bf16
from detect.models.build import HeadFactory, build_for_data
from detect.models.detector import MultiHeadDetector
from detect.structures import Batch
from detect.tensor_files import CheckpointError


class TrainingError(RuntimeError):
    """Training cannot go on; the message is one line."""


@dataclass
class TrainState:
    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of this epoch consumed (for exact resume)
    best: float = -math.inf


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, resume: str | Path | None = None,
                 device: str | None = None, show_progress: bool = True,
                 init_from: str | Path | None = None, class_map: str = "same-names",
                 quiet: bool = False, heads: Sequence[HeadFactory] = ()) -> None:
        """``show_progress``: progress bars on stderr; ``quiet``: no bars and no per-head
        tables (warnings and errors are still printed); ``heads``: builders of heads of the
        caller's, trained when ``train.heads`` names them (`detect.models.build`)."""
        self.extra_heads = tuple(heads)
        self.cfg = self.cfg_requested = cfg  # cfg: keypoint settings resolved from the data
        self.quiet = quiet
        self.out = Path(out_dir)
        self.rank, self.world = init_distributed()
        self.device = torch.device(device or (f"cuda:{local_rank()}" if torch.cuda.is_available()
                                              else "cpu"))
        self.show_progress = show_progress and not quiet and self.rank == 0
        seed_everything(cfg.train.seed + self.rank, cfg.train.deterministic)
        self._build_data()
        self._build_model(init_from, class_map)
        self.state = TrainState()
        try:
            trackers = (build_trackers(cfg.train.tracking, self.out, cfg.train.tracking_uri)
                        if self.rank == 0 else [])
        except RuntimeError as e:
            raise TrainingError(str(e)) from None
        self.logger = RunLog(self.out, self.rank == 0, trackers, quiet, self.show_progress,
                             weights_move=cfg.train.balancing != "fixed")
        self.skipped: list[str] = []
        if resume is not None:
            self._resume(Path(resume))

    # ------------------------------------------------------------------ setup
    def _build_data(self) -> None:
        cfg = self.cfg
        self.train_ds = build_dataset(cfg.data, cfg.data.train, train=True, seed=cfg.train.seed)
        self.categories = self.train_ds.ann.categories
        self.kmeta = self.train_ds.ann.keypoints
        if cfg.model.num_classes and cfg.model.num_classes != self.categories.num_classes:
            raise TrainingError(f"model.num_classes is {cfg.model.num_classes} but the training "
                                f"annotations have {self.categories.num_classes} categories")
        names = self.kmeta.names if self.kmeta is not None else ()
        source = cfg.data.train.annotations[0]
        cfg = resolve_keypoints(cfg, names, source)
        self.cfg = cfg = resolve_masks(cfg, self.train_ds.ann.mask_category_ids, source)
        self.train_ds.masks = model_masks(cfg)  # no mask head: no masks decoded
        for line in data_notes(self.cfg_requested, cfg):
            if self.rank == 0:
                print(line)
        self.sampler = EpochSampler(len(self.train_ds), True, cfg.train.seed, self.rank, self.world)
        self.loader = build_loader(self.train_ds, cfg.train.batch_size, self.sampler,
                                   cfg.data.workers, cfg.data.size_divisor, persistent=True)
        self.val_ds = None
        if cfg.data.val.images and cfg.data.val.annotations and self.rank == 0:
            self.val_ds = build_dataset(cfg.data, cfg.data.val, train=False, name="data.val")
            if self.val_ds.ann.categories != self.categories:
                raise TrainingError("data.val categories differ from data.train categories")

    def _build_model(self, init_from: str | Path | None, class_map: str) -> None:
        cfg = self.cfg
        try:
            self.model: MultiHeadDetector = build_for_data(cfg, self.categories, self.kmeta,
                                                           self.extra_heads)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        if init_from is not None:
            report = init_model(self.model, init_from, self.categories.names, class_map)
            if self.rank == 0:
                print(report.summary(init_from))
        self.model.to(self.device)
        self.heads = tuple(cfg.train.heads)
        freeze_parts(self.model, cfg.train.freeze)
        self.ema = ModelEMA(self.model, cfg.train.ema_decay) if cfg.train.ema else None
        self.ddp = None
        if self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False)
        t = cfg.train
        if self.world > 1 and t.balancing in ("gradnorm", "pcgrad"):
            raise TrainingError(f"train.balancing={t.balancing} runs single-process only")
        # balancing groups: the trained heads, then the loss terms set apart
        self.groups = (*self.heads, *t.balance_apart)
        # terms that train only their head's own parameters: in no balancing statistic
        self.own_terms = {term for h in self.heads for term in self.model.heads[h].own_terms}
        # their parameters: an optimiser group and a gradient clip of their own
        self.clip_groups = clip_groups(self.model)
        self.balancer = build_balancer(t.balancing, list(self.groups), t.loss_weights,
                                       ema_momentum=t.balancing_ema, gradnorm_alpha=t.gradnorm_alpha,
                                       gradnorm_lr=t.gradnorm_lr, seed=t.seed).to(self.device)
        self.optimizer = build_optimizer(cfg.train, self.model)
        if extra := list(self.balancer.parameters()):  # uncertainty's learned log-variances
            self.optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
        # what every head depends on: the backbone and the FPN
        self.shared_params = [p for mod in (self.model.backbone, self.model.neck)
                              for p in mod.parameters() if p.requires_grad]
        # GradNorm's "last shared layer": the FPN's outputs
        self.last_shared = [p for mod in (self.model.neck.output, self.model.neck.extra)
                            for p in mod.parameters() if p.requires_grad]
        self.conflicts = ConflictSummary()  # every diagnostics measurement of the run
        self.last_grad_stats: dict | None = None
        self.total_steps = self._total_steps()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(s, self.total_steps, min(t.warmup_steps, self.total_steps // 3),
                                    t.min_lr_ratio))
        self._build_amp()

    def _build_amp(self) -> None:
        t = self.cfg.train
        use_amp = t.amp != "off" and self.device.type == "cuda"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp) if use_amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and t.amp == "fp16")
        self.model.backbone.frozen_dtype = native_bf16(self.device) if t.frozen_bf16 else None

    def _total_steps(self) -> int:
        t = self.cfg.train
        if t.max_steps > 0:
            return t.max_steps
        return max(1, t.epochs * math.ceil(len(self.loader) / t.accumulate))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        s = self.state
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "balancer": self.balancer.state_dict(),
            "step": s.step, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch, "best": s.best,
            "rng": rng_state(),
        }
        state.update(checkpoint_meta(self.cfg, self.categories, self.kmeta))
        return state

    def save(self, name: str) -> None:
        if self.rank == 0:
            save_checkpoint(self.checkpoint_state(), self.out / name)

    def _resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        check_compatible(ckpt, self.cfg, self.categories, self.kmeta, path)
        load_weights(self.model, ckpt["model"], path)
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            reason = str(e).strip().partition("\n")[0][:200]
            raise CheckpointError(f"{path}: its training state does not fit this run "
                                  f"({type(e).__name__}: {reason})") from None
        if self.rank == 0 and not self.quiet:
            print(f"resuming {path} at step {self.state.step} of {self.total_steps} (epoch "
                  f"{self.state.epoch})", file=sys.stderr, flush=True)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        """Everything but the model weights: EMA, optimiser, schedule, progress, RNG."""
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("balancer") is not None:
            self.balancer.load_state_dict(ckpt["balancer"])
        self.state = TrainState(ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["best"])
        set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------ loop
    def train(self, stop_at: int | None = None) -> dict:
        """Train to the configured budget and evaluate. ``stop_at``: stop after that optimiser
        step as if interrupted (``last.pt`` written, no final evaluation); ``--resume`` goes on
        exactly where it stopped."""
        cfg, s = self.cfg, self.state
        self.end_step = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            save_config(self.cfg, self.out / "config.yaml")
        self.logger.start(config_to_dict(self.cfg), s.step)
        bar = tqdm(total=self.total_steps, initial=s.step, disable=not self.show_progress,
                   dynamic_ncols=True, desc="train")
        metrics: dict = {}
        while s.step < self.end_step:
            self._train_epoch(bar)
            if s.step >= self.end_step:
                break
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            if cfg.train.eval_every and s.epoch % cfg.train.eval_every == 0:
                metrics = self.evaluate_and_save()
            self.save("last.pt")
        bar.close()
        if s.step < self.total_steps:  # stopped early on request
            self.save("last.pt")
            self._report_skipped()
            cleanup_distributed()
            return {}
        metrics = self.evaluate_and_save()
        self.save("last.pt")
        if self.conflicts.norms and self.rank == 0:
            summary = self.conflicts.summary()
            self.logger.log({"step": s.step, "grad_conflict_summary": summary})
            if not self.quiet:
                tqdm.write(format_conflicts(summary))
        if self.rank == 0:
            atomic_write_json(self.out / "metrics.json", metrics, indent=2)
            self.logger.finish([self.out / "best.pt", self.out / "metrics.json"])
            self.logger.say(f"finished: {s.step} steps")
        self._report_skipped()
        cleanup_distributed()
        return metrics

    def _report_skipped(self) -> None:
        """Rank 0 lists the images every rank could not read during training."""
        skipped = gather_lists(self.skipped)
        if skipped and self.rank == 0:
            unique = sorted(set(skipped))
            print(f"skipped {len(unique)} unreadable image(s) ({len(skipped)} time(s) in all):")
            for line in unique:
                print(f"  {line}")

    def _train_epoch(self, bar: tqdm) -> None:
        cfg, s = self.cfg, self.state
        self.sampler.set_epoch(s.epoch, s.batch_in_epoch * cfg.train.batch_size)
        model = self.ddp or self.model
        model.train()
        t0, images, running, batches = time.perf_counter(), 0, {}, 0
        for batch in self.loader:
            if batch.skipped and cfg.data.on_bad_image == "error":
                raise TrainingError(f"unreadable image at step {s.step + 1}: {batch.skipped[0]}")
            self.skipped += batch.skipped
            s.batch_in_epoch += 1  # consumed, even when left out: --resume restarts after it
            # a rank with no readable image of its batch: every rank leaves the batch out (DDP
            # needs the same backward passes everywhere); the images are listed at the end
            if any_rank(not batch.targets, self.device):
                continue
            losses = self._forward_backward(model, batch)
            batches += 1
            images += len(batch.targets)
            for k, v in losses.items():
                running[k] = running.get(k, 0.0) + v
            if s.batch_in_epoch % cfg.train.accumulate:
                continue
            self._optimizer_step()
            bar.update(1)
            if s.step % cfg.train.log_every == 0 or s.step == self.end_step:
                avg = {k: v / batches for k, v in running.items()}
                dt = time.perf_counter() - t0
                self._log_step(avg, images * self.world / max(dt, 1e-9), bar)
                t0, images, running, batches = time.perf_counter(), 0, {}, 0
            if s.step >= self.end_step:
                return

    def _forward_backward(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                            enabled=self.amp_dtype is not None):
            out = model(batch.images)
        t = self.cfg.train
        raw = self.model.losses(out, batch.targets, self.heads)
        losses = group_losses(own_terms_gradient_only(raw, self.own_terms), t.balance_apart)
        if set(losses) != set(self.groups):
            raise TrainingError(group_mismatch(self.groups, losses, t.balance_apart))
        totals = head_totals(losses)
        for head, value in totals.items():
            if not torch.isfinite(value):
                raise TrainingError(f"non-finite loss at step {self.state.step + 1}: head "
                                    f"'{head}' ({', '.join(f'{k}={v.item():.4g}' for k, v in losses[head].items())})")
        if (t.grad_diagnostics_every and self.state.step % t.grad_diagnostics_every == 0
                and self.state.batch_in_epoch % t.accumulate == 0 and len(totals) > 1):
            self.last_grad_stats = head_gradient_stats(totals, self.shared_params)
            self.conflicts.add(self.last_grad_stats)
        scale = self.scaler.scale(torch.tensor(1.0 / t.accumulate, device=self.device))
        params = self.last_shared if t.balancing == "gradnorm" else self.shared_params
        info = self.balancer.backward(totals, params, scale)
        self.head_terms = {h: list(terms) for h, terms in raw.items()}  # head -> its loss terms
        flat = {k: v.item() for terms in raw.values() for k, v in terms.items()}
        flat.update({f"head_loss/{h}": sum(v.item() for v in terms.values())
                     for h, terms in raw.items()})
        flat.update(info)
        return flat

    def _optimizer_step(self) -> None:
        if self.world > 1:  # learned balancing parameters live outside DDP
            for p in self.balancer.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            for group in self.clip_groups:  # own terms' parameters apart: they change nothing else
                torch.nn.utils.clip_grad_norm_(group, self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.state.step += 1

    def _log_step(self, avg: dict[str, float], ips: float, bar: tqdm) -> None:
        s = self.state
        record = {"step": s.step, "epoch": s.epoch, "lr": self.optimizer.param_groups[0]["lr"],
                  **{k: round(v, 5) for k, v in avg.items() if not k.startswith("head_loss/")},
                  "head_loss": {k.removeprefix("head_loss/"): round(v, 5) for k, v in avg.items()
                                if k.startswith("head_loss/")},
                  "images_per_s": round(ips, 2)}
        record["balance_weights"] = self.balancer.effective_weights()
        if self.last_grad_stats is not None:
            record.update(self.last_grad_stats)  # grad_norm, grad_cosine
            self.last_grad_stats = None
        self.logger.step(record, self.total_steps, bar, self.head_terms)

    # ------------------------------------------------------------------ evaluation
    def eval_model(self) -> MultiHeadDetector:
        return self.ema.module if self.ema is not None else self.model

    def evaluate_and_save(self) -> dict:
        if self.rank != 0 or self.val_ds is None:
            return {}
        loader = build_loader(self.val_ds, self.cfg.train.batch_size,
                              EpochSampler(len(self.val_ds), False), self.cfg.data.workers,
                              self.cfg.data.size_divisor)
        skipped: list[str] = []
        metrics, _ = evaluate_model(self.eval_model(), loader, self.val_ds.ann.gt, self.categories,
                                    self.cfg.postprocess, self.device, self.cfg.train.eval_backend,
                                    skipped=skipped, progress=self.show_progress, heads=self.heads)
        for line in skipped:  # their objects count as missed
            tqdm.write(f"warning: data.val: unreadable image left out of the evaluation: {line}")
        self.logger.log({"step": self.state.step, "epoch": self.state.epoch, "eval": metrics})
        if self.logger.trackers:
            self.logger.images("val", drawn_predictions(
                self.eval_model(), self.val_ds, self.cfg.postprocess, self.device,
                self.cfg.data.size_divisor, self.kmeta.skeleton if self.kmeta else ()),
                self.state.step)
        self.model.train()
        if not self.quiet:
            tqdm.write(format_table(metrics))
            sys.stdout.flush()  # a log file sees the table when it is printed
        value = metric_value(metrics, self.cfg.train.best_metric)
        if value is not None and value > self.state.best:
            self.state.best = value
            self.save("best.pt")
        return metrics
