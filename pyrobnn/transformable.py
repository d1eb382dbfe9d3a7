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

import importlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn import functional as F

from .patching import forwards
from .recurrent import plain_packing, unfused_recurrence


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
    written out (packed sequences included), EmbeddingBag as a lookup and a masked reduction, torch's fused
    attention path (nested tensors from a padding mask, the fused encoder layer) off, activation checkpoints run
    plainly (:func:`plain_checkpoints`), ``torch.distributions`` drawing noise out of place
    (:func:`batched_noise`). What :meth:`pyrobnn.lift.BayesianNet.forward` runs draws under (with
    :func:`pure_embeddings`, which every route needs)."""
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    with unfused_recurrence(net), plain_packing(), composite_bags(net), plain_checkpoints(), batched_noise():
        if mha is not None:
            mha.set_fastpath_enabled(False)
        try:
            yield
        finally:
            if mha is not None:
                mha.set_fastpath_enabled(fastpath)


class _Unchecked:
    """Stands in for torch's reentrant checkpoint Function: runs the function, keeping its activations."""

    @staticmethod
    def apply(function, preserve_rng_state, *args):
        return function(*args)


def _unchecked_generator(*args, **kwargs):
    """Stands in for torch's non-reentrant checkpoint set-up and tear-down (one step each): does nothing."""
    yield


@contextmanager
def plain_checkpoints() -> Iterator[None]:
    """Within the block ``torch.utils.checkpoint.checkpoint`` (either form, however imported) runs its function
    plainly: vmap cannot replay a checkpointed segment in the backward pass (the reentrant form is an old-style
    autograd.Function, the other recomputes outside vmap). Values and gradients are the same; the segment's
    activations are kept instead of recomputed."""
    ck = torch.utils.checkpoint
    saved = ck.CheckpointFunction, ck._checkpoint_without_reentrant_generator
    ck.CheckpointFunction, ck._checkpoint_without_reentrant_generator = _Unchecked, _unchecked_generator  # type: ignore
    try:
        yield
    finally:
        ck.CheckpointFunction, ck._checkpoint_without_reentrant_generator = saved  # type: ignore


def _standard_normal(shape, dtype, device) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, device=device)


# the torch.distributions modules that draw noise with their own _standard_normal
_NOISY = [importlib.import_module(f"torch.distributions.{m}") for m in
          ("normal", "studentT", "multivariate_normal", "lowrank_multivariate_normal")]


@contextmanager
def batched_noise() -> Iterator[None]:
    """Within the block ``torch.distributions`` draws its standard normal noise (``rsample`` of Normal, StudentT,
    MultivariateNormal ...) with ``torch.randn`` instead of an in-place ``normal_`` on a fresh tensor, which vmap
    refuses to randomise per draw: a net that samples in its forward (a reparameterised latent) gets noise of its
    own in each weight draw."""
    saved = [m._standard_normal for m in _NOISY]
    for m in _NOISY:
        setattr(m, "_standard_normal", _standard_normal)
    try:
        yield
    finally:
        for m, f in zip(_NOISY, saved):
            setattr(m, "_standard_normal", f)


def _renormed(m: nn.Embedding | nn.EmbeddingBag) -> torch.Tensor:
    """``m``'s weight with every row longer than ``max_norm`` scaled back to it: torch's in-place renorm written
    as a function of the weight, so that it can be a sampled draw (the rows a call looks up come out the same)."""
    w = m.weight
    if m.max_norm is None:
        return w
    norms = w.norm(p=m.norm_type, dim=-1, keepdim=True)
    return w * torch.where(norms > m.max_norm, m.max_norm / (norms + 1e-7), torch.ones_like(norms))


def embedding_forward(m: nn.Embedding | nn.EmbeddingBag, ids: torch.Tensor, offsets=None,
                      per_sample_weights=None) -> torch.Tensor:
    """What ``m(ids)`` returns, with ``max_norm`` applied to the weight functionally (torch renormalises the weight
    in place, which breaks autograd on a sampled one) and dense gradients (``sparse=True`` only changes the gradient's
    layout, which cannot reach a guide through a draw)."""
    if isinstance(m, nn.EmbeddingBag):
        return F.embedding_bag(ids, _renormed(m), offsets, None, m.norm_type, m.scale_grad_by_freq, m.mode, False,
                               per_sample_weights, m.include_last_offset, m.padding_idx)
    return F.embedding(ids, _renormed(m), m.padding_idx, None, m.norm_type, m.scale_grad_by_freq, False)


def stateful_embeddings(net: nn.Module) -> list[nn.Module]:
    """The ``nn.Embedding`` / ``nn.EmbeddingBag`` modules of ``net`` with ``max_norm`` or ``sparse=True``."""
    return [m for m in net.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
            and (m.max_norm is not None or m.sparse)]


def pure_embeddings(modules: list[nn.Module]) -> AbstractContextManager:
    """A block within which each of ``modules`` (from :func:`stateful_embeddings`) runs :func:`embedding_forward`."""
    return forwards([(m, lambda ids, offsets=None, per_sample_weights=None, _m=m:
                      embedding_forward(_m, ids, offsets, per_sample_weights)) for m in modules])


def bag_forward(m: nn.EmbeddingBag, ids: torch.Tensor, offsets=None, per_sample_weights=None) -> torch.Tensor:
    """What ``m(ids)`` returns for ``[B, L]`` ids (no offsets), from ``F.embedding`` and a masked
    reduction over the L positions (padding ids excluded, an empty bag giving zeros, as torch's kernel does)."""
    if offsets is not None or ids.dim() != 2:
        return embedding_forward(m, ids, offsets, per_sample_weights)
    vectors = F.embedding(ids, _renormed(m))
    keep = torch.ones_like(ids, dtype=torch.bool) if m.padding_idx is None else ids != m.padding_idx
    if per_sample_weights is not None:
        vectors = vectors * per_sample_weights.unsqueeze(-1)
    if m.mode == "max":
        best = vectors.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(1)
        return torch.where(keep.any(1, keepdim=True), best, torch.zeros_like(best))
    total = (vectors * keep.unsqueeze(-1)).sum(1)
    return total if m.mode == "sum" else total / keep.sum(1, keepdim=True).clamp_min(1)


def composite_bags(net: nn.Module) -> AbstractContextManager:
    """A block within which every ``nn.EmbeddingBag`` inside ``net`` runs :func:`bag_forward`."""
    return forwards([(m, lambda ids, offsets=None, per_sample_weights=None, _m=m:
                      bag_forward(_m, ids, offsets, per_sample_weights))
                     for m in net.modules() if isinstance(m, nn.EmbeddingBag)])
