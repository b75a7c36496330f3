"""Loss normalisation under distributed data parallel training.

Under DDP each rank computes its losses on its share of the global batch and the gradients are
averaged over the ranks. Losses divided by the number of positives of the rank's own share would
not add up to the single-process loss of the global batch: a rank with one object would weigh it
as much as another rank weighs a hundred. `loss_normalizers` divides by the count summed over the
ranks instead (and divided by the number of ranks, which DDP's averaging undoes), so the DDP
gradient equals the single-process gradient of the global batch, as detectron2 and mmdetection
do for the focal loss.
"""
from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def loss_normalizers(counts: Tensor) -> Tensor:
    """counts [N] of this rank's batch -> [N] ``max(sum over ranks, 1) / world_size``.

    With a process group of several ranks this is a collective (an all-reduce): every rank must
    call it, the same number of times; `detect.matching.match_batch` calls it once per batch.
    """
    counts = counts.detach().float()
    world = world_size()
    if world == 1:
        return counts.clamp(min=1)
    total = counts.clone()
    dist.all_reduce(total)
    return total.clamp(min=1) / world
