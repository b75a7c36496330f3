import json

import cv2

from detect.cli.plot import main


def test_plot_writes_every_chart(tmp_path):
    rows = [{"step": s, "loss_cls": 1 / s, "loss_box": 0.5 / s, "loss_kpt": 0.9, "loss_kpt_vis": 0.2,
             "balance_weights": {"cls": 1.0, "box": 1.0 + s / 10}, "grad_norm": {"cls": 1.0},
             "grad_cosine": {"cls|box": 0.1 * (s - 3)}} for s in range(1, 6)]
    curve = {"recall": [i / 100 for i in range(101)], "precision": [1 - i / 200 for i in range(101)]}
    rows.append({"step": 5, "eval": {"bbox": {"AP": 0.3, "pr_curve": curve},
                                     "keypoints": {"AP": 0.1, "pr_curve": curve}}})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main([str(tmp_path)]) == 0
    for name in ("losses.png", "balance_weights.png", "grad_cosine.png", "pr_curves.png"):
        img = cv2.imread(str(tmp_path / "plots" / name))
        assert img is not None and img.shape[0] > 100, name


def test_plot_missing_run_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
