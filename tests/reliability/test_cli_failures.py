"""The command lines under bad data: exit status 2 and one line on stderr, or a list of what was
left out. (tools/infer.py over a folder of good and bad images: tests/engine/test_workflow.py.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

from detect.cli import eval as eval_cli
from reliability_helpers import default_objects, overrides, write_dataset

ROOT = Path(__file__).resolve().parents[2]


def train_cli(tiny_model, data, out, *extra):
    cmd = [sys.executable, str(ROOT / "tools/train.py"), "--config",
           str(ROOT / "configs/demo.yaml"), "--out", str(out), "--no-progress",
           *overrides(tiny_model, data, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see conftest.py: one_thread
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_train_cli_with_a_broken_annotation_file_exits_2_with_one_line(tiny_model, tmp_path):
    data = write_dataset(tmp_path, [default_objects(0), default_objects(1)])
    raw = json.loads(data["annotations"].read_text())
    raw["annotations"][3]["category_id"] = 7
    data["annotations"].write_text(json.dumps(raw))
    r = train_cli(tiny_model, data, tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"error: {data['annotations']}: annotation id 4: unknown "
                                     "category_id 7"]


def test_train_cli_stops_on_a_corrupt_image_with_on_bad_image_error(tiny_model, tmp_path):
    """The header is intact, so the image passes the check before training and fails when read
    in the first batch."""
    data = write_dataset(tmp_path, [default_objects(i) for i in range(4)])
    bad = data["images"] / "002.jpg"
    bad.write_bytes(bad.read_bytes()[:-200])
    r = train_cli(tiny_model, data, tmp_path / "run", "train.batch_size=4",
                  "data.on_bad_image=error")
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [f"error: unreadable image at step 1: {bad}: truncated JPEG "
                                     "(no end-of-image marker after the last scan)"]
    assert not (tmp_path / "run/last.pt").exists()


def test_eval_cli_lists_the_images_it_could_not_read(small_checkpoint, tmp_path, capsys):
    data = write_dataset(tmp_path, [default_objects(i) for i in range(3)])
    (data["images"] / "001.jpg").write_bytes(b"GIF89a not really")
    rc = eval_cli.main(["--checkpoint", str(small_checkpoint), "--images", str(data["images"]),
                        "--annotations", str(data["annotations"]), "--batch", "2"])
    assert rc == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"skipped image: {data['images'] / '001.jpg'}: not a "
                                         "readable image (UnidentifiedImageError)"]
    assert "bbox" in captured.out
