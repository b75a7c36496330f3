"""The benchmark harness: timing protocol, rows and the eval suite end to end (no timing
assertions: the numbers depend on the machine). Where a test watches what each side is called
with, the suite runs in this process, through the command line's `main`."""
import json
import subprocess
import sys

import pytest
import torch

from detect.benchmark import evaluation, peers
from detect.benchmark.common import Row, format_table, time_interleaved
from detect.cli.benchmark import main

ROW_KEYS = {"suite", "name", "ours", "peer", "unit", "ratio", "ratio_is", "target", "target_op",
            "note", "extra", "met"}


@pytest.fixture
def suite_setup_undone():
    """A suite's setup sets torch's thread count and seed: both restored afterwards."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        yield
    torch.set_num_threads(threads)


def check_timing_row(row: dict, suite: str, ratio: float, target: float, op: str) -> None:
    """A row of one timed round (--repeats 1) per side, in milliseconds: ``ratio`` as computed
    from the row's own times, ``met`` as the target says."""
    assert set(row) == ROW_KEYS and row["suite"] == suite and row["unit"] == "ms"
    assert row["extra"]["ours_ms"] == [row["ours"]] and row["extra"]["peer_ms"] == [row["peer"]]
    assert row["ratio"] == pytest.approx(ratio, rel=1e-2)
    assert (row["target"], row["target_op"]) == (target, op)
    assert row["met"] == (row["ratio"] >= target if op == ">=" else row["ratio"] <= target)


def recording(calls: list, fn):
    """``fn`` that also appends its positional arguments to ``calls``."""
    def wrapper(*args, **kwargs):
        calls.append(args)
        return fn(*args, **kwargs)
    return wrapper


def test_time_interleaved_alternates_order_and_counts_calls() -> None:
    calls: list[str] = []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                             repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a b / b a / a b
    assert [len(t) for t in times.values()] == [3, 3]


def test_rows_report_whether_the_target_is_met() -> None:
    faster = Row("infer", "x", 1.0, 2.0, "ms", 2.0, "peer/ours time", 1.3)
    floor = Row("infer-floor", "y", 1.5, 1.0, "ms", 1.5, "ours/floor time", 1.25, "<=")
    assert faster.met is True and floor.met is False
    table = format_table([faster, floor])
    assert "yes" in table and "NO" in table


def test_eval_suite_runs_and_matches_pycocotools(tmp_path) -> None:
    out = tmp_path / "eval.json"
    result = subprocess.run([sys.executable, "tools/benchmark.py", "eval", "--quick", "--threads",
                             "1", "--repeats", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "eval" in result.stdout and "ratio" in result.stdout
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    check_timing_row(row, "eval", row["peer"] / row["ours"], 4.0, ">=")
    assert row["extra"]["max_stat_diff"] <= 1e-12 and record["environment"]["threads"] == 1
    gt, preds = evaluation.synthetic_coco(100)  # the quick suite's input
    assert row["name"] == "bbox 100 images x 20 preds"
    assert f"{len(gt['annotations'])} GT, {len(preds)} predictions" in row["note"]


def test_eval_suite_gives_both_sides_the_same_input(tmp_path, monkeypatch,
                                                    suite_setup_undone) -> None:
    ours, peer = [], []
    monkeypatch.setattr(evaluation, "ours_stats", recording(ours, evaluation.ours_stats))
    monkeypatch.setattr(evaluation, "pycocotools_stats",
                        recording(peer, evaluation.pycocotools_stats))
    assert main(["eval", "--quick", "--threads", "1", "--repeats", "1"]) == 0
    # each side: the stat comparison, the warm-up and the timed round, all on the one input,
    # the quick suite's 100 synthetic images
    assert len(ours) == len(peer) == 3
    assert len({(id(gt), id(preds)) for gt, preds in ours + peer}) == 1
    assert ours[0] == evaluation.synthetic_coco(100)


def test_keypoint_cost_suite_compares_the_same_model_with_and_without_keypoints(
        tmp_path, monkeypatch, suite_setup_undone) -> None:
    built = []  # (the detector, the images it was asked to predict)
    real_ours = peers.ours

    def ours(*args, **kwargs):
        det = real_ours(*args, **kwargs)
        built.append((det, []))
        det.predict = recording(built[-1][1], det.predict)
        return det

    monkeypatch.setattr(peers, "ours", ours)
    out = tmp_path / "cost.json"
    assert main(["keypoint-cost", "--quick", "--threads", "1", "--repeats", "1", "--json",
                 str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    check_timing_row(row, "keypoint-cost", row["ours"] / row["peer"], 1.1, "<=")
    (with_kpts, seen_with), (box_only, seen_without) = built
    assert with_kpts.keypoints.num_keypoints == 13 and "keypoints" not in box_only.model.heads
    # the same model but for the keypoint head
    head = {n for n, _ in with_kpts.model.named_parameters() if n.startswith("heads.keypoints.")}
    shapes = {n: p.shape for n, p in with_kpts.model.named_parameters() if n not in head}
    assert shapes == {n: p.shape for n, p in box_only.model.named_parameters()}
    extra = row["extra"]
    assert extra["keypoint_head_parameters"] == sum(
        p.numel() for n, p in with_kpts.model.named_parameters() if n in head)
    assert extra["model_parameters"] == sum(p.numel() for p in with_kpts.model.parameters())
    assert 0 < extra["keypoint_head_parameters"] < 0.1 * extra["model_parameters"]
    # both sides timed on the one image: a warm-up and the timed round each
    assert len(seen_with) == len(seen_without) == 2
    assert all(args[0] is seen_with[0][0] for args in seen_with + seen_without)
    assert seen_with[0][0].shape == (320, 320, 3)
