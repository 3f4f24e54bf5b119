"""One switch for single-process and ``torchrun`` (DDP) training: NCCL on GPU, gloo on CPU.

The training loop calls :func:`setup` once and then only asks the returned :class:`DistInfo`;
the same script runs under ``python -m``/``aion-engine`` and under ``torchrun`` unchanged.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_objects(info: DistInfo, obj: object) -> list[object]:
    """Every rank's ``obj`` (a list of one when not distributed)."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(info: DistInfo, value: float) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def teardown(info: DistInfo) -> None:
    """Leave the process group without the gloo exit deadlock.

    Gloo's worker threads free finished work objects, which needs the GIL when they hold tensors
    made in Python; the group's destructor joins those threads while the main thread holds the GIL.
    So: callers drop their DDP wrapper first (its reducer must not hold the last reference), all
    ranks meet, then we sleep (releasing the GIL) so the workers drain before the group is destroyed.
    """
    if info.enabled and dist.is_initialized():
        gc.collect()
        dist.barrier()
        time.sleep(0.5)
        dist.destroy_process_group()
