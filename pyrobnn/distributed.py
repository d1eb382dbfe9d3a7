"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``; gloo on CPU, nccl on GPU).

Every process holds the whole guide and draws the same weights (same seed, same random stream);
each takes its shard of every global minibatch. Its loss is weighted by its share of the global
batch, n_r / G, and the gradients are summed across processes, so every process applies the
gradient of ``KL - N / G * sum of the minibatch log-likelihood``: the single-process step on the
same global batch. Only rank 0 writes checkpoints.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(idx: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """This process's rows of a global minibatch (every size-th row from rank on)."""
    return idx[rank::size]


def sum_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace every gradient by its sum over processes (missing gradients count as zero)."""
    params = list(params)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def sum_values(values: list[float], device: torch.device | str) -> list[float]:
    """Element-wise sum of a few numbers over processes."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
