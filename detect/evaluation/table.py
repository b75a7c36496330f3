"""Plain-text table of :func:`detect.evaluation.evaluate` metrics, for printing from CLIs.

Example (COCO stats shown in %, "-" where COCO has no ground truth)::

    head                   AP  AP50  AP75   APs   APm   APl   AR1  AR10 AR100
    bbox                 36.4  55.2  38.9  20.1  40.0  47.3  31.0  49.5  52.8
    box_class_agnostic   40.2  60.1
    head                   AP  AP50  AP75   APs   APm   APl   AR1  AR10 AR100  mIoU
    segm                 33.0  52.9  35.1  15.2  36.3  49.0  28.8  44.1  46.2  78.4 (4021 TP)
    head                   AP  AP50  AP75   APm   APl    AR  AR50  AR75   ARm   ARl
    keypoints            50.3  ...
    keypoints_mean_pose  12.1  ...     (with --mean-pose: the same boxes, the mean pose)
    keypoint_margin     +38.2  ...
    keypoints_oracle     58.1  ...     (with --oracle-handedness: each pose on its best side)
    handedness_gap       +7.8  ...
    classification       accuracy_on_matched 91.2 (523 matched)
"""
from __future__ import annotations

HEAD_WIDTH = 20
NOT_COLUMNS = ("per_class", "pr_curve", "num_tp")  # num_tp: a count, after the row
SIGNED_ROWS = ("keypoint_margin", "handedness_gap")  # differences, not COCO stats: negative is a value, not "-"
COLUMN_WIDTH = 6


def format_table(metrics: dict) -> str:
    """One row per head; a header row is repeated when a head's columns differ from the last."""
    lines: list[str] = []
    header: list[str] = []
    for head, stats in _ordered(metrics):
        if head == "classification":
            lines.append(_classification_row(stats))
            continue
        names = [name for name in stats if name not in NOT_COLUMNS]
        if names != header[: len(names)]:
            header = names
            lines.append(_row("head", header))
        cell = _signed if head in SIGNED_ROWS else _percent
        row = _row(head, [cell(stats[name]) for name in names])
        lines.append(row + (f" ({stats['num_tp']} TP)" if "num_tp" in stats else ""))
    return "\n".join(lines)


def _ordered(metrics: dict) -> list[tuple[str, dict]]:
    """bbox first, then box_class_agnostic (its columns are a prefix of bbox's) and segm, then
    the rest."""
    first = [h for h in ("bbox", "box_class_agnostic", "segm") if h in metrics]
    rest = [h for h in metrics if h not in first and h != "classification"]
    last = ["classification"] if "classification" in metrics else []
    return [(h, metrics[h]) for h in first + rest + last]


def _row(label: str, cells: list[str]) -> str:
    return label.ljust(HEAD_WIDTH) + "".join(cell.rjust(COLUMN_WIDTH) for cell in cells)


def _percent(value: float) -> str:
    return "-" if value < 0 else f"{100 * value:.1f}"


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}"


def _classification_row(stats: dict) -> str:
    accuracy = _percent(stats["accuracy_on_matched"])
    detail = f"accuracy_on_matched {accuracy} ({stats['num_matched']} matched)"
    return f"{'classification'.ljust(HEAD_WIDTH)} {detail}"


def metric_value(metrics: dict, dotted: str) -> float | None:
    """The value at ``dotted`` (``bbox.AP``) of a metrics dict, or None where there is none."""
    node = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node)
