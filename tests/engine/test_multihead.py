"""Per-head control in training: --init-from, train.heads, train.freeze, balancing, diagnostics."""
import json

import numpy as np
import pytest
import torch

from detect import Detector
from detect.config import ConfigError, load_config
from detect.engine import trainer as trainer_module
from detect.engine.checkpoint import load_checkpoint
from detect.engine.init_from import init_from_checkpoint
from detect.engine.trainer import Trainer, TrainingError
from detect.models.build import build_model
from detect.tensor_files import CheckpointError

BOX_ONLY = ["train.heads=[cls,box]"]  # the keypoint config stays: the head is simply not built


def trainer(overrides, out, *extra, **kw):
    cfg = load_config("configs/demo.yaml", overrides + ["train.batch_size=2", "train.eval_every=0",
                                                        *extra])
    return Trainer(cfg, out, device="cpu", show_progress=False, **kw)


def test_init_from_loads_present_heads_and_reports_the_rest(tiny_overrides, tmp_path, capsys):
    trainer(tiny_overrides, tmp_path / "box", "train.max_steps=1", *BOX_ONLY).train()
    src = load_checkpoint(tmp_path / "box/last.pt")["ema"]["module"]
    t = trainer(tiny_overrides, tmp_path / "kpt", "train.max_steps=1",
                init_from=tmp_path / "box/last.pt")
    out = capsys.readouterr().out
    assert "heads.keypoints" in out and "initialised" in out
    state = t.model.state_dict()
    loaded = [k for k in state if k in src]
    assert loaded and all(torch.equal(state[k], src[k]) for k in loaded)
    assert any(k.startswith("heads.keypoints") for k in state)
    assert not any(k.startswith("heads.keypoints") for k in src)


def test_init_report_parts(tiny_overrides, tmp_path):
    cfg = load_config("configs/demo.yaml", tiny_overrides)
    model = build_model(cfg.model, 4, 13)
    path_model = model.state_dict()
    torch.save({"model": {k: v for k, v in path_model.items() if not k.startswith("heads.box")}},
               tmp_path / "init.pt")
    fresh = build_model(cfg.model, 4, 13)
    report = init_from_checkpoint(fresh, tmp_path / "init.pt")
    parts = report.parts(report.loaded + report.initialised)
    assert parts["heads.box"] == "initialised" and parts["backbone"] == "loaded"
    assert parts["heads.keypoints"] == "loaded"


def test_train_heads_selects_trained_and_evaluated_heads(tiny_overrides, tmp_path):
    t = trainer(tiny_overrides, tmp_path, "train.max_steps=2", *BOX_ONLY)
    assert set(t.model.heads) == {"cls", "box"}  # a box-only model carries no keypoint head
    metrics = t.train()
    assert "keypoints" not in metrics and "bbox" in metrics
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "loss_kpt" not in lines[0] and "loss_box" in lines[0]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert "keypoints" not in ckpt and not any(k.startswith("heads.keypoints") for k in ckpt["model"])
    det = Detector.from_checkpoint(tmp_path / "last.pt")
    pred = det.predict(np.zeros((64, 80, 3), np.uint8))
    assert "keypoints" not in pred.fields


def test_freeze_parts(tiny_overrides, tmp_path):
    t = trainer(tiny_overrides, tmp_path, "train.max_steps=1", "train.freeze=[backbone,box]")
    assert not any(p.requires_grad for p in t.model.backbone.parameters())
    assert not any(p.requires_grad for p in t.model.heads["box"].parameters())
    assert all(p.requires_grad for p in t.model.heads["cls"].parameters())
    before = {k: v.clone() for k, v in t.model.backbone.state_dict().items()}
    t.train()
    assert all(torch.equal(before[k], v) for k, v in t.model.backbone.state_dict().items())


def _by_hand(totals: dict[str, torch.Tensor], params: list[torch.Tensor]) -> dict:
    """Each head's gradient on ``params`` with torch.autograd.grad: norms and pairwise cosines
    (0 with a head that has no gradient, e.g. keypoints on a batch without persons), in float32
    as the trainer computes them (over the ~1.1e7 shared parameters of the tiny model a float32
    norm is ~1e-3 from the float64 one)."""
    grads = {}
    for head, loss in totals.items():
        g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        grads[head] = torch.cat([(torch.zeros_like(p) if d is None else d).flatten()
                                 for p, d in zip(params, g)])
    norms = {h: float(g.norm()) for h, g in grads.items()}
    heads = list(grads)
    return {"grad_norm": norms,
            "grad_cosine": {f"{a}|{b}": float(grads[a] @ grads[b]) / (norms[a] * norms[b])
                            if norms[a] * norms[b] > 0 else 0.0
                            for i, a in enumerate(heads) for b in heads[i + 1:]}}


def test_diagnostics_and_balancing_are_logged(tiny_overrides, tmp_path, monkeypatch):
    # three heads, as the hand computation's tolerance was set for (a mask head's gradient adds
    # rounding of its own)
    t = trainer(tiny_overrides, tmp_path, "train.max_steps=2", "train.balancing=uncertainty",
                "train.grad_diagnostics_every=1", "train.heads=[cls,box,keypoints]")
    expected = []  # per step, the diagnostics computed by hand on the trainer's losses
    real = trainer_module.head_gradient_stats

    def recording(totals, shared_params):
        expected.append(_by_hand(totals, shared_params))
        return real(totals, shared_params)

    monkeypatch.setattr(trainer_module, "head_gradient_stats", recording)
    shared = {id(p) for p in t.shared_params}  # the backbone and the neck, no head's own layers
    assert {id(p) for p in [*t.model.backbone.parameters(), *t.model.neck.parameters()]} <= shared
    assert not shared & {id(p) for p in t.model.heads["box"].parameters()}
    t.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss_cls" in x]
    assert set(steps[0]["balance_weights"]) == {"cls", "box", "keypoints"}
    assert set(steps[0]["grad_norm"]) == {"cls", "box", "keypoints"}
    assert set(steps[0]["grad_cosine"]) == {"cls|box", "cls|keypoints", "box|keypoints"}
    assert len(expected) == len(steps) == 2  # grad_diagnostics_every=1, log_every=1
    for step, hand in zip(steps, expected):  # summed in another order: ~1e-6 apart
        assert step["grad_norm"] == pytest.approx(hand["grad_norm"], rel=1e-5)
        assert step["grad_cosine"] == pytest.approx(hand["grad_cosine"], abs=1e-5)
    summary = [x for x in lines if "grad_conflict_summary" in x]
    assert summary and summary[0]["grad_conflict_summary"]["pairs"]["cls|box"]["samples"] == 2


def test_a_loss_term_balanced_apart_is_a_group_of_its_own(tiny_overrides, tmp_path):
    t = trainer(tiny_overrides, tmp_path / "a", "train.max_steps=1", "train.balancing=loss_norm",
                "train.balance_apart=[loss_kpt_vis]", "train.grad_diagnostics_every=1",
                "train.log_every=1")
    t.train()
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    step = next(x for x in lines if "loss_cls" in x)
    assert set(step["balance_weights"]) == {"cls", "box", "keypoints", "masks", "loss_kpt_vis"}
    assert set(step["grad_norm"]) == {"cls", "box", "keypoints", "masks", "loss_kpt_vis"}
    assert "loss_kpt_vis" in step and "loss_kpt" in step  # every term still logged
    bad = trainer(tiny_overrides, tmp_path / "b", "train.max_steps=1",
                  "train.balance_apart=[loss_kpt_elbow]")
    with pytest.raises(TrainingError, match="no trained head returns loss_kpt_elbow"):
        bad.train()
    with pytest.raises(ConfigError, match="'keypoints' is not a loss term"):
        trainer(tiny_overrides, tmp_path / "c", "train.balance_apart=[keypoints]")
    with pytest.raises(ConfigError, match="named twice"):
        trainer(tiny_overrides, tmp_path / "c", "train.balance_apart=[loss_kpt,loss_kpt]")
    box_only = trainer(tiny_overrides, tmp_path / "d", "train.max_steps=1",
                       "train.heads=[cls,box]", "train.balance_apart=[loss_box]")
    with pytest.raises(TrainingError, match="leaves head.s. box without a loss term"):
        box_only.train()
    again = tmp_path / "a" / "last.pt"
    with pytest.raises(CheckpointError, match="balance_apart"):
        trainer(tiny_overrides, tmp_path / "e", "train.max_steps=2", resume=again)
