"""Data-parallel training through torchrun: one code path for one process or many.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process and nothing
here does anything. gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> Dist:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank, world, local_rank, device)


def teardown(info: Dist) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def max_weight_difference(model: torch.nn.Module, info: Dist) -> float:
    """Largest absolute difference of any parameter between this rank and rank 0 (0.0 alone).

    DDP keeps replicas identical by construction; this measures it instead of assuming it."""
    if not info.enabled:
        return 0.0
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()]).to(info.device)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def all_ranks_mean(value: float, info: Dist) -> float:
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size


def coverage(rows: torch.Tensor, total: int, info: Dist) -> tuple[int, int]:
    """(images trained on, distinct images among them) of an epoch, all ranks together: equal when no
    image was seen twice; `total` when every one of the `total` training images was seen."""
    counts = torch.bincount(rows.to(torch.int64).cpu(), minlength=total).to(info.device)
    if info.enabled:
        dist.all_reduce(counts)
    return int(counts.sum().item()), int((counts > 0).sum().item())
