"""The benchmark harness: timing protocol, rows and the eval suite end to end (no timing
assertions: the numbers depend on the machine)."""
import json
import subprocess
import sys


from detect.benchmark.common import Row, format_table, time_interleaved


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
    assert row["extra"]["max_stat_diff"] <= 1e-12
    assert row["ours"] > 0 and row["peer"] > 0 and record["environment"]["threads"] == 1


def test_keypoint_cost_suite_compares_the_same_model_with_and_without_keypoints(tmp_path) -> None:
    out = tmp_path / "cost.json"
    result = subprocess.run([sys.executable, "tools/benchmark.py", "keypoint-cost", "--quick",
                             "--threads", "1", "--repeats", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["ours"] > 0 and row["peer"] > 0 and row["target"] == 1.1
    assert 0 < row["extra"]["keypoint_head_parameters"] < 0.1 * row["extra"]["model_parameters"]
