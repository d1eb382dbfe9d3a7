"""A hand-written mean-field guide for any lifted net, the way a Pyro user writes one.

One ``pyro.param`` for the mean and one (positive) for the spread of every weight site, one
``pyro.sample`` per site with the parameter's shape as event shape. The means start at the net's own
weights, the spreads at ``init_scale``. It lives in Pyro's param store (names ``"<prefix>.<site>.loc"``
and ``".scale"``), so ``pyrobnn.fit``, a plain ``pyro.infer.SVI`` loop and ``pyrobnn.checkpoint`` all
see it; ``pyro.clear_param_store()`` resets it.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from pyrobnn import BayesianNet


def normal_guide(bnn: BayesianNet, init_scale: float = 0.05, prefix: str = "hw"):
    """A guide function ``guide(x, y=None, data_size=None)`` for ``bnn.model``."""
    init = bnn.initial_values()

    def guide(x, y=None, data_size=None):
        for site, shape in bnn.shapes.items():
            loc = pyro.param(f"{prefix}.{site}.loc", lambda: init[site].detach().clone())
            scale = pyro.param(f"{prefix}.{site}.scale", lambda: torch.full(shape, init_scale, device=x.device),
                               constraint=constraints.positive)
            pyro.sample(site, dist.Normal(loc, scale).to_event(len(shape)))

    return guide
