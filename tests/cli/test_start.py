"""The command lines start at once and exit honestly: ``--help`` imports no torch (the arguments
are parsed before anything heavy is imported), inference never imports the training code, and a
source that names nothing to predict on is an error (exit status 2, one line)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detect.api import Detector
from detect.cli import infer as infer_cli
from detect.config import config_to_dict

ROOT = Path(__file__).resolve().parents[2]
TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py"))  # every tool, the demo's too


def run_python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_help_imports_no_torch(tool: str) -> None:
    out = run_python(
        "import runpy, sys\n"
        f"sys.argv = ['tools/{tool}.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path('tools/{tool}.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "print('usage', sorted(m for m in ('torch', 'detect.engine.trainer') "
        "if m in sys.modules))\n")
    assert out.strip().endswith("usage []"), out[-500:]


def test_inference_never_imports_the_training_code(tmp_path: Path) -> None:
    out = run_python(
        "import sys, numpy as np\n"
        "from detect.api import Detector\n"
        "import detect.cli.infer, detect.cli.eval, detect.export.runtime, detect.engine.inference\n"
        "det = Detector.from_config('configs/demo.yaml', ['model.backbone.weights=null', "
        "'data.image_size=64', 'model.backbone.name=resnet18'], categories=['a'])\n"
        "det.predict(np.zeros((48, 64, 3), np.uint8))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('detect.engine.trainer', "
        "'detect.engine.optim', 'detect.balancing', 'detect.data.build', 'mlflow', "
        "'torch.utils.tensorboard'))))\n")
    assert out.strip().splitlines()[-1] == "[]", out[-500:]


def test_a_source_with_nothing_to_predict_on_exits_2(tmp_path: Path, capsys) -> None:
    det = Detector.from_config("configs/demo.yaml", [
        "model.backbone.weights=null", "model.backbone.name=resnet18", "data.image_size=64",
        "train.heads=[cls,box]"], categories=["a"])
    checkpoint = tmp_path / "boxes.pt"
    torch.save({"model": det.model.state_dict(), "config": config_to_dict(det.cfg),
                "categories": det.categories.to_dict()}, checkpoint)
    (tmp_path / "notes.txt").write_text("not an image")
    for source in (str(tmp_path / "missing.mp4"), str(tmp_path)):
        rc = infer_cli.main(["--checkpoint", str(checkpoint), "--source", source,
                             "--out", str(tmp_path / "out")])
        assert rc == 2
        err = capsys.readouterr().err.splitlines()
        assert err[-1] == f"error: {source}: no image or video to predict on", err
        assert err[0].startswith("note: ")  # what was skipped, and why
