"""Run a net on kernels that ``torch.func`` can transform.

Some of torch's fastest kernels implement only the plain forward and backward pass: the fused
``TransformerEncoderLayer`` / ``MultiheadAttention`` path taken in eval mode, CPU flash attention, and the
fused (mkldnn) LSTM/GRU. Forward-mode AD (``jvp``, ``hessian``) and ``vmap`` over the data then fail deep
inside torch. Within :func:`transformable`, a net runs the same computation on composite ops instead: the
attention fast path off, scaled-dot-product attention on its math backend, LSTM/GRU layers on their
written-out recurrence (:mod:`pyrobnn.recurrent`), and ``nn.EmbeddingBag`` (no forward-mode AD) as an embedding
lookup and a masked reduction. The results equal the fused kernels' up to rounding. :func:`batchable` is the
part of this that ``vmap`` over weight draws needs (everything but the attention kernel's backend).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from .recurrent import unfused_recurrence


@contextmanager
def transformable(net: nn.Module) -> Iterator[None]:
    """Within the block ``net`` runs only ops with forward-mode AD, double backward and vmap rules."""
    with ExitStack() as stack:
        stack.enter_context(batchable(net))
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        except ImportError:  # torch < 2.3: attention runs the math kernel on CPU already
            pass
        yield


@contextmanager
def batchable(net: nn.Module) -> Iterator[None]:
    """Within the block ``net`` runs on ops that ``vmap`` batches over weight draws: LSTM/GRU/RNN and their cells
    written out, EmbeddingBag as a lookup and a masked reduction, torch's fused attention path (nested tensors from
    a padding mask, the fused encoder layer) off. What :meth:`pyrobnn.lift.BayesianNet.forward` runs draws under."""
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    with unfused_recurrence(net), composite_bags(net):
        if mha is not None:
            mha.set_fastpath_enabled(False)
        try:
            yield
        finally:
            if mha is not None:
                mha.set_fastpath_enabled(fastpath)


def bag_forward(m: nn.EmbeddingBag, ids: torch.Tensor, offsets=None, per_sample_weights=None) -> torch.Tensor:
    """What ``m(ids)`` returns for ``[B, L]`` ids (no offsets, no max_norm), from ``F.embedding`` and a masked
    reduction over the L positions (padding ids excluded, an empty bag giving zeros, as torch's kernel does)."""
    if offsets is not None or ids.dim() != 2 or m.max_norm is not None:
        return nn.EmbeddingBag.forward(m, ids, offsets, per_sample_weights)
    vectors = F.embedding(ids, m.weight)
    keep = torch.ones_like(ids, dtype=torch.bool) if m.padding_idx is None else ids != m.padding_idx
    if per_sample_weights is not None:
        vectors = vectors * per_sample_weights.unsqueeze(-1)
    if m.mode == "max":
        best = vectors.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(1)
        return torch.where(keep.any(1, keepdim=True), best, torch.zeros_like(best))
    total = (vectors * keep.unsqueeze(-1)).sum(1)
    return total if m.mode == "sum" else total / keep.sum(1, keepdim=True).clamp_min(1)


@contextmanager
def composite_bags(net: nn.Module) -> Iterator[None]:
    """Within the block every ``nn.EmbeddingBag`` inside ``net`` runs :func:`bag_forward`."""
    bags = [m for m in net.modules() if isinstance(m, nn.EmbeddingBag)]
    try:
        for m in bags:
            setattr(m, "forward", lambda ids, offsets=None, per_sample_weights=None, _m=m:
                    bag_forward(_m, ids, offsets, per_sample_weights))
        yield
    finally:
        for m in bags:
            del m.forward
