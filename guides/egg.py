"""A hand-written mean-field guide for the egg net EggNet(hidden=(32, 32)).

Written out the way seed 001 writes its Pyro guide: one ``pyro.param`` for the mean and one for
the (softplus-transformed) spread of every weight matrix and bias vector, and one ``pyro.sample``
per site of the lifted model. Site names are the net's parameter names: layer 0 is the input
standardisation, so the Linear layers are 1, 3 and 5. Weight sites declare their whole shape as
event dims (``to_event``), which is what lets pyrobnn draw thousands of weight sets at once.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.nn.functional import softplus

H1, H2, N_IN, N_OUT = 32, 32, 2, 3
INIT_SIGMA = 0.1
RHO0 = float(torch.log(torch.expm1(torch.tensor(INIT_SIGMA))))  # softplus(RHO0) == INIT_SIGMA


def _mu(shape, fan_in, device):
    # means start at a random draw of the usual 1/sqrt(fan_in) size, so hidden units differ
    return lambda: torch.randn(shape, device=device) / fan_in ** 0.5


def _rho(shape, device):
    return lambda: torch.full(shape, RHO0, device=device)


def egg_guide(x, y=None, data_size=None):
    dev = x.device
    # first layer: Linear(2 -> 32)
    fc1w_mu = pyro.param("fc1w_mu", _mu((H1, N_IN), N_IN, dev))
    fc1w_rho = pyro.param("fc1w_rho", _rho((H1, N_IN), dev))
    fc1b_mu = pyro.param("fc1b_mu", _mu((H1,), N_IN, dev))
    fc1b_rho = pyro.param("fc1b_rho", _rho((H1,), dev))
    # second layer: Linear(32 -> 32)
    fc2w_mu = pyro.param("fc2w_mu", _mu((H2, H1), H1, dev))
    fc2w_rho = pyro.param("fc2w_rho", _rho((H2, H1), dev))
    fc2b_mu = pyro.param("fc2b_mu", _mu((H2,), H1, dev))
    fc2b_rho = pyro.param("fc2b_rho", _rho((H2,), dev))
    # output layer: Linear(32 -> 3)
    outw_mu = pyro.param("outw_mu", _mu((N_OUT, H2), H2, dev))
    outw_rho = pyro.param("outw_rho", _rho((N_OUT, H2), dev))
    outb_mu = pyro.param("outb_mu", _mu((N_OUT,), H2, dev))
    outb_rho = pyro.param("outb_rho", _rho((N_OUT,), dev))

    pyro.sample("1.weight", dist.Normal(fc1w_mu, softplus(fc1w_rho)).to_event(2))
    pyro.sample("1.bias", dist.Normal(fc1b_mu, softplus(fc1b_rho)).to_event(1))
    pyro.sample("3.weight", dist.Normal(fc2w_mu, softplus(fc2w_rho)).to_event(2))
    pyro.sample("3.bias", dist.Normal(fc2b_mu, softplus(fc2b_rho)).to_event(1))
    pyro.sample("5.weight", dist.Normal(outw_mu, softplus(outw_rho)).to_event(2))
    pyro.sample("5.bias", dist.Normal(outb_mu, softplus(outb_rho)).to_event(1))
