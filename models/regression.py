"""A plain MLP regressor with input standardisation (UCI / Boston experiments)."""
from __future__ import annotations

from torch import nn

from .egg import Standardize


class MLPRegressor(nn.Sequential):
    """n_in -> hidden... -> n_out ReLU MLP; inputs standardised by fixed buffers (``fit_inputs``)."""

    def __init__(self, n_in: int, hidden=(50,), n_out: int = 1):
        layers, width = [Standardize(n_in)], n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_out))
        super().__init__(*layers)

    def fit_inputs(self, x, allow_constant: bool = True):
        self[0].fit(x, allow_constant=allow_constant)
        return self
