"""Run under torchrun by test_distributed.py. On every rank, under OUT:

* ``grad_loader_rank{r}.pt``: gradients after one backward pass on the rank's first loader batch
  (a Trainer built from CONFIG);
* ``grad_split_rank{r}.pt``: the same when rank 0's batch holds images with objects and every other
  rank's batch only images without any (this must not hang);
* ``skip_rank{r}``: "step batch_in_epoch" after an epoch whose first batch rank 1 could not
  read (both ranks must leave it out: "1 2"), and ``report_rank{r}``: what the rank printed
  about unreadable images then (rank 0 lists rank 1's);
* then tools/train.py runs with the same arguments (``--out OUT/run``) and, through a hook on
  `Trainer.train`, writes ``weights_rank{r}.pt`` (the weights at the end) and ``exit_rank{r}``
  (its exit status).

The gradient files also hold the image ids of the batch, so the test can rebuild the global batch.

    python -m torch.distributed.run --standalone --nproc_per_node 2
        ddp_probe.py OUT CONFIG [key=value ...]
"""
import contextlib
import io
import runpy
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from detect.config import load_config
from detect.data.collate import Collate
from detect.engine.trainer import Trainer
from detect.structures import Batch

TRAIN_CLI = Path(__file__).resolve().parents[2] / "tools/train.py"


def gradients(t: Trainer, batch) -> dict:
    t._forward_backward(t.ddp, batch)
    grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
    t.optimizer.zero_grad(set_to_none=True)
    return {"grads": grads, "image_ids": [x.image_id for x in batch.targets]}


def skip_together(t: Trainer, batch) -> None:
    """One epoch of two batches, where rank 1 could read no image of its first batch: every rank
    must leave that batch out (and count it consumed), then train one step on the second."""
    unreadable = Batch(batch.images[:0], [], [], ["bad.jpg: truncated JPEG"])
    t.loader = [unreadable if t.rank == 1 else batch, batch]
    t.end_step = 1
    t._train_epoch(tqdm(disable=True))


def main() -> None:
    out, config, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    t = Trainer(load_config(config, overrides), out, device="cpu", show_progress=False)
    assert t.ddp is not None and t.world == 2
    r = t.rank
    t.ddp.train()
    torch.save(gradients(t, next(iter(t.loader))), out / f"grad_loader_rank{r}.pt")
    records = t.train_ds.ann.images
    with_objects = [i for i, rec in enumerate(records) if len(rec.labels)]
    without = [i for i, rec in enumerate(records) if not len(rec.labels)]
    mine = with_objects[:2] if r == 0 else without[:2]
    batch = Collate(t.cfg.data.size_divisor)([t.train_ds[i] for i in mine])
    torch.save(gradients(t, batch), out / f"grad_split_rank{r}.pt")
    skip_together(t, batch)
    (out / f"skip_rank{r}").write_text(f"{t.state.step} {t.state.batch_in_epoch}")
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        t._report_skipped()
    (out / f"report_rank{r}").write_text(report.getvalue())
    del t
    train = Trainer.train

    def train_and_save_weights(self: Trainer, stop_at: int | None = None) -> dict:
        metrics = train(self, stop_at)
        torch.save(self.model.state_dict(), out / f"weights_rank{r}.pt")
        return metrics
    Trainer.train = train_and_save_weights
    sys.argv = [str(TRAIN_CLI), "--config", config, "--out", str(out / "run"), "--no-progress",
                *overrides]
    try:
        runpy.run_path(str(TRAIN_CLI), run_name="__main__")
        status = 0
    except SystemExit as e:
        status = e.code
    (out / f"exit_rank{r}").write_text(str(status))


if __name__ == "__main__":
    main()
