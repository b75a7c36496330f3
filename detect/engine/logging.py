"""``RUN/metrics.jsonl`` (one JSON object per line), the trackers (`detect.engine.tracking`) and
the plain progress line a log file gets instead of a progress bar (`step_line`)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from detect.engine.tracking import Tracker


class MetricsLogger:
    """Appends every record to ``metrics.jsonl`` and hands it to the trackers; a no-op when not
    ``enabled`` (ranks other than 0)."""

    def __init__(self, out_dir: Path, enabled: bool = True, trackers: list[Tracker] | None = None
                 ) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.trackers = trackers or []
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        for t in self.trackers:
            t.log(record)


def clock(seconds: float) -> str:
    """Seconds as ``H:MM:SS`` (``M:SS`` under an hour)."""
    s = int(round(max(seconds, 0.0)))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def step_line(record: dict[str, Any], total_steps: int, elapsed: float, eta: float | None,
              weights: bool) -> str:
    """One plain line of a training record: step / total, epoch, the total loss and each
    head's (``head_loss``), the balancing weights (``weights``: when they move), lr, images/s,
    elapsed and ETA."""
    parts = [f"step {record['step']}/{total_steps}", f"epoch {record['epoch']}"]
    heads = record.get("head_loss", {})
    loss = f"loss {record['loss']:.4f}" if "loss" in record else "loss -"
    if heads:
        loss += " (" + " ".join(f"{h} {v:.4f}" for h, v in heads.items()) + ")"
    parts.append(loss)
    if weights and record.get("balance_weights"):
        parts.append("weights " + " ".join(f"{h} {v:.3g}" for h, v in record["balance_weights"].items()))
    parts += [f"lr {record['lr']:.3g}", f"{record['images_per_s']:.1f} img/s",
              f"elapsed {clock(elapsed)}", f"eta {clock(eta) if eta is not None else '-'}"]
    return "  ".join(parts)


class RunLog:
    """What a training run reports as it goes, on rank 0: every record to `MetricsLogger`, and
    per optimiser-step record one plain line on stderr (`step_line`) when no progress bar is shown
    (a log file, ``--no-progress``), or the same values on the bar; ``quiet``: neither."""

    def __init__(self, out_dir: Path, enabled: bool, trackers: list[Tracker], quiet: bool,
                 bar_shown: bool, weights_move: bool) -> None:
        self.metrics = MetricsLogger(out_dir, enabled, trackers)
        self.trackers = trackers if enabled else []
        self.lines = enabled and not quiet and not bar_shown
        self.weights_move = weights_move
        self.t0, self.first_step = time.perf_counter(), 0
        self.terms_logged = False

    def say(self, line: str) -> None:
        """A line on stderr where the run prints lines (rank 0, not quiet, no bar)."""
        if self.lines:
            print(line, file=sys.stderr, flush=True)

    def start(self, params: dict[str, Any], step: int) -> None:
        self.t0, self.first_step = time.perf_counter(), step
        for t in self.trackers:
            t.start(params)

    def log(self, record: dict[str, Any]) -> None:
        self.metrics.log(record)

    def step(self, record: dict[str, Any], total_steps: int, bar: Any,
             head_terms: dict[str, list[str]]) -> None:
        """An optimiser step's record: logged (the first with ``head_terms``, which head each
        loss term belongs to), and shown as a line or on the bar."""
        if not self.terms_logged:
            record, self.terms_logged = {**record, "head_terms": head_terms}, True
        self.metrics.log(record)
        elapsed = time.perf_counter() - self.t0
        done = record["step"] - self.first_step
        eta = elapsed / done * (total_steps - record["step"]) if done > 0 else None
        self.say(step_line(record, total_steps, elapsed, eta, self.weights_move))
        heads = record.get("head_loss", {})
        bar.set_postfix({"loss": f"{record.get('loss', float('nan')):.3f}",
                         **{h: f"{v:.3f}" for h, v in heads.items()},
                         "lr": f"{record['lr']:.2g}", "img/s": f"{record['images_per_s']:.1f}"},
                        refresh=False)

    def images(self, tag: str, images: list, step: int) -> None:
        for t in self.trackers:
            t.images(tag, images, step)

    def finish(self, files: list[Path]) -> None:
        for t in self.trackers:
            t.finish(files)
