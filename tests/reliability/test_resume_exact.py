"""Exact resume with data-loader workers, and resuming under changed settings.

(The 0-worker exact resume is tests/engine/test_training.py::test_resume_continues_exactly.)
"""
import json

import pytest
import torch

from detect.data.build import EpochSampler
from detect.engine.checkpoint import load_checkpoint
from detect.tensor_files import CheckpointError
from reliability_helpers import CATEGORIES, default_objects, make_trainer, write_dataset


def losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {x["step"]: x["loss"] for x in lines if "loss" in x}


def test_resume_with_two_workers_continues_exactly(tiny_model, tmp_path):
    """4 steps straight == 2 steps, stop, resume, 2 more: 3 images in batches of 1, so the stop
    is inside the first epoch and the resumed run crosses into the second (the backbone is
    frozen to keep the test fast; the rest trains)."""
    data = write_dataset(tmp_path / "d", [default_objects(i) for i in range(3)])
    common = ("train.max_steps=4", "train.batch_size=1", "data.workers=2",
              "train.deterministic=true", "train.freeze=[backbone]")
    make_trainer(tiny_model, data, tmp_path / "a", *common).train()
    assert make_trainer(tiny_model, data, tmp_path / "b", *common).train(stop_at=2) == {}
    stopped = load_checkpoint(tmp_path / "b/last.pt")
    assert (stopped["step"], stopped["epoch"], stopped["batch_in_epoch"]) == (2, 0, 2)
    make_trainer(tiny_model, data, tmp_path / "b", *common, resume=tmp_path / "b/last.pt").train()
    straight, resumed = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert list(straight) == list(resumed) == [1, 2, 3, 4]
    assert [straight[s] for s in (3, 4)] == [resumed[s] for s in (3, 4)]
    wa = load_checkpoint(tmp_path / "a/last.pt")["model"]
    wb = load_checkpoint(tmp_path / "b/last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_is_exact_after_a_batch_with_no_readable_image(tiny_model, tmp_path):
    """The unreadable batch counts as consumed, so the resumed run does not replay a batch."""
    data = write_dataset(tmp_path / "d", [default_objects(i) for i in range(3)])
    first = EpochSampler(3, shuffle=True, seed=0)._order()[0]
    bad = data["images"] / f"{first:03d}.jpg"
    bad.write_bytes(bad.read_bytes()[:-100])  # passes the header check, fails when read
    common = ("train.max_steps=2", "train.batch_size=1", "train.freeze=[backbone]")
    make_trainer(tiny_model, data, tmp_path / "a", *common).train()
    make_trainer(tiny_model, data, tmp_path / "b", *common).train(stop_at=1)
    assert load_checkpoint(tmp_path / "b/last.pt")["batch_in_epoch"] == 2
    make_trainer(tiny_model, data, tmp_path / "b", *common, resume=tmp_path / "b/last.pt").train()
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


@pytest.mark.parametrize("categories,match", [
    (CATEGORIES + [{"id": 9, "name": "cat"}], r"classes differ from the training data's \(2 vs 3"),
    ([CATEGORIES[0], {**CATEGORIES[1], "keypoints": ["head", "tail"]}],
     r"keypoints \['left_hand', 'right_hand'\] differ from the training data's \['head', 'tail'\]"),
])
def test_resume_with_other_classes_or_keypoints_is_an_error(tiny_model, small_checkpoint, tmp_path,
                                                            categories, match):
    data = write_dataset(tmp_path, [default_objects(0)], categories=categories)
    with pytest.raises(CheckpointError, match=match) as e:
        make_trainer(tiny_model, data, tmp_path / "run", resume=small_checkpoint)
    assert str(e.value).startswith(str(small_checkpoint)) and "\n" not in str(e.value)


def test_resume_with_another_model_is_an_error_naming_the_difference(tiny_model, small_set,
                                                                     small_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match=r"model config differs from this config "
                                              r"\(model\.neck\.channels: 32 -> 16\)"):
        make_trainer(tiny_model, small_set, tmp_path, "model.neck.channels=16",
                     resume=small_checkpoint)


def test_resume_with_another_seed_or_setting_warns(tiny_model, small_set, small_checkpoint,
                                                   tmp_path, capsys):
    make_trainer(tiny_model, small_set, tmp_path, "train.seed=1", "train.lr=0.01",
                 resume=small_checkpoint)
    out = capsys.readouterr().out
    assert (f"warning: resuming {small_checkpoint} with train.seed 1 (was 0): the run will not "
            "repeat the original") in out
    assert "with a config that differs from the checkpoint's: train.lr: 0.002 -> 0.01, " \
           "train.seed: 0 -> 1" in out
