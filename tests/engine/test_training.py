"""The training loop end to end: checkpoints, resume, metrics.jsonl, non-finite losses."""
import json

import pytest
import torch

from detect.config import load_config
from detect.engine.checkpoint import load_checkpoint
from detect.engine.trainer import Trainer, TrainingError



def make_trainer(overrides, out, *extra, resume=None):
    cfg = load_config("configs/demo.yaml", overrides + list(extra))
    return Trainer(cfg, out, resume=resume, device="cpu", show_progress=False)


def test_train_writes_checkpoints_config_and_metrics(tiny_overrides, tmp_path):
    t = make_trainer(tiny_overrides, tmp_path, "train.max_steps=3", "train.batch_size=4")
    metrics = t.train()
    assert {"bbox", "keypoints", "box_class_agnostic", "classification"} <= set(metrics)
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl"):
        assert (tmp_path / name).is_file(), name
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "eval" not in x]
    assert [x["step"] for x in steps] == [1, 2, 3]
    assert {"lr", "loss_cls", "loss_box", "loss_kpt", "loss_kpt_vis", "images_per_s"} <= set(steps[0])
    assert "bbox" in lines[-1]["eval"]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 3 and ckpt["categories"]["ids"] == [1, 3, 7, 10]
    assert ckpt["keypoints"]["names"][0] == "head" and len(ckpt["keypoints"]["sigmas"]) == 13
    assert ckpt["keypoints"]["flip_pairs"][0] == [1, 2]


def test_resume_restores_the_saved_state(tiny_overrides, tmp_path):
    t = make_trainer(tiny_overrides, tmp_path, "train.max_steps=2", "train.batch_size=4",
                     "train.eval_every=0")
    t.train()
    saved = load_checkpoint(tmp_path / "last.pt")
    r = make_trainer(tiny_overrides, tmp_path / "r", "train.max_steps=4", "train.batch_size=4",
                     "train.eval_every=0", resume=tmp_path / "last.pt")
    state = r.checkpoint_state()
    assert state["step"] == saved["step"] == 2
    assert state["batch_in_epoch"] == saved["batch_in_epoch"]
    for k, v in saved["model"].items():
        assert torch.equal(state["model"][k], v), k
    for k, v in saved["ema"]["module"].items():
        assert torch.equal(state["ema"]["module"][k], v), k
    assert state["ema"]["updates"] == saved["ema"]["updates"]
    assert state["scheduler"] == saved["scheduler"]
    opt_a, opt_b = state["optimizer"]["state"], saved["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for i in opt_a:
        assert torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"])
    assert torch.equal(state["rng"]["torch"], saved["rng"]["torch"])
    assert torch.equal(state["rng"]["numpy_keys"], saved["rng"]["numpy_keys"])


def test_resume_continues_exactly(tiny_overrides, tmp_path):
    """Training 4 steps straight equals 2 steps, stop, resume for 2 more (losses and weights)."""
    common = ["train.batch_size=2", "train.eval_every=0", "train.deterministic=true",
              "data.color_jitter=0.0"]
    straight = make_trainer(tiny_overrides, tmp_path / "a", "train.max_steps=4", *common)
    straight.train()
    first = make_trainer(tiny_overrides, tmp_path / "b", "train.max_steps=4", *common)
    assert first.train(stop_at=2) == {}
    assert load_checkpoint(tmp_path / "b/last.pt")["step"] == 2
    second = make_trainer(tiny_overrides, tmp_path / "b", "train.max_steps=4", *common,
                          resume=tmp_path / "b" / "last.pt")
    second.train()
    a = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    la = [x["loss"] for x in a if "loss" in x]
    lb = [x["loss"] for x in b if "loss" in x]
    assert la == lb
    wa = load_checkpoint(tmp_path / "a/last.pt")["model"]
    wb = load_checkpoint(tmp_path / "b/last.pt")["model"]
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == []


def test_non_finite_loss_stops_with_one_line(tiny_overrides, tmp_path):
    t = make_trainer(tiny_overrides, tmp_path, "train.max_steps=2", "train.batch_size=2",
                     "train.eval_every=0")
    with torch.no_grad():
        t.model.heads["box"].predictor.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"non-finite loss at step 1: head 'box'"):
        t.train()


def test_resume_with_other_classes_is_an_error(tiny_overrides, tmp_path):
    t = make_trainer(tiny_overrides, tmp_path, "train.max_steps=1", "train.batch_size=2",
                     "train.eval_every=0")
    t.train()
    from detect.tensor_files import CheckpointError
    with pytest.raises(CheckpointError, match="model config differs"):
        make_trainer(tiny_overrides, tmp_path / "x", "train.max_steps=2", "model.neck.channels=16",
                     resume=tmp_path / "last.pt")
