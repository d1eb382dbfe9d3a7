"""Make a module's tensors visible to Pyro's own training loop.

``pyro.infer.SVI`` optimises exactly the ``pyro.param`` sites it sees while it runs the model and
guide; the parameters of a plain ``nn.Module`` are invisible to it, so without this ``SVI.step``
would return losses while nothing trains. :func:`expose` declares each tensor as a param site whose
value *is* the module's own tensor: the module stays the owner (its ``state_dict`` is the
checkpoint), Pyro's optimisers update it in place, and a stale entry of the same name in the param
store (another instance, a deep copy) is replaced by this module's tensor on every call.
"""
from __future__ import annotations

from collections.abc import Iterable

import pyro
import torch

DIVIDER = "$$$"  # Pyro's own separator between a module name and a parameter name (pyro.module)


def expose(prefix: str, named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Declare every trainable ``(name, tensor)`` as the param site ``prefix$$$name``."""
    store = pyro.get_param_store()
    for name, tensor in named:
        if not tensor.requires_grad:
            continue
        full = prefix + DIVIDER + name
        if full in store and store[full] is not tensor:
            del store[full]
        if full not in store:
            store[full] = tensor  # real-valued: the store keeps this very tensor
        pyro.param(full)



def unique(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The trainable tensors of ``named``, each once, under the first name it came with (a tensor
    reached both as a module parameter and as a param-store entry is one tensor)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in named:
        if id(t) not in seen and t.requires_grad:
            seen.add(id(t))
            out[name] = t
    return out
