"""What the command lines print: the per-head table and one closing line, never the metrics as
JSON (those are in metrics.jsonl / metrics.json); ``--quiet`` leaves the closing line alone."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def train(overrides: list[str], out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "tools/train.py", "--config", "configs/demo.yaml",
                           "--out", str(out), *flags, *overrides, "train.max_steps=1"],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_training_stdout_is_table_and_summary(tiny_overrides, tmp_path):
    r = train(tiny_overrides, tmp_path / "run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert not any(is_json_object(x) for x in lines) and max(map(len, lines)) < 200
    assert lines[0].split()[:3] == ["head", "AP", "AP50"] and lines[1].startswith("bbox ")
    assert lines[-1].startswith(f"{tmp_path / 'run'}: last.pt, best.pt, metrics.jsonl")
    assert "best bbox.AP" in lines[-1]
    evals = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert "pr_curve" in evals[-1]["eval"]["bbox"]  # the full metrics are in the file
    assert "Warning" not in r.stderr and "warn" not in r.stderr.lower()


def test_training_quiet_prints_one_line(tiny_overrides, tmp_path):
    r = train(tiny_overrides, tmp_path / "run", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(str(tmp_path / "run"))
    assert r.stderr == ""
