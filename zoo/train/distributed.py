"""Single-process or ``torchrun`` multi-process training: setup, samplers, reductions.

Under ``torchrun`` (which sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) the process group
uses NCCL with one GPU per process, or gloo on CPU. Without it everything still works
with a world of one, so the training loop has a single code path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "all_reduce_sum",
    "all_gather_objects",
    "barrier",
    "distribute_bn",
    "ShardSampler",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "--device cuda was asked for but no CUDA GPU is visible; use --device cpu"
            )
        if device == "cuda":
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(torch.device(device))
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if the environment asks for one; pick the device.

    NCCL is used when each process drives a GPU, gloo otherwise (CPU training).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world_size <= 1:
        return DistInfo(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kw: dict[str, Any] = {"backend": backend}
        if backend == "nccl":
            kw["device_id"] = dev
        dist.init_process_group(**kw)
    return DistInfo(rank, world_size, local_rank, dev, backend)


def cleanup_distributed() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a list of numbers over all ranks (float64 so counts stay exact)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (e.g. RNG states for a checkpoint)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def distribute_bn(model: nn.Module, info: DistInfo) -> None:
    """Average BatchNorm running statistics over ranks so every rank holds the same model.

    Under DDP each rank updates its running mean/var from its own batches; without this
    the ranks would end an epoch with different buffers.
    """
    if not info.distributed:
        return
    for name, buf in model.named_buffers():
        if "running_mean" in name or "running_var" in name:
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf /= info.world_size
        elif buf.dtype.is_floating_point is False and "num_batches_tracked" in name:
            dist.broadcast(buf, 0)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: each sample is seen by exactly one rank.

    Used for evaluation, where ``DistributedSampler``'s padding would count some images
    twice and bias the accuracy.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return max(0, math.ceil((self.length - self.rank) / self.world_size))
