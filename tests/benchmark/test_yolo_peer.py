"""The Ultralytics peer suite without Ultralytics: it is skipped with its message, builds the peer's
dataset layout from coco128, and reads the numbers the peer's command line writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from detect.benchmark import yolo as peer
from detect.benchmark.common import Options


def test_skipped_with_a_message_where_the_peer_is_not_installed(monkeypatch, capsys) -> None:
    monkeypatch.delenv("DETECT_YOLO", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert peer.yolo_cli() is None
    assert peer.yolo(Options(quick=True)) == []
    assert "yolo` command not found" in capsys.readouterr().err


def test_a_given_path_that_is_no_file_is_not_the_peer(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DETECT_YOLO", str(tmp_path / "missing" / "yolo"))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert peer.yolo_cli() is None


def test_coco128_in_the_peers_layout(shared_data: Path, tmp_path: Path) -> None:
    data_yaml = peer.yolo_dataset(shared_data / "coco128", tmp_path / "yolo")
    spec = yaml.safe_load(data_yaml.read_text())
    assert len(spec["names"]) == 80 and spec["names"][0] == "person"
    images = sorted((tmp_path / "yolo" / "images" / "train").iterdir())
    labels = sorted((tmp_path / "yolo" / "labels" / "train").glob("*.txt"))
    assert len(images) == 128 and all(p.is_symlink() and p.resolve().is_file() for p in images)
    assert [p.stem for p in labels] == [p.stem for p in images]  # classes.txt removed
    lines = [line.split() for p in labels for line in p.read_text().splitlines()]
    assert len(lines) == 929  # coco128's boxes less its crowd regions
    assert all(len(v) == 5 and 0 <= int(v[0]) < 80 and all(0 <= float(x) <= 1 for x in v[1:])
               for v in lines)


def test_the_peers_speed_line_is_read() -> None:
    text = ("image 40/40 /tmp/x.jpg: 256x320 2 persons, 30.1ms\n"
            "Speed: 1.5ms preprocess, 22.0ms inference, 0.7ms postprocess per image at shape "
            "(1, 3, 256, 320)\n")
    match = peer.SPEED.search(text)
    assert match is not None
    assert sum(float(v) for v in match.groups()) == pytest.approx(24.2)


def test_coco_mini_persons_in_the_peers_pose_layout(shared_data: Path, tmp_path: Path) -> None:
    mini = shared_data / "coco-mini"
    ann = mini / "annotations" / "person_keypoints_train2017.json"
    data_yaml, count = peer.yolo_pose_dataset(mini / "train2017", ann, tmp_path / "pose")
    spec = yaml.safe_load(data_yaml.read_text())
    assert spec["kpt_shape"] == [17, 3] and spec["names"] == {0: "person"}
    flip = spec["flip_idx"]
    assert sorted(flip) == list(range(17)) and flip[:3] == [0, 2, 1]  # nose; eyes swapped
    assert all(flip[flip[i]] == i for i in range(17))
    labels = sorted((tmp_path / "pose" / "labels" / "train").glob("*.txt"))
    assert len(labels) == len(list((tmp_path / "pose" / "images" / "train").iterdir())) == 80
    assert count == 80
    lines = [[float(x) for x in line.split()]
             for p in labels for line in p.read_text().splitlines()]
    gt = json.loads(ann.read_text())
    persons = [a for a in gt["annotations"] if not a.get("iscrowd")]
    assert len(lines) == len(persons) > 0
    assert all(len(v) == 5 + 17 * 3 and v[0] == 0 and all(0 <= x <= 1 for x in v[1:5])
               for v in lines)
    visible = sum(int(v[5 + 3 * i + 2] > 0) for v in lines for i in range(17))
    assert visible == sum(int(a["keypoints"][3 * i + 2] > 0) for a in persons for i in range(17))
