"""PyTorch DDP set-up that works the same on one CPU, one GPU and ``torchrun``.

Under ``torchrun`` the environment carries ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the
backend is NCCL on CUDA and gloo on CPU. Without it everything runs in one process.
"""

from __future__ import annotations

import gc
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "distributed_session",
           "pick_device", "all_mean", "average_gradients"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: the local rank's GPU if CUDA is available, else CPU; or any torch device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if launched by ``torchrun``; return this process's place."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=pick_device(device))
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup_distributed(synchronise: bool = True) -> None:
    """Leave the process group safely.

    ``synchronise``: wait at a barrier first, so that no rank tears its group down while a
    peer is still inside a collective (skip it on an error path, where a peer may never come).
    Then collect garbage, so that DDP reducers holding the group are freed while the
    interpreter is whole, and destroy the group. Without these steps gloo's worker threads
    can outlive the group and abort the process at exit ("terminate called without an active
    exception").
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if synchronise:
            dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


@contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistInfo]:
    """``with distributed_session() as info:`` joins the group (if under ``torchrun``) and
    always leaves it safely (:func:`cleanup_distributed`). Keep objects that hold the group
    (a DDP-wrapped model) inside a function called in the block, so they are gone when it
    returns."""
    info = init_distributed(device)
    try:
        yield info
    except BaseException as e:
        traceback.clear_frames(e.__traceback__)  # frames of the failed call hold DDP objects
        cleanup_distributed(synchronise=False)
        raise
    cleanup_distributed(synchronise=True)


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over all processes (identity in a single process)."""
    if not info.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / info.world_size


def average_gradients(params, info: DistInfo) -> None:
    """Replace every parameter's gradient by its mean over the processes (a missing gradient
    counts as zero, so every process reduces the same tensor), in one flat all-reduce; with
    equal per-process batch slices this is the gradient of the global batch. No-op in a
    single process."""
    if not info.enabled:
        return
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= info.world_size
    for p, part in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad.copy_(part.view_as(p.grad))


def apply_thread_limit() -> None:
    """``torch.set_num_threads($PRIVLENS_THREADS)`` when that is set (pin threads on a shared
    machine)."""
    n = int(os.environ.get("PRIVLENS_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
