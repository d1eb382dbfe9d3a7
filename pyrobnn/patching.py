"""Swapping a module's ``forward`` for the length of a block, putting back whatever was there before."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from torch import nn


def forwards(patches: list[tuple[nn.Module, Callable]]) -> AbstractContextManager:
    """A block within which each module of ``patches`` runs the forward paired with it; an instance forward set
    before (another such block, a wrapper such as ``CarriedState``) is put back after. Nothing to patch costs
    nothing (it runs on every batched forward pass)."""
    return _patched(patches) if patches else nullcontext()


@contextmanager
def _patched(patches: list[tuple[nn.Module, Callable]]) -> Iterator[None]:
    saved = [(m, m.__dict__.get("forward")) for m, _ in patches]
    try:
        for m, forward in patches:
            setattr(m, "forward", forward)
        yield
    finally:
        for m, previous in reversed(saved):
            del m.forward
            if previous is not None:
                setattr(m, "forward", previous)
