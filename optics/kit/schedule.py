"""Deterministic data order and per-sample randomness, keyed by (seed, step, sample).

Every random choice of a training step is a pure function of the seed, the step and the
*global* index of a sample in the batch. That makes three things exact at once: resuming
(step ``t`` after a restart sees what an uninterrupted run saw), distributed training (rank
``r`` of ``W`` takes samples ``r, r + W, ...`` of the same global batch), and comparisons
between runs.
"""

from __future__ import annotations

import torch

__all__ = ["global_batch", "rank_slice", "sample_generator"]

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant for seed mixing


def _mix(*values: int) -> int:
    h = 0
    for v in values:
        h = (h * 1_000_003 + int(v) + _MIX) % (2**63 - 1)
    return h


def global_batch(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Dataset indices of global batch ``step``: epochs are seeded permutations of ``n``
    items, laid end to end (so a batch may straddle two epochs)."""
    if n < 1:
        raise ValueError("the training set is empty")
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        g = torch.Generator().manual_seed(_mix(seed, epoch))
        perm = torch.randperm(n, generator=g)
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset:offset + take].tolist())
    return torch.tensor(out, dtype=torch.long)


def rank_slice(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The part of a global batch that rank ``rank`` of ``world_size`` processes."""
    if len(batch) % world_size:
        raise ValueError(f"batch size {len(batch)} is not divisible by {world_size} processes")
    return batch[rank::world_size]


def sample_generator(seed: int, step: int, sample: int, device=None) -> torch.Generator:
    """A generator for the randomness of one sample of one step (noise, augmentation)."""
    g = torch.Generator(device=device if device is not None else "cpu")
    g.manual_seed(_mix(seed, step, sample, 7))
    return g
