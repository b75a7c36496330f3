import json

import cv2
import numpy as np

from detect.cli.plot import main

C0, C1 = (31, 119, 180), (255, 127, 14)  # RGB of matplotlib's first two line colours (per axes)


def line(img: np.ndarray, rgb: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels of colour ``rgb`` in a BGR image, which must run across
    most of its width: a curve, not only the legend's sample of the colour (~30 px)."""
    rows, cols = np.nonzero((np.abs(img.astype(int) - rgb[::-1]) <= 40).all(-1))
    assert cols.size and cols.max() - cols.min() > 0.6 * img.shape[1], (rgb, cols.size)
    return rows, cols


def rise(rows: np.ndarray, cols: np.ndarray) -> float:
    """Pixels the line's right third lies above its left third (negative: it falls)."""
    third = (cols.max() - cols.min()) / 3
    left, right = cols < cols.min() + third, cols > cols.max() - third
    return float(np.median(rows[left]) - np.median(rows[right]))


def test_plot_writes_every_chart(tmp_path):
    rows = [{"step": s, "loss_cls": 1 / s, "loss_box": 0.5 / s, "loss_kpt": 0.9, "loss_kpt_vis": 0.2,
             "balance_weights": {"cls": 1.0, "box": 1.0 + s / 10}, "grad_norm": {"cls": 1.0},
             "grad_cosine": {"cls|box": 0.1 * (s - 3)}} for s in range(1, 6)]
    rows[0]["head_terms"] = {"cls": ["loss_cls"], "box": ["loss_box"],  # as the trainer logs it
                             "keypoints": ["loss_kpt", "loss_kpt_vis"]}
    recall = [i / 100 for i in range(101)]
    curve = {"recall": recall, "precision": [1 - r / 2 for r in recall]}
    lower = {"recall": recall, "precision": [0.6 - r / 4 for r in recall]}
    rows.append({"step": 5, "eval": {"bbox": {"AP": 0.3, "pr_curve": curve},
                                     "keypoints": {"AP": 0.1, "pr_curve": lower}}})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main([str(tmp_path)]) == 0
    plot = {name: cv2.imread(str(tmp_path / "plots" / name)) for name in
            ("losses.png", "balance_weights.png", "grad_cosine.png", "pr_curves.png")}
    box, cls, kpt = np.split(plot["losses.png"], 3, axis=1)  # a panel per head, sorted by name
    assert rise(*line(box, C0)) < -50 and rise(*line(cls, C0)) < -50  # 0.5 / s, 1 / s
    assert np.median(line(kpt, C0)[0]) < np.median(line(kpt, C1)[0])  # loss_kpt above _vis
    rows[0].pop("head_terms")  # a run from before: every term in one panel
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main([str(tmp_path)]) == 0
    one = cv2.imread(str(tmp_path / "plots" / "losses.png"))
    assert one.shape[1] < box.shape[1] * 1.5  # one panel's width, not three
    weights = plot["balance_weights.png"]
    weight_cls, weight_box = line(weights, C0), line(weights, C1)  # 1.0, 1.1 .. 1.5
    assert rise(*weight_box) > 50 and np.median(weight_box[0]) < np.median(weight_cls[0])
    assert rise(*line(plot["grad_cosine.png"], C0)) > 50  # -0.2 .. 0.2
    bbox, keypoints = line(plot["pr_curves.png"], C0), line(plot["pr_curves.png"], C1)
    assert rise(*bbox) < -50 and np.median(bbox[0]) < np.median(keypoints[0])


def test_plot_missing_run_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
