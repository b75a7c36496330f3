#!/usr/bin/env python
"""The multi-head experiment behind docs/MULTIHEAD.md.

For each dataset (the synthetic sample set; coco-mini person boxes + keypoints), at an equal
budget of optimiser steps: box-only vs box + keypoints, then every loss-balancing strategy with
gradient diagnostics on. Writes RUN/<dataset>/<variant>/ (a normal training run each) and prints
a markdown table of per-head AP, the gradient-conflict summary, parameters and latency.
``--subsets`` instead trains every subset of the instance heads beside cls and box (the demo
config as it is otherwise) at each of ``--seeds`` and prints each head's AP, mean and range.

    python tools/multihead_experiment.py --out runs/multihead --steps 150 [--datasets synthetic coco-mini]
    python tools/multihead_experiment.py --out runs/subsets --steps 100 --datasets synthetic \
        --subsets --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the trainer come after the arguments are parsed (--help at once)
    import torch

STRATEGIES = ("fixed", "uncertainty", "loss_norm", "gradnorm", "pcgrad")


def dataset_overrides(name: str, shared: Path) -> list[str]:
    if name == "synthetic":
        d = Path("data/synthetic")
        return [f"data.train.images={d / 'train'}", f"data.train.annotations=[{d / 'annotations/train.json'}]",
                f"data.val.images={d / 'val'}", f"data.val.annotations=[{d / 'annotations/val.json'}]"]
    d = shared / "coco-mini"
    # person_keypoints files alone: one category (person) with boxes and 17 keypoints
    return [f"data.train.images={d / 'train2017'}",
            f"data.train.annotations=[{d / 'annotations/person_keypoints_train2017.json'}]",
            f"data.val.images={d / 'val2017'}",
            f"data.val.annotations=[{d / 'annotations/person_keypoints_val2017.json'}]",
            "model.heads.keypoints.num_keypoints=17", "model.heads.keypoints.sigmas=null"]


def variants() -> dict[str, list[str]]:
    out = {"box_only": ["train.heads=[cls,box]", "train.balancing=fixed"]}
    for s in STRATEGIES:
        out[f"box+kpt/{s}"] = [f"train.balancing={s}", "train.grad_diagnostics_every=10",
                               "train.heads=[cls,box,keypoints]"]
    return out


SUBSETS = ("cls,box", "cls,box,keypoints", "cls,box,masks", "cls,box,keypoints,masks")


def subset_variants(seeds: list[int]) -> dict[str, list[str]]:
    """Every subset of the instance heads beside cls and box, at each seed: "heads@seed"."""
    return {f"{heads}@{seed}": [f"train.heads=[{heads}]", f"train.seed={seed}"]
            for heads in SUBSETS for seed in seeds}


def subset_table(results: dict[str, dict]) -> str:
    """Per subset: each head's AP (x100), mean over the seeds with its range, and train min."""
    by_subset: dict[str, list[dict]] = {}
    for name, r in results.items():
        by_subset.setdefault(name.split("@")[0], []).append(r)
    lines = ["| heads | seeds | bbox AP | kpt AP | segm AP | mask mIoU | train min |",
             "|---|---|---|---|---|---|---|"]
    for heads, runs in by_subset.items():
        cells = []
        for row, stat in (("bbox", "AP"), ("keypoints", "AP"), ("segm", "AP"), ("segm", "mIoU")):
            v = [100 * r["metrics"][row][stat] for r in runs if row in r["metrics"]]
            cells.append(f"{sum(v) / len(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-")
        minutes = sum(r["minutes"] for r in runs) / len(runs)
        lines.append(f"| {heads} | {len(runs)} | {' | '.join(cells)} | {minutes:.1f} |")
    return "\n".join(lines)


def latency_ms(model: "torch.nn.Module", size: int, runs: int = 5) -> float:
    """Median forward time of one ``size`` x ``size`` image (network only)."""
    import torch

    from detect.benchmark.common import median, time_interleaved

    x = torch.randint(0, 255, (1, 3, size, size), dtype=torch.uint8)
    model.eval()
    with torch.inference_mode():
        times = time_interleaved({"model": lambda: model(x)}, runs)["model"]
    return 1000 * median(times)


def run_one(data: list[str], extra: list[str], steps: int, out: Path) -> dict:
    from detect.config import load_config
    from detect.engine.trainer import Trainer

    cfg = load_config("configs/demo.yaml", data + [f"train.max_steps={steps}", "train.eval_every=0",
                                                    "train.log_every=10", *extra])
    t = Trainer(cfg, out, device="cpu", show_progress=False)
    start = time.perf_counter()
    metrics = t.train()
    minutes = (time.perf_counter() - start) / 60
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    conflict = next((r["grad_conflict_summary"] for r in rows if "grad_conflict_summary" in r), None)
    params = sum(p.numel() for p in t.model.parameters())
    return {"metrics": metrics, "conflict": conflict, "minutes": minutes, "params": params,
            "latency_ms": latency_ms(t.eval_model(), cfg.data.image_size),
            "weights": next((r["balance_weights"] for r in reversed(rows) if "balance_weights" in r),
                            None)}


def table(results: dict[str, dict]) -> str:
    lines = ["| variant | bbox AP | bbox AP50 | class-agnostic AP | kpt AP | kpt AP50 | cos(cls,box) | "
             "cos(box,kpt) | conflict % (box,kpt) | grad norm cls / box / kpt | final weights | "
             "params (M) | latency (ms) | train min |",
             "|" + "---|" * 14]
    for name, r in results.items():
        m, c = r["metrics"], r["conflict"] or {"pairs": {}}
        kp = m.get("keypoints", {})
        bk = c["pairs"].get("box|keypoints", {})
        cb = c["pairs"].get("cls|box", {})
        w = ", ".join(f"{k} {v:.2f}" for k, v in (r["weights"] or {}).items())
        norms = " / ".join(f"{h['mean_grad_norm']:.2f}" for h in c.get("heads", {}).values()) or "-"
        kp_cells = f"{100 * kp['AP']:.1f} | {100 * kp['AP50']:.1f}" if kp else "- | -"
        lines.append(
            f"| {name} | {100 * m['bbox']['AP']:.1f} | {100 * m['bbox']['AP50']:.1f} | "
            f"{100 * m['box_class_agnostic']['AP']:.1f} | {kp_cells} | "
            f"{cb.get('mean_cosine', float('nan')):+.2f} | {bk.get('mean_cosine', float('nan')):+.2f} | "
            f"{100 * bk.get('frac_negative', float('nan')):.0f} | {norms} | {w} | {r['params'] / 1e6:.2f} | "
            f"{r['latency_ms']:.0f} | {r['minutes']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/multihead"))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--datasets", nargs="+", default=["synthetic", "coco-mini"])
    p.add_argument("--only", nargs="*", default=None, help="variant names to run")
    p.add_argument("--subsets", action="store_true",
                   help="every subset of the instance heads at --seeds instead of the strategies")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run (e.g. model.heads.masks.tower_depth=1)")
    p.add_argument("--report", action="store_true",
                   help="print the tables of finished runs (OUT/<dataset>/results.json), train nothing")
    args = p.parse_args()
    shared = Path(os.environ.get("DETECT_SHARED_DATA", "../shared/datasets"))
    if args.report:
        for ds in args.datasets:
            results = json.loads((args.out / ds / "results.json").read_text())
            print(f"\n### {ds}\n")
            print(subset_table(results) if args.subsets else table(results))
        return 0
    for ds in args.datasets:
        path = args.out / ds / "results.json"
        results = json.loads(path.read_text()) if path.exists() else {}  # runs of other calls
        chosen = subset_variants(args.seeds) if args.subsets else variants()
        for name, extra in chosen.items():
            if args.only and name not in args.only:
                continue
            out = args.out / ds / name.replace("/", "_").replace("@", "_seed")
            results[name] = run_one(dataset_overrides(ds, shared), [*extra, *args.set],
                                    args.steps, out)
            path.parent.mkdir(parents=True, exist_ok=True)
            # read again: another process may have added its runs meanwhile
            done = json.loads(path.read_text()) if path.exists() else {}
            path.write_text(json.dumps(done | {name: results[name]}, indent=1, default=str))
        print(f"\n### {ds} ({args.steps} steps of batch 16)\n")
        print(subset_table(results) if args.subsets else table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
