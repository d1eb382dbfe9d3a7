"""Likelihoods: the observation site of a lifted net, inside a minibatch-scaled data plate.

``pyro.plate("data", size=N, subsample=...)`` scales the log-likelihood of a minibatch of B rows by
N / B, so one minibatch step is an unbiased estimate of the full-data ELBO.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from .data import check_labels, check_targets


class Likelihood(nn.Module):
    """Base class. ``forward(out, y, data_size)`` samples or observes site ``"obs"``."""

    kind = "generic"

    def distribution(self, out: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def check(self, y: torch.Tensor, n_rows: int) -> torch.Tensor:
        return y

    def forward(self, out: torch.Tensor, y: torch.Tensor | None = None, data_size: int | None = None):
        n = out.shape[-2]
        if y is not None and y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} rows but the inputs have {n}")
        size = n if data_size is None else int(data_size)
        with pyro.plate("data", size=size, subsample=torch.arange(n, device=out.device)):
            return pyro.sample("obs", self.distribution(out), obs=y)

    def config(self) -> dict:
        return {"name": type(self).__name__}


class Categorical(Likelihood):
    """Class labels from logits: the net's last layer has one output per class."""

    kind = "classification"

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}")
        self.num_classes = None if num_classes is None else int(num_classes)

    def distribution(self, out):
        if self.num_classes is not None and out.shape[-1] != self.num_classes:
            raise ValueError(f"the net outputs {out.shape[-1]} logits but the likelihood has "
                             f"{self.num_classes} classes")
        return dist.Categorical(logits=out)

    def check(self, y, n_rows):
        return check_labels(y, self.num_classes, n_rows)

    def config(self):
        return {"name": "Categorical", "num_classes": self.num_classes}


class Normal(Likelihood):
    """Real targets: y ~ Normal(net(x), scale). ``scale=None`` learns the noise (a point estimate)."""

    kind = "regression"

    def __init__(self, scale: float | None = 1.0, init_scale: float = 1.0):
        super().__init__()
        if scale is not None and not scale > 0:
            raise ValueError(f"likelihood scale must be > 0; got {scale!r}")
        self.fixed_scale = None if scale is None else float(scale)
        if scale is None:
            # softplus(raw) = init_scale
            raw = torch.log(torch.expm1(torch.tensor(float(init_scale))))
            self.raw_scale = nn.Parameter(raw)

    @property
    def scale(self) -> torch.Tensor:
        if self.fixed_scale is not None:
            return torch.tensor(self.fixed_scale)
        return softplus(self.raw_scale)

    def distribution(self, out):
        loc = out.squeeze(-1) if out.shape[-1] == 1 else out
        scale = self.scale.to(out.device) if self.fixed_scale is not None else self.scale
        d = dist.Normal(loc, scale)
        return d if out.shape[-1] == 1 else d.to_event(1)

    def check(self, y, n_rows):
        return check_targets(y, n_rows)

    def config(self):
        return {"name": "Normal", "scale": self.fixed_scale}


LIKELIHOODS = {"categorical": Categorical, "normal": Normal}


def make_likelihood(spec) -> Likelihood:
    """A Likelihood from an instance or a name (``"categorical"``, ``"normal"``)."""
    if isinstance(spec, Likelihood):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {spec!r}; choose one of {sorted(LIKELIHOODS)}")
        return LIKELIHOODS[key]()
    raise TypeError(f"likelihood must be a pyrobnn Likelihood or a name; got {type(spec).__name__}")
