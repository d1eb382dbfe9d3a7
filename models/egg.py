"""The boiled-egg classifier: (weight g, boiling time min) -> {underdone, soft, hard}.

A plain dense net. Inputs are standardised inside the net by a fixed layer whose statistics are
buffers (set from the training split), so lifting makes only the Linear layers Bayesian.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy

CLASSES = ("underdone", "soft", "hard")


class Standardize(nn.Module):
    """(x - mean) / std with fixed statistics kept as buffers."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def fit(self, x: torch.Tensor, allow_constant: bool = False) -> Standardize:
        """Take mean and std from ``x``. A zero-variance column is an error, unless
        ``allow_constant`` (then it is only centred: it carries no information either way)."""
        std = x.std(0)
        if (std == 0).any():
            if not allow_constant:
                col = int((std == 0).nonzero()[0, 0])
                raise ValueError(f"cannot standardise: feature column {col} has zero variance")
            std = torch.where(std == 0, torch.ones_like(std), std)
        self.mean.copy_(x.mean(0))
        self.std.copy_(std)
        return self

    def forward(self, x):
        return (x - self.mean) / self.std


class EggNet(nn.Sequential):
    """2 -> hidden... -> 3 ReLU MLP with input standardisation."""

    def __init__(self, hidden=(32, 32)):
        layers, width = [Standardize(2)], 2
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, len(CLASSES)))
        super().__init__(*layers)

    @property
    def standardize(self) -> Standardize:
        return self[0]


def train_deterministic(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 300, lr: float = 1e-2,
                        batch_size: int = 64, weight_decay: float = 1e-4, seed: int = 0) -> list[float]:
    """The baseline: Adam on cross-entropy, minibatches. Returns the per-epoch mean loss."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(epochs):
        perm, total = torch.randperm(len(x), generator=g), 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
    return losses
