"""Process-group helpers: one process, or `torchrun` (NCCL on CUDA, gloo otherwise).

Under torchrun the environment holds RANK, LOCAL_RANK and WORLD_SIZE; without it the run is a
single process (rank 0 of 1) and nothing is initialised. `is_main_process()` is the one rank
check used for logging, checkpoints, sample grids and exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from difface.device import pick_device


@dataclass(frozen=True)
class DistInfo:
    """rank / world_size of this process and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run)."""
    return not is_distributed() or dist.get_rank() == 0


def setup(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun and choose this rank's device.

    `device` 'auto' picks cuda:LOCAL_RANK when CUDA exists, else the CPU (gloo); a named device
    is used as given ('cuda' becomes cuda:LOCAL_RANK).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device) if world == 1 else _rank_device(device, local)
    if world > 1 and not is_distributed():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def _rank_device(device: str, local_rank: int) -> torch.device:
    if device in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if device == "cuda":
            return pick_device("cuda")  # raises, saying why
        return torch.device("cpu")
    return pick_device(device)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over all processes (in place; returns t). A no-op in a single process."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj):
    """rank 0's `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
