"""Where a training run's numbers go besides ``RUN/metrics.jsonl``: TensorBoard and MLflow.

Both are optional extras (``pip install -e '.[tensorboard]'``, ``'.[mlflow]'``), chosen by
``train.tracking``; TensorBoard is in the default and used when installed. A tracker receives
every record the trainer logs (losses per head and per term, balancing weights, gradient
diagnostics, lr, images/s, each head's metrics at each evaluation), validation images with
predictions drawn, the resolved config (MLflow: as parameters) and the run's final files (MLflow:
``best.pt``, ``metrics.json`` as artifacts).

Tracking never stops or corrupts a training run: the first failure of a tracker (an unreachable
URI, a full disk) is one warning on stderr, and that tracker is off for the rest of the run.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Record = dict[str, Any]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with ``/``-joined keys (``eval/bbox/AP``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def scalars(record: Record) -> dict[str, float]:
    """The record's numbers (not ``step``), flattened: what is plotted."""
    return {k: float(v) for k, v in flatten(record).items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
            and np.isfinite(v)}


class Tracker:
    """One destination; every call is guarded: its first failure warns once and turns it off."""

    name = ""

    def __init__(self) -> None:
        self.active = True

    def _guard(self, what: str, call: Callable[[], None]) -> None:
        if not self.active:
            return
        try:
            call()
        except Exception as e:  # a tracker's own failures are of many types; none may stop training
            self.active = False
            print(f"warning: {self.name} tracking stopped ({what}: {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:160] if str(e) else ''}); training goes on without "
                  "it", file=sys.stderr, flush=True)

    def start(self, params: dict[str, Any]) -> None:
        pass

    def log(self, record: Record) -> None:
        pass

    def images(self, tag: str, images: list[np.ndarray], step: int) -> None:
        pass

    def finish(self, files: list[Path]) -> None:
        pass


class TensorBoardTracker(Tracker):
    """Event files under ``RUN/tb`` (``tensorboard --logdir RUN/tb``)."""

    name = "TensorBoard"

    def __init__(self, out_dir: Path) -> None:
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(out_dir / "tb"))

    def log(self, record: Record) -> None:
        def write() -> None:
            for key, value in scalars(record).items():
                self.writer.add_scalar(key, value, record.get("step", 0))
            self.writer.flush()
        self._guard("writing scalars", write)

    def images(self, tag: str, images: list[np.ndarray], step: int) -> None:
        def write() -> None:
            for i, img in enumerate(images):  # BGR [H, W, 3] uint8
                self.writer.add_image(f"{tag}/{i}", img[..., ::-1].copy(), step, dataformats="HWC")
            self.writer.flush()
        self._guard("writing images", write)

    def finish(self, files: list[Path]) -> None:
        self._guard("closing", self.writer.close)


class MlflowTracker(Tracker):
    """An MLflow run: the resolved config as parameters, every record's numbers as metrics by
    step, images and the final files as artifacts. Without ``uri`` a local SQLite store,
    ``RUN/mlflow.db``, with artifacts under ``RUN/mlruns`` (``mlflow ui --backend-store-uri
    sqlite:///RUN/mlflow.db``): no server, no network."""

    name = "MLflow"

    def __init__(self, out_dir: Path, uri: str | None, experiment: str = "detect") -> None:
        super().__init__()
        import mlflow
        for name in ("mlflow", "alembic"):  # their INFO lines (creating the store's tables)
            logging.getLogger(name).setLevel(logging.WARNING)
        self.mlflow, self.out = mlflow, out_dir
        self.uri = uri or f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"
        self.experiment, self.run_id = experiment, None
        self.artifacts = None if uri else (out_dir / "mlruns").resolve().as_uri()

    def start(self, params: dict[str, Any]) -> None:
        def begin() -> None:
            client = self.mlflow.MlflowClient(self.uri)
            exp = client.get_experiment_by_name(self.experiment)
            exp_id = (exp.experiment_id if exp is not None else
                      client.create_experiment(self.experiment, artifact_location=self.artifacts))
            self.client = client
            self.run_id = client.create_run(exp_id, run_name=self.out.name).info.run_id
            items = [self.mlflow.entities.Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
            for i in range(0, len(items), 100):  # the store's batch limit
                client.log_batch(self.run_id, params=items[i:i + 100])
        self._guard(f"opening {self.uri}", begin)

    def log(self, record: Record) -> None:
        if self.run_id is None:
            return
        step = int(record.get("step", 0))

        def write() -> None:
            now = int(time.time() * 1000)
            metrics = [self.mlflow.entities.Metric(k.replace("/", "."), v, now, step)
                       for k, v in scalars(record).items()]
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
        self._guard("logging metrics", write)

    def images(self, tag: str, images: list[np.ndarray], step: int) -> None:
        if self.run_id is None:
            return

        def write() -> None:
            for i, img in enumerate(images):
                self.client.log_image(self.run_id, img[..., ::-1].copy(),
                                      f"{tag}/step{step:06d}_{i}.png")
        self._guard("logging images", write)

    def finish(self, files: list[Path]) -> None:
        if self.run_id is None:
            return

        def end() -> None:
            for path in files:
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
            self.client.set_terminated(self.run_id)
        self._guard("logging artifacts", end)


def build_trackers(kinds: tuple[str, ...], out_dir: Path, uri: str | None) -> list[Tracker]:
    """``train.tracking`` -> trackers. TensorBoard is skipped when not installed (it is in the
    default list); MLflow, asked for, must be installed (a `RuntimeError` says how)."""
    trackers: list[Tracker] = []
    for kind in kinds:
        match kind:
            case "tensorboard":
                try:
                    trackers.append(TensorBoardTracker(out_dir))
                except ImportError:  # not installed: JSON lines only
                    pass
            case "mlflow":
                try:
                    trackers.append(MlflowTracker(out_dir, uri))
                except ImportError:
                    raise RuntimeError("train.tracking: mlflow is not installed: "
                                       "pip install -e '.[mlflow]'") from None
    return trackers
