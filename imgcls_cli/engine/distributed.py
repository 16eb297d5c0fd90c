"""torch.distributed helpers (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank; after the process group is closed, torchrun's RANK (so that only rank 0
    prints the final summary)."""
    return dist.get_rank() if is_dist() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_type: str) -> bool:
    """Initialise the process group when launched by torchrun; returns whether distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_dist():
        return is_dist()
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        if t.device.type == "cpu" or dist.get_backend() != "nccl":
            t = t.cpu() if dist.get_backend() == "gloo" else t
        dist.all_reduce(t)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        if dist.get_backend() == "gloo":
            t = t.cpu()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Close the process group at the end of a run (every rank has finished its last collective)."""
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()
