"""detect-train / tools/train.py: train a detector from a config.

stdout: the per-head table after each evaluation and one closing line naming the run directory,
its files and the best metric. The metrics themselves are in RUN/metrics.jsonl. ``--quiet``
leaves only that line (and warnings and errors, on stderr or stdout as they come).
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from detect.cli.common import user_errors
from detect.config import load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--out", default="runs/train", help="run directory")
    p.add_argument("--resume", default=None, help="RUN_DIR/last.pt to continue from")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights (matching tensors; e.g. to add a "
                        "head), or a COCO-trained torchvision model: torchvision:NAME[=FILE.pth] "
                        "with NAME retinanet_resnet50_fpn_coco, retinanet_resnet50_fpn_v2_coco or "
                        "keypointrcnn_resnet50_fpn_coco")
    p.add_argument("--class-map", default="same-names",
                   help="with --init-from torchvision:...: which classes keep COCO's classifier "
                        "rows: same-names (default: classes named as a COCO category), none, or "
                        "pairs OURS=COCO,... (e.g. pedestrian=person)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no per-head tables")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="stop after this optimiser step as if interrupted (resume with --resume)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=3")
    return p.parse_args(argv)


@user_errors
def main(argv: list[str] | None = None, heads: Sequence = ()) -> int:
    """``heads``: builders of heads of the caller's (`detect.models.build.HeadFactory`), for a
    script of one's own that calls this main."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    from detect.engine.trainer import Trainer
    if args.resume and args.init_from:
        print("error: --resume and --init-from exclude each other", file=sys.stderr)
        return 2
    trainer = Trainer(cfg, args.out, resume=args.resume, device=args.device,
                      show_progress=not args.no_progress and sys.stderr.isatty(),
                      init_from=args.init_from, class_map=args.class_map, quiet=args.quiet,
                      heads=heads)
    trainer.train(stop_at=args.stop_at_step)
    if trainer.rank == 0:
        print(summary_line(trainer, trainer.state.step >= trainer.total_steps))
    return 0


def summary_line(trainer, finished: bool) -> str:
    """Where the run's files are, and the best value of ``train.best_metric``."""
    out, s = Path(trainer.out), trainer.state
    names = ("last.pt", "best.pt", "metrics.jsonl", "config.yaml")
    files = [f for f in names if (out / f).exists()]
    line = f"{out}: {', '.join(files)} after {s.step} step(s)"
    if not finished:
        return f"{line}; stopped early, continue with --resume {out / 'last.pt'}"
    if math.isfinite(s.best):
        line += f"; best {trainer.cfg.train.best_metric} {100 * s.best:.1f}"
    return line


if __name__ == "__main__":
    raise SystemExit(main())
