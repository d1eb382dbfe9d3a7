"""Hand-written Bayes-by-Backprop in plain torch: the reference floor for a BNN training step
(layer by layer for the MLP nets A and B; any other net, e.g. the LSTM, CNN and BatchNorm nets C, D, E,
through :class:`BBBNet`).

Mean-field Normal posterior on every weight (softplus-parameterised sigma), reparameterised
sampling, closed-form KL to a N(0, 1) prior, minibatch likelihood scaled by N / B.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.functional import cross_entropy, linear, softplus


class BBBLinear(nn.Module):
    def __init__(self, n_in: int, n_out: int, init_scale: float = 0.1):
        super().__init__()
        bound = 1 / math.sqrt(n_in)
        rho = math.log(math.expm1(init_scale))
        self.w_mu = nn.Parameter(torch.empty(n_out, n_in).uniform_(-bound, bound))
        self.w_rho = nn.Parameter(torch.full((n_out, n_in), rho))
        self.b_mu = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))
        self.b_rho = nn.Parameter(torch.full((n_out,), rho))

    def forward(self, x):
        w_s, b_s = softplus(self.w_rho), softplus(self.b_rho)
        w = self.w_mu + w_s * torch.randn_like(w_s)
        b = self.b_mu + b_s * torch.randn_like(b_s)
        kl = _kl(self.w_mu, w_s) + _kl(self.b_mu, b_s)
        return linear(x, w, b), kl


def _kl(mu, sigma):  # KL(N(mu, sigma) || N(0, 1)), summed
    return (0.5 * (sigma**2 + mu**2) - torch.log(sigma) - 0.5).sum()


class BBBMLP(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(BBBLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        kl = 0.0
        for i, layer in enumerate(self.layers):
            x, k = layer(x)
            kl = kl + k
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x, kl


class BBBNet(nn.Module):
    """Any net by hand: one mean and one rho tensor per parameter of ``net``, every weight drawn once per
    step by reparameterisation and run through the net's own modules with ``functional_call`` (torch's
    fused kernels: LSTM, convolutions, BatchNorm with its running statistics)."""

    def __init__(self, net: nn.Module, init_scale: float = 0.1):
        super().__init__()
        self.net = net
        rho = math.log(math.expm1(init_scale))
        named = dict(net.named_parameters())
        self.names = list(named)
        self.mu = nn.ParameterList(nn.Parameter(p.detach().clone()) for p in named.values())
        self.rho = nn.ParameterList(nn.Parameter(torch.full_like(p, rho)) for p in named.values())

    def forward(self, x):
        sigmas = [softplus(r) for r in self.rho]
        w = {k: m + s * torch.randn_like(s) for k, m, s in zip(self.names, self.mu, sigmas)}
        kl = sum(_kl(m, s) for m, s in zip(self.mu, sigmas))
        return torch.func.functional_call(self.net, w, (x,)), kl


def loss(model: nn.Module, x, y, data_size: int, regression: bool = False):
    """The minibatch negative ELBO: cross-entropy (or a unit-noise Gaussian log-likelihood with
    ``regression``) summed and scaled by N / B, plus the KL."""
    out, kl = model(x)
    nll = 0.5 * ((out.reshape(y.shape) - y) ** 2).sum() if regression else cross_entropy(out, y, reduction="sum")
    return nll * (data_size / x.shape[0]) + kl
