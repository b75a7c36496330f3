"""Untrusted and damaged checkpoints: refused with one line naming the file, never executed;
an interrupted save leaves the previous checkpoint intact."""
import copy
import os

import pytest
import torch

from detect.api import Detector
from detect.cli import infer as infer_cli
from detect.cli import train as train_cli
from detect.engine.checkpoint import load_checkpoint
from detect.tensor_files import CheckpointError
from reliability_helpers import make_trainer, overrides


class LeavesAFile:
    """Unpickling this calls ``open(path, "w")``: code execution that leaves a file behind."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def poisoned(small_checkpoint, tmp_path):
    """(a valid checkpoint plus a pickled payload, the file its unpickling would create)."""
    marker = tmp_path / "payload_ran"
    state = load_checkpoint(small_checkpoint)
    state["extra"] = LeavesAFile(marker)
    path = tmp_path / "poisoned.pt"
    torch.save(state, path)
    torch.load(path, weights_only=False)  # the payload is live: unpickling runs it
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_pickled_payload_is_refused_by_the_api(poisoned):
    path, marker = poisoned
    with pytest.raises(CheckpointError, match=r"poisoned\.pt: refused: the file holds pickled "
                                              r"objects"):
        Detector.from_checkpoint(path)
    assert not marker.exists()


def test_pickled_payload_is_refused_by_infer_and_resume(poisoned, small_set, tiny_model,
                                                        tmp_path, capsys):
    path, marker = poisoned
    rc = infer_cli.main(["--checkpoint", str(path), "--source", str(small_set["images"]),
                         "--out", str(tmp_path / "infer")])
    assert rc == 2 and not marker.exists()
    rc = train_cli.main(["--config", "configs/demo.yaml", "--out", str(tmp_path / "run"),
                         "--resume", str(path), "--no-progress", *overrides(tiny_model, small_set)])
    assert rc == 2 and not marker.exists()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(x.startswith(f"error: {path}: refused") for x in err)


def tamper(state, what):
    heads = state["config"]["model"]["heads"]
    match what:
        case "class map":
            state["categories"] = {"ids": [2, 5, 9], "names": ["box", "person", "cat"]}
        case "keypoint count":
            heads["keypoints"].update(num_keypoints=3, sigmas=[0.05] * 3)
            state["keypoints"]["names"].append("nose")
        case "architecture":
            state["config"]["model"]["backbone"]["name"] = "resnet34"
        case "weights":
            state["ema"]["module"]["heads.box.predictor.weight"] = torch.zeros(4, 32, 1, 1)
        case "config":
            heads["no_such_setting"] = 1
        case "no config":
            del state["config"]


@pytest.mark.parametrize("what,match", [
    ("class map", r"heads\.cls\.predictor\.weight is \[2, 32, 3, 3\] in the file but "
                  r"\[3, 32, 3, 3\] in the model .*3 classes and 2 keypoints"),
    # 3K outputs: K keypoints (x, y, visibility); the handedness logit (the demo config's second
    # keypoint tower) and the offset fields have predictors of their own
    ("keypoint count", r"heads\.keypoints\.predictor\.weight is \[6, 32, 3, 3\] in the file but "
                       r"\[9, 32, 3, 3\]"),
    ("architecture", r"weights do not fit the model: \d+ tensor\(s\) missing \(backbone\.layer"),
    ("weights", r"heads\.box\.predictor\.weight is \[4, 32, 1, 1\] in the file but "
                r"\[4, 32, 3, 3\] in the model"),
    ("config", r"unknown key 'model\.heads\.no_such_setting'"),
    ("no config", r"not a detect checkpoint \(no 'config' entry\)"),
])
def test_checkpoint_that_does_not_fit_is_a_one_line_error(small_checkpoint, tmp_path, what, match):
    state = copy.deepcopy(load_checkpoint(small_checkpoint))
    tamper(state, what)
    path = tmp_path / "tampered.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=match) as e:
        Detector.from_checkpoint(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_resume_from_weights_or_state_that_do_not_fit_is_a_one_line_error(
        small_checkpoint, small_set, tiny_model, tmp_path):
    state = load_checkpoint(small_checkpoint)
    state["model"]["heads.cls.predictor.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights\.pt: weights do not fit the model: "
                                              r"heads\.cls\.predictor\.bias is \[5\]"):
        make_trainer(tiny_model, small_set, tmp_path / "a", resume=tmp_path / "weights.pt")
    state = load_checkpoint(small_checkpoint)
    del state["scheduler"]
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match=r"state\.pt: its training state does not fit this "
                                              r"run \(KeyError: 'scheduler'\)"):
        make_trainer(tiny_model, small_set, tmp_path / "b", resume=tmp_path / "state.pt")


def test_truncated_checkpoint_is_a_one_line_error(small_checkpoint, tmp_path):
    path = tmp_path / "half.pt"
    path.write_bytes(small_checkpoint.read_bytes()[: small_checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"half\.pt: not a readable checkpoint"):
        Detector.from_checkpoint(path)


def test_interrupted_save_leaves_the_previous_checkpoint_loadable(small_set, tiny_model, tmp_path,
                                                                  monkeypatch):
    t = make_trainer(tiny_model, small_set, tmp_path)
    t.save("last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    t.state.step = 7
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(f.tell() // 2)
        f.truncate()
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        t.save("last.pt")
    monkeypatch.undo()
    assert (tmp_path / "last.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 0
    assert [p for p in os.listdir(tmp_path) if "last.pt" in p] == ["last.pt"]  # no temporary file
