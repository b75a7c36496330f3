"""Following a training run: plain lines in a log file, TensorBoard event files, an MLflow store.

Each check reads back what a reader would: stderr as a log file gets it, TensorBoard's own event
reader, MLflow's own client on the local store.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from detect.config import load_config
from detect.engine.trainer import Trainer

LINE = re.compile(r"^step (\d+)/6  epoch \d+  loss [\d.]+ \(cls [\d.]+ box [\d.]+ keypoints [\d.]+ "
                  r"masks [\d.]+\)  weights cls [\d.e+-]+ box [\d.e+-]+ keypoints [\d.e+-]+ "
                  r"masks [\d.e+-]+  lr [\d.e+-]+"
                  r"  [\d.]+ img/s  elapsed \d+:\d\d  eta (\d+:\d\d|-)$")


def train(tiny_overrides, out: Path, *extra: str, quiet: bool = False,
          resume: Path | None = None) -> Trainer:
    cfg = load_config("configs/demo.yaml", tiny_overrides + [
        "train.max_steps=6", "train.batch_size=4", "train.log_every=2", "train.eval_every=0",
        *extra])
    t = Trainer(cfg, out, device="cpu", show_progress=False, quiet=quiet, resume=resume)
    t.train()
    return t


def test_a_log_file_gets_a_line_every_log_every_steps(tiny_overrides, tmp_path, capsys) -> None:
    train(tiny_overrides, tmp_path / "run", "train.tracking=[]")
    err = capsys.readouterr().err.splitlines()
    steps = [m.group(1) for line in err if (m := LINE.match(line))]
    assert steps == ["2", "4", "6"], err
    assert err[-1] == "finished: 6 steps"
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "head_loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 6]
    heads = logged[0]["head_loss"]
    terms = {k: v for k, v in logged[0].items() if k.startswith("loss_")}
    assert heads["box"] == pytest.approx(terms["loss_box"], abs=1e-4)  # a head: its terms' sum
    assert heads["keypoints"] == pytest.approx(sum(v for k, v in terms.items()
                                                   if k.startswith("loss_kpt")), abs=1e-3)
    assert f"keypoints {heads['keypoints']:.4f}" in next(x for x in err if x.startswith("step 2/"))
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["bbox"]["AP"] == records[-1]["eval"]["bbox"]["AP"]  # the final evaluation


def test_quiet_prints_no_line_and_a_resume_says_where(tiny_overrides, tmp_path, capsys) -> None:
    train(tiny_overrides, tmp_path / "a", "train.tracking=[]", "train.max_steps=2", quiet=True)
    assert capsys.readouterr().err == ""
    train(tiny_overrides, tmp_path / "b", "train.tracking=[]", resume=tmp_path / "a/last.pt")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"resuming {tmp_path / 'a/last.pt'} at step 2 of 6 (epoch 0)"
    assert [m.group(1) for line in err if (m := LINE.match(line))] == ["4", "6"]


def test_tensorboard_event_files_hold_the_scalars_and_images(tiny_overrides, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = train(tiny_overrides, tmp_path / "run", "train.tracking=[tensorboard]", quiet=True)
    events = EventAccumulator(str(tmp_path / "run/tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss_cls", "loss_kpt", "head_loss/box", "balance_weights/keypoints", "lr",
            "images_per_s", "eval/bbox/AP", "eval/keypoints/AP"} <= scalars
    assert [e.step for e in events.Scalars("head_loss/cls")] == [2, 4, 6]
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert events.Scalars("lr")[0].value == pytest.approx(records[0]["lr"])
    images = events.Tags()["images"]
    assert images and all(tag.startswith("val/") for tag in images)
    image = events.Images(images[0])[0]
    assert image.step == 6 and (image.width, image.height) == (128, 128)
    assert t.logger.trackers[0].active


def test_mlflow_local_store_holds_the_run(tiny_overrides, tmp_path) -> None:
    from mlflow import MlflowClient

    train(tiny_overrides, tmp_path / "run", "train.tracking=[mlflow]", quiet=True)
    client = MlflowClient(f"sqlite:///{tmp_path / 'run/mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("detect").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["train/lr"] == "0.002" and params["train/heads"] == "['cls', 'box', 'keypoints', 'masks']"
    history = client.get_metric_history(run.info.run_id, "head_loss.cls")
    assert [m.step for m in history] == [2, 4, 6]
    assert run.data.metrics["eval.bbox.AP"] >= 0
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best.pt", "metrics.json"} <= files
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "run")


def test_an_unreachable_tracking_uri_warns_once_and_the_run_completes(
        tiny_overrides, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    t = train(tiny_overrides, tmp_path / "run", "train.tracking=[mlflow]",
              "train.tracking_uri=http://127.0.0.1:9", quiet=True)
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: MLflow tracking stopped (opening http://127.0.0.1:9:"), warnings
    assert warnings[0].endswith("training goes on without it")
    assert t.state.step == 6 and (tmp_path / "run/last.pt").is_file()
