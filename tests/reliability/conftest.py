"""Fixtures of tests/reliability (helpers in reliability_helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reliability_helpers import default_objects, make_trainer, write_dataset


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and on a busy machine the
    threads only wait for each other (a training step took 5x longer with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> dict[str, Path]:
    """Four 64x64 images, each with a box and a person with two keypoints."""
    return write_dataset(tmp_path_factory.mktemp("small"), [default_objects(i) for i in range(4)])


@pytest.fixture(scope="module")
def small_checkpoint(tiny_model, small_set, module_tmp) -> Path:
    """``last.pt`` of an untrained tiny model on `small_set` (written without any step)."""
    out = module_tmp
    make_trainer(tiny_model, small_set, out).save("last.pt")
    return out / "last.pt"
