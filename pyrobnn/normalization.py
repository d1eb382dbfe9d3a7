"""BatchNorm (and InstanceNorm with running statistics) in train mode under vectorised weight draws.

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

An InstanceNorm with ``track_running_stats=True`` normalises each row by its own statistics and, in train
mode, torch moves its running statistics towards the rows' mean instance mean and mean unbiased instance
variance (``momentum=None``: no update; ``num_batches_tracked`` untouched); the same one step per pass is
taken from those averaged over the draws as well.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.instancenorm import _InstanceNorm


def training_batch_norms(net: nn.Module) -> list[_NormBase]:
    """BatchNorm and InstanceNorm modules that would update running statistics on the next forward pass."""
    return [m for m in net.modules() if isinstance(m, (_BatchNorm, _InstanceNorm)) and m.training
            and m.track_running_stats and m.running_mean is not None]


def _statistics(m: _NormBase, x: torch.Tensor) -> list[torch.Tensor]:
    """The [C] statistics one forward pass of ``m`` on ``x`` moves the running ones towards."""
    if isinstance(m, _BatchNorm):
        dims = [0, *range(2, x.dim())]
        return [x.mean(dims), x.var(dims, correction=1)]
    if isinstance(m, _InstanceNorm) and x.dim() == m._get_no_batch_dim():  # one unbatched row
        x = x.unsqueeze(0)
    dims = list(range(2, x.dim()))
    return [x.mean(dims).mean(0), x.var(dims, correction=1).mean(0)]


def _instance_norm(m: _InstanceNorm, x: torch.Tensor) -> torch.Tensor:
    """``m``'s normalisation by each row's own statistics, its running statistics untouched."""
    return F.instance_norm(x, None, None, m.weight, m.bias, True, 0.0, m.eps)


class Record:
    """What one forward pass saw: each BatchNorm call's module and its (batch mean, unbiased batch variance)."""

    def __init__(self) -> None:
        self.calls: list[_NormBase] = []
        self.stats: list[torch.Tensor] = []


@contextmanager
def per_draw_statistics(modules: list[_NormBase]) -> Iterator[Record]:
    """Within the block, ``modules`` normalise by batch statistics without touching their buffers, and
    the yielded :class:`Record` receives every call (return ``record.stats`` out of the vmapped function)."""
    record = Record()

    def hook(m, args):
        record.calls.append(m)
        record.stats.extend(_statistics(m, args[0].detach()))

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    for m in modules:
        if isinstance(m, _InstanceNorm):
            setattr(m, "_apply_instance_norm", lambda x, _m=m: _instance_norm(_m, x))
        else:
            m.track_running_stats = False
    try:
        yield record
    finally:
        for m in modules:
            if isinstance(m, _InstanceNorm):
                del m._apply_instance_norm
            else:
                m.track_running_stats = True
        for h in handles:
            h.remove()


@torch.no_grad()
def update_running(calls: list[_NormBase], stats: list[torch.Tensor]) -> None:
    """One update of the running statistics per recorded call, from its ``[draws, C]`` batch
    statistics averaged over the draws (see the module docstring)."""
    for i, m in enumerate(calls):
        mean, var = stats[2 * i], stats[2 * i + 1]
        assert m.running_mean is not None and m.running_var is not None and m.num_batches_tracked is not None
        if isinstance(m, _InstanceNorm):
            f = m.momentum if m.momentum is not None else 0.0
        else:
            m.num_batches_tracked.add_(1)
            f = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
        m.running_mean.mul_(1 - f).add_(mean.mean(0).to(m.running_mean.dtype), alpha=f)
        m.running_var.mul_(1 - f).add_(var.mean(0).to(m.running_var.dtype), alpha=f)
