"""Hand-written Bayes-by-Backprop in plain torch: the reference floor for a BNN training step
(MLP nets A and B; the LSTM net C in :class:`BBBLSTMRegressor`).

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


def loss(model: BBBMLP, x, y, data_size: int):
    logits, kl = model(x)
    return cross_entropy(logits, y, reduction="sum") * (data_size / x.shape[0]) + kl


class BBBLSTMRegressor(nn.Module):
    """Net C by hand: LSTM(1 -> hidden) + Linear(hidden -> 1) on the last step, every weight
    sampled once per step by reparameterisation and run through torch's fused LSTM kernel."""

    def __init__(self, hidden: int = 10, init_scale: float = 0.1):
        super().__init__()
        self.lstm, self.head = nn.LSTM(1, hidden, batch_first=True), nn.Linear(hidden, 1)
        rho = math.log(math.expm1(init_scale))
        self.names = [k for k, _ in self.lstm.named_parameters()]
        shapes = [p.shape for p in self.lstm.parameters()] + [self.head.weight.shape, self.head.bias.shape]
        self.mu = nn.ParameterList(nn.Parameter(0.1 * torch.randn(s)) for s in shapes)
        self.rho = nn.ParameterList(nn.Parameter(torch.full(s, rho)) for s in shapes)

    def forward(self, x):
        sigmas = [softplus(r) for r in self.rho]
        w = [m + s * torch.randn_like(s) for m, s in zip(self.mu, sigmas)]
        kl = sum(_kl(m, s) for m, s in zip(self.mu, sigmas))
        n_lstm = len(w) - 2
        h = torch.func.functional_call(self.lstm, dict(zip(self.names, w[:n_lstm])), (x,))[0]
        return linear(h[:, -1], w[-2], w[-1]).squeeze(-1), kl


def regression_loss(model: BBBLSTMRegressor, x, y, data_size: int):
    """Gaussian log-likelihood with unit noise, scaled by N / B, plus the KL."""
    pred, kl = model(x)
    return 0.5 * ((pred - y) ** 2).sum() * (data_size / x.shape[0]) + kl
