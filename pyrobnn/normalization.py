"""BatchNorm in train mode under vectorised weight draws.

``vmap`` cannot run a BatchNorm in train mode as torch writes it: the module updates its running
statistics in place, and those buffers are not batched. Within :func:`per_draw_statistics` every
BatchNorm in train mode normalises each weight draw's activations by *that draw's* batch statistics
(as the same net with that draw's weights would), and records them; :func:`update_running` then takes
**one** step of the module's own rule per forward pass, never one per draw: with momentum m,

    running_mean <- (1 - m) * running_mean + m * mean over draws of the draws' batch means
    running_var  <- (1 - m) * running_var  + m * mean over draws of the draws' (unbiased) batch variances

and ``num_batches_tracked += 1`` (``momentum=None``: m = 1 / num_batches_tracked, torch's cumulative
average). A single draw runs torch's own kernel, which applies the same rule. In eval mode the
running statistics are read, never written, and vmap needs nothing special.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def training_batch_norms(net: nn.Module) -> list[_BatchNorm]:
    """BatchNorm modules that would update running statistics on the next forward pass."""
    return [m for m in net.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
            and m.running_mean is not None]


class Record:
    """What one forward pass saw: each BatchNorm call's module and its (batch mean, unbiased batch variance)."""

    def __init__(self) -> None:
        self.calls: list[_BatchNorm] = []
        self.stats: list[torch.Tensor] = []


@contextmanager
def per_draw_statistics(modules: list[_BatchNorm]) -> Iterator[Record]:
    """Within the block, ``modules`` normalise by batch statistics without touching their buffers, and
    the yielded :class:`Record` receives every call (return ``record.stats`` out of the vmapped function)."""
    record = Record()

    def hook(m, args):
        x = args[0].detach()
        dims = [0, *range(2, x.dim())]
        record.calls.append(m)
        record.stats.extend([x.mean(dims), x.var(dims, correction=1)])

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    for m in modules:
        m.track_running_stats = False
    try:
        yield record
    finally:
        for m in modules:
            m.track_running_stats = True
        for h in handles:
            h.remove()


@torch.no_grad()
def update_running(calls: list[_BatchNorm], stats: list[torch.Tensor]) -> None:
    """One update of the running statistics per recorded call, from its ``[draws, C]`` batch
    statistics averaged over the draws (see the module docstring)."""
    for i, m in enumerate(calls):
        mean, var = stats[2 * i], stats[2 * i + 1]
        assert m.running_mean is not None and m.running_var is not None and m.num_batches_tracked is not None
        m.num_batches_tracked.add_(1)
        f = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
        m.running_mean.mul_(1 - f).add_(mean.mean(0).to(m.running_mean.dtype), alpha=f)
        m.running_var.mul_(1 - f).add_(var.mean(0).to(m.running_var.dtype), alpha=f)
