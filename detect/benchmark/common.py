"""What every benchmark suite shares: options, interleaved timing, result rows, table and JSON.

Timing protocol: ours and the peer run in the same process, on the same input and thread count.
Each callable is warmed up, then the callables are timed in turn, ``repeats`` rounds, the order
reversed every other round so that a slow phase of a busy machine hits both sides alike; the
result is the median of each side's times and their ratio. Ratios are what transfer between
machines; absolute times on a shared CPU do not.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from detect.io import atomic_write_text

SHARED_DATA_DEFAULT = "../shared/datasets"


@dataclass(frozen=True)
class Options:
    """Command-line options every suite receives.

    Attributes:
        quick: fewer repeats and smaller inputs, for development and tests (numbers are rougher).
        threads: torch intra-op threads (None: torch's default).
        device: "cpu" or "cuda".
        minutes: training time per model of the ``accuracy`` suite.
        repeats: timed rounds per callable; None for the suite's default.
    """

    quick: bool = False
    threads: int | None = None
    device: str = "cpu"
    minutes: float = 5.0
    repeats: int | None = None

    def rounds(self, full: int, quick: int) -> int:
        return self.repeats if self.repeats is not None else (quick if self.quick else full)


@dataclass
class Row:
    """One line of a suite's table.

    ``ratio`` is defined per row (``ratio_is``, e.g. "peer / ours time": > 1 means ours is
    faster); ``target`` is compared with ``ratio`` using ``target_op``.
    """

    suite: str
    name: str
    ours: float
    peer: float
    unit: str
    ratio: float
    ratio_is: str
    target: float | None = None
    target_op: Literal[">=", "<="] = ">="
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.target_op == ">=" else self.ratio <= self.target


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     device: str = "cpu") -> dict[str, list[float]]:
    """Seconds per call of each callable: ``warmup`` untimed calls each, then ``repeats`` rounds
    calling every callable once, in reversed order every other round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def speed_row(suite: str, name: str, times: dict[str, list[float]], target: float | None = None,
              note: str = "", ours: str = "ours", peer: str = "peer") -> Row:
    """A row of median milliseconds, ratio = peer / ours (> 1: ours is faster)."""
    t_ours, t_peer = median(times[ours]) * 1e3, median(times[peer]) * 1e3
    return Row(suite, name, round(t_ours, 2), round(t_peer, 2), "ms", round(t_peer / t_ours, 3),
               "peer/ours time", target, ">=", note,
               {"ours_ms": [round(t * 1e3, 2) for t in times[ours]],
                "peer_ms": [round(t * 1e3, 2) for t in times[peer]]})


def setup(opts: Options) -> None:
    """Threads and seeds for a suite run."""
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(0)


def shared_data_root() -> Path:
    """The shared real datasets: $DETECT_SHARED_DATA, default ../shared/datasets."""
    return Path(os.environ.get("DETECT_SHARED_DATA", SHARED_DATA_DEFAULT))


def format_table(rows: list[Row]) -> str:
    header = f"{'suite':<12} {'measure':<38} {'ours':>10} {'peer':>10} {'unit':<6} {'ratio':>7}  {'target':<8} met"
    lines = [header, "-" * len(header)]
    for r in rows:
        target = "" if r.target is None else f"{r.target_op}{r.target:g}"
        met = {None: "", True: "yes", False: "NO"}[r.met]
        lines.append(f"{r.suite:<12} {r.name:<38} {r.ours:>10.4g} {r.peer:>10.4g} {r.unit:<6} "
                     f"{r.ratio:>7.3f}  {target:<8} {met}")
        if r.note:
            lines.append(f"{'':<12}   {r.note}")
    return "\n".join(lines)


def environment(opts: Options) -> dict[str, Any]:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "processor": platform.processor(),
            "device": opts.device, "quick": opts.quick}


def _json_safe(value: Any) -> Any:
    """NaN and infinities (an AP ratio over 0) become null: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, suite: str, rows: list[Row], opts: Options) -> None:
    record = {"suite": suite, "environment": environment(opts),
              "rows": [_json_safe({**asdict(r), "met": r.met}) for r in rows]}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
