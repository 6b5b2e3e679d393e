"""Data-parallel training on torch's own engine: the process group that `torchrun` describes in
the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), and the few collective steps
the trainer needs. A plain `transduce train` (no torchrun) is a world of one and never touches
torch.distributed.

    torchrun --nproc_per_node 4 -m transduce train config.yaml --out runs/x            # one machine
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_endpoint host:29500 \\
        -m transduce train config.yaml --out /shared/runs/x                             # each machine
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def join_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs); each process takes
    the GPU of its local rank. Outside torchrun: a world of one on `device`."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=size)
    return world, device


def leave_world(world: World) -> None:
    """Close the process group once nothing uses it: objects that hold it (DDP's reducer) are
    collected first, or gloo's threads can outlive it and abort the process at exit."""
    if world.active and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def sum_over_ranks(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sums of a few numbers over all processes (token counts, loss sums, flags)."""
    if not world.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(value, world: World):
    """Rank 0's value of a small JSON-like object, on every rank (a barrier too)."""
    if not world.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(value, world: World) -> list | None:
    """Every rank's value, as a list on rank 0 (None elsewhere)."""
    if not world.active:
        return [value]
    out = [None] * world.size if world.is_main else None
    dist.gather_object(value, out, dst=0)
    return out


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()
