"""Loss normalisation under distributed data parallel training, and the process group itself.

Under DDP each rank computes its losses on its share of the global batch and the gradients are
averaged over the ranks. Losses divided by the number of positives of the rank's own share would
not add up to the single-process loss of the global batch: a rank with one object would weigh it
as much as another rank weighs a hundred. `loss_normalizers` divides by the count summed over the
ranks instead (and divided by the number of ranks, which DDP's averaging undoes), so the DDP
gradient equals the single-process gradient of the global batch, as detectron2 and mmdetection
do for the focal loss.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def loss_normalizers(counts: Tensor) -> Tensor:
    """counts [N] of this rank's batch -> [N] ``max(sum over ranks, 1) / world_size``.

    With a process group of several ranks this is a collective (an all-reduce): every rank must
    call it, the same number of times: `detect.matching.match_batch` calls it once per batch for
    the positives, and a head for its own counts in every loss call (the keypoint head's
    positives with keypoints, its field's cells, its crop classifier's persons).
    """
    counts = counts.detach().float()
    world = world_size()
    if world == 1:
        return counts.clamp(min=1)
    total = counts.clone()
    dist.all_reduce(total)
    return total.clamp(min=1) / world


def local_rank() -> int:
    """This process's GPU index under torchrun (0 without it)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def init_distributed() -> tuple[int, int]:
    """(rank, world size): the process group of a torchrun launch (NCCL on GPU, gloo on CPU),
    joined once; (0, 1) without one."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def cleanup_distributed() -> None:
    """Leave the process group (after a barrier), if any."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is True on this rank or on any other (a collective under DDP: every rank
    calls it; single-process: no collective, no device sync)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_lists(items: list) -> list:
    """Every rank's ``items`` concatenated (a collective under DDP), this rank's alone otherwise."""
    if world_size() == 1:
        return list(items)
    every: list[list | None] = [None] * world_size()
    dist.all_gather_object(every, items)
    return [x for part in every for x in part or []]
