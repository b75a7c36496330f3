"""tools/plot.py RUN_DIR: PNG charts of a training run (matplotlib).

Writes into RUN_DIR/plots/: ``losses.png`` (every ``loss_*`` term, grouped by head),
``balance_weights.png`` (each head's effective loss weight), ``grad_cosine.png`` (pairwise cosine
of the heads' gradients on the shared parameters, when train.grad_diagnostics_every was set) and
``pr_curves.png`` (precision-recall at IoU/OKS 0.5 of the last evaluation, one curve per head).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {run} a training run folder?)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line {i} is not JSON") from None
    return rows


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if key in r and isinstance(r[key], (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _nested_series(rows: list[dict], key: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in rows:
        for name, v in (r.get(key) or {}).items():
            xs, ys = out.setdefault(name, ([], []))
            xs.append(r["step"])
            ys.append(v)
    return out


def plot_run(run: Path) -> list[Path]:
    """Writes into ``run/plots/`` each chart its metrics hold data for; returns the files."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run)
    out = run / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for name, fig in _charts(rows):
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(out / name)
    return written


def _charts(rows: list[dict]) -> Iterator[tuple[str, Figure]]:
    """(file name, figure) of each chart with data, one at a time (each is saved and closed
    before the next is drawn)."""
    if (fig := _losses_chart(rows)) is not None:
        yield "losses.png", fig
    for key, name, title in (("balance_weights", "balance_weights.png", "effective loss weight"),
                             ("grad_cosine", "grad_cosine.png", "gradient cosine (shared params)")):
        if (fig := _nested_chart(rows, key, title)) is not None:
            yield name, fig
    if (fig := _pr_chart(rows)) is not None:
        yield "pr_curves.png", fig


def _losses_chart(rows: list[dict]) -> Figure | None:
    """Every ``loss_*`` term over the steps, one panel per head."""
    import matplotlib.pyplot as plt

    loss_keys = sorted({k for r in rows for k in r if k.startswith("loss_")})
    if not loss_keys:
        return None
    # each term's head, as the run recorded it (runs before that: one panel)
    terms = next((r["head_terms"] for r in rows if "head_terms" in r), {})
    head_of = {t: head for head, names in terms.items() for t in names}
    heads = sorted({head_of.get(k, "losses") for k in loss_keys})
    fig, axes = plt.subplots(1, len(heads), figsize=(4.5 * len(heads), 3.5), squeeze=False)
    for ax, head in zip(axes[0], heads):
        for k in loss_keys:
            if head_of.get(k, "losses") == head:
                ax.plot(*_series(rows, k), label=k)
        ax.set_title(head)
        ax.set_xlabel("step")
        ax.legend()
    return fig


def _nested_chart(rows: list[dict], key: str, title: str) -> Figure | None:
    """One line per name of the ``key`` dicts (per-head weights, head-pair cosines)."""
    import matplotlib.pyplot as plt

    series = _nested_series(rows, key)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, marker="." if len(xs) < 50 else None)
    if key == "grad_cosine":
        ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.legend()
    return fig


def _pr_chart(rows: list[dict]) -> Figure | None:
    """Precision-recall at IoU/OKS 0.5 of the last evaluation, one curve per head."""
    import matplotlib.pyplot as plt

    evals = [r["eval"] for r in rows if "eval" in r]
    curves = {h: m["pr_curve"] for h, m in (evals[-1] if evals else {}).items()
              if isinstance(m, dict) and "pr_curve" in m}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    for head, c in curves.items():
        ax.plot(c["recall"], c["precision"], label=f"{head} (IoU/OKS 0.5)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("last evaluation")
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Plot a training run's metrics.jsonl.")
    p.add_argument("run", type=Path, help="RUN_DIR written by tools/train.py")
    args = p.parse_args(argv)
    try:
        written = plot_run(args.run)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError:
        print("error: tools/plot.py needs matplotlib (pip install 'detect[plot]')", file=sys.stderr)
        return 2
    for w in written:
        print(w)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
