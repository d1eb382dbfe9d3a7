"""Run a net on kernels that ``torch.func`` can transform.

Some of torch's fastest kernels implement only the plain forward and backward pass: the fused
``TransformerEncoderLayer`` / ``MultiheadAttention`` path taken in eval mode, CPU flash attention, and the
fused (mkldnn) LSTM/GRU. Forward-mode AD (``jvp``, ``hessian``) and ``vmap`` over the data then fail deep
inside torch. Within :func:`transformable`, a net runs the same computation on composite ops instead: the
attention fast path off, scaled-dot-product attention on its math backend, and LSTM/GRU layers on their
written-out recurrence (:mod:`pyrobnn.recurrent`). The results equal the fused kernels' up to rounding.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from .recurrent import unfused_recurrence


@contextmanager
def transformable(net: nn.Module) -> Iterator[None]:
    """Within the block ``net`` runs only ops with forward-mode AD, double backward and vmap rules."""
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    with ExitStack() as stack:
        stack.enter_context(unfused_recurrence(net))
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        except ImportError:  # torch < 2.3: attention runs the math kernel on CPU already
            pass
        if mha is not None:
            mha.set_fastpath_enabled(False)
        try:
            yield
        finally:
            if mha is not None:
                mha.set_fastpath_enabled(fastpath)
