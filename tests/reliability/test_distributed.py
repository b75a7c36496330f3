"""Distributed training: two gloo processes on the CPU under torchrun.

The DDP gradient is the mean of the ranks' gradients. The losses are normalised by the number of
positives summed over the ranks (detect/distributed.py), so it equals the single-process gradient
of the global batch (rank r takes the sampler's indices r, r + 2, ...: the first batches of the
two ranks together are the single-process first batch of twice the size). The tiny model has
GroupNorm heads and frozen BatchNorm, which do not mix images.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detect.config import load_config
from detect.data.collate import Collate
from detect.engine.checkpoint import load_checkpoint
from detect.engine.trainer import Trainer
from reliability_helpers import default_objects, overrides, write_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/demo.yaml")


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def ddp_overrides(tiny_model, tmp_path_factory) -> list[str]:
    """Six images with objects and two without; batches of 2 per rank, 2 steps."""
    objects = [default_objects(i) for i in range(6)] + [[], []]
    data = write_dataset(tmp_path_factory.mktemp("ddp"), objects)
    # fixed weights: the reference gradient comes from a fresh single-process trainer, and
    # loss_norm's weights (the demo's setting) depend on the losses of earlier steps
    return overrides(tiny_model, data, "train.max_steps=2", "train.batch_size=2",
                     "data.workers=0", "train.balancing=fixed")


def single_process_gradients(ddp_overrides, image_ids, out) -> tuple[dict, bool]:
    """Gradients of one backward pass of a 1-process Trainer on the given global batch, and
    whether that batch is the first of its loader."""
    cfg = load_config(CONFIG, ddp_overrides + [f"train.batch_size={len(image_ids)}"])
    t = Trainer(cfg, out, device="cpu", show_progress=False)
    first = next(iter(t.loader))
    if sorted(x.image_id for x in first.targets) == sorted(image_ids):
        batch = first  # the ranks' first batches make up the single-process first batch
    else:
        index = {rec.id: i for i, rec in enumerate(t.train_ds.ann.images)}
        batch = Collate(cfg.data.size_divisor)([t.train_ds[index[i]] for i in image_ids])
    t.model.train()
    t._forward_backward(t.model, batch)
    grads = {n: p.grad for n, p in t.model.named_parameters() if p.grad is not None}
    return grads, batch is first


def assert_same_gradients(ddp: dict, ref: dict) -> None:
    """Equal up to float32 rounding: within 1e-5 of each tensor's largest value. (The same
    global batch in another order already differs by ~2e-6 in one process; normalising by each
    rank's own number of positives differs by 0.6 to 5 here.)"""
    assert ddp.keys() == ref.keys()
    worst = max(((ddp[k] - ref[k]).abs().max().item() / ref[k].abs().max().item(), k) for k in ref)
    assert worst[0] <= 1e-5, f"relative difference {worst[0]:.3g} in {worst[1]}"


def test_torchrun_training_on_two_cpu_processes(ddp_overrides, tmp_path):
    """tools/train.py trains; both ranks end with the same weights; one step's DDP gradient is
    the single-process gradient of the global batch, also when one rank has no object; a batch
    that one rank could not read at all is left out by every rank (no hang), and rank 0 lists
    the other rank's unreadable image."""
    r = torchrun(str(Path(__file__).with_name("ddp_probe.py")), str(tmp_path), CONFIG,
                 *ddp_overrides)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(tmp_path / f"exit_rank{i}").read_text() for i in (0, 1)] == ["0", "0"]
    assert [(tmp_path / f"skip_rank{i}").read_text() for i in (0, 1)] == ["1 2", "1 2"]
    assert (tmp_path / "report_rank0").read_text().splitlines() == [
        "skipped 1 unreadable image(s) (1 time(s) in all):", "  bad.jpg: truncated JPEG"]
    assert (tmp_path / "report_rank1").read_text() == ""
    # the log lines (no bar): from rank 0 only, once per step: the probe's skipped-batch step,
    # then tools/train.py's two (rank 1 printing too would double each)
    lines = [x for x in r.stderr.splitlines() if re.search(r"step \d/2  epoch", x)]
    assert [re.search(r"step (\d)/2", x).group(1) for x in lines] == ["1", "1", "2"], lines
    assert load_checkpoint(tmp_path / "run/last.pt")["step"] == 2
    w0, w1 = (torch.load(tmp_path / f"weights_rank{i}.pt") for i in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    for name in ("grad_loader", "grad_split"):
        rank0, rank1 = (torch.load(tmp_path / f"{name}_rank{i}.pt") for i in (0, 1))
        for k, g in rank0["grads"].items():  # DDP averaged them: the same on every rank
            assert torch.equal(g, rank1["grads"][k]), (name, k)
        ids = rank0["image_ids"] + rank1["image_ids"]
        assert len(set(ids)) == 4, ids
        ref, first = single_process_gradients(ddp_overrides, ids, tmp_path / f"ref_{name}")
        assert first == (name == "grad_loader")
        assert_same_gradients(rank0["grads"], ref)
