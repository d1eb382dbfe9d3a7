"""Weight priors: small value objects that build a Pyro distribution for a parameter shape.

A prior is device-agnostic: ``prior.distribution(shape, device)`` builds the distribution on the
device of the parameter it replaces, so a lifted net's priors follow the net (``bnn.to("cuda")``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Union

import pyro.distributions as dist
import torch
from torch import nn


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"prior {name} must be a finite number > 0; got {value!r}")
    return float(value)


class Prior:
    """Base class: a factorised prior over every element of one parameter tensor."""

    def _base(self, device: torch.device, dtype: torch.dtype) -> dist.TorchDistribution:
        raise NotImplementedError

    def distribution(self, shape: torch.Size | tuple[int, ...], device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> dist.TorchDistribution:
        """The prior over a whole parameter of ``shape``: every element i.i.d., shape as event."""
        shape = torch.Size(shape)
        return self._base(torch.device(device or "cpu"), dtype).expand(shape).to_event(len(shape))

    def config(self) -> dict:
        """JSON-able description (written into run directories and checkpoints)."""
        return {"name": type(self).__name__, **self.__dict__}


@dataclass(frozen=True)
class _LocScale(Prior):
    loc: float = 0.0
    scale: float = 1.0
    # the Pyro distribution class, set by each subclass (a class variable, not a dataclass field)
    family: ClassVar[Optional[Callable[..., dist.TorchDistribution]]] = None

    def __post_init__(self):
        _positive("scale", self.scale)

    def _base(self, device: torch.device, dtype: torch.dtype) -> dist.TorchDistribution:
        if self.family is None:
            raise NotImplementedError(f"{type(self).__name__} has no distribution family")
        return self.family(torch.tensor(self.loc, device=device, dtype=dtype),
                           torch.tensor(self.scale, device=device, dtype=dtype))


@dataclass(frozen=True)
class Normal(_LocScale):
    """Normal(loc, scale) on every weight: the default, with an analytic KL against a Normal guide."""

    family = dist.Normal


@dataclass(frozen=True)
class LearnedNormal(_LocScale):
    """Normal(loc, sigma) whose sigma is learned with the guide by maximising the ELBO (type-II maximum likelihood,
    "empirical Bayes"), one sigma per layer (module), starting at ``scale``. ``lift`` keeps the sigmas as
    parameters of the lifted net (``bnn.prior_scales()`` reads them); the mean-field fast path and Pyro's ELBOs
    both train them, and NUTS and the Laplace approximation take them at their current values."""

    family = dist.Normal


@dataclass(frozen=True)
class Laplace(_LocScale):
    """Laplace(loc, scale) on every weight: a sparsity-leaning prior."""

    family = dist.Laplace


@dataclass(frozen=True)
class ScaleMixture(Prior):
    """Blundell et al. (2015): pi * N(0, sigma1^2) + (1 - pi) * N(0, sigma2^2), sigma1 > sigma2.

    The paper's grid: pi in {1/4, 1/2, 3/4}, -log sigma1 in {0, 1, 2}, -log sigma2 in {6, 7, 8}.
    There is no closed-form KL against a Normal guide, so ELBOs estimate that term by sampling.
    """

    pi: float = 0.5
    sigma1: float = 1.0
    sigma2: float = math.exp(-6)

    def __post_init__(self):
        _positive("sigma1", self.sigma1)
        _positive("sigma2", self.sigma2)
        if not 0.0 < self.pi < 1.0:
            raise ValueError(f"prior pi must lie in (0, 1); got {self.pi!r}")

    def _base(self, device: torch.device, dtype: torch.dtype) -> dist.TorchDistribution:
        mix = dist.Categorical(torch.tensor([self.pi, 1.0 - self.pi], device=device, dtype=dtype))
        comp = dist.Normal(torch.zeros(2, device=device, dtype=dtype),
                           torch.tensor([self.sigma1, self.sigma2], device=device, dtype=dtype))
        return dist.MixtureSameFamily(mix, comp)


class TensorNormal(Prior):
    """Normal(loc_i, scale_i) with a mean and a std for every element of the parameter (tensors of its shape), e.g.
    a previous posterior used as the next prior (:func:`from_posterior`). Closed-form KL against a Normal guide, on
    the fast path too; checkpoints hold the tensors."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        loc, scale = torch.as_tensor(loc, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32)
        if loc.shape != scale.shape:
            raise ValueError(f"TensorNormal: loc {tuple(loc.shape)} and scale {tuple(scale.shape)} differ in shape")
        if not torch.isfinite(loc).all() or not (torch.isfinite(scale) & (scale > 0)).all():
            raise ValueError("TensorNormal: loc must be finite and scale finite and > 0 everywhere")
        self.loc, self.scale = loc.detach(), scale.detach()

    def _base(self, device: torch.device, dtype: torch.dtype) -> dist.TorchDistribution:
        return dist.Normal(self.loc.to(device=device, dtype=dtype), self.scale.to(device=device, dtype=dtype))

    def distribution(self, shape: torch.Size | tuple[int, ...], device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> dist.TorchDistribution:
        shape = torch.Size(shape)
        if shape != self.loc.shape:
            raise ValueError(f"TensorNormal of shape {tuple(self.loc.shape)} given to a parameter of shape "
                             f"{tuple(shape)}")
        return self._base(torch.device(device or "cpu"), dtype).to_event(len(shape))

    def config(self) -> dict:
        return {"name": "TensorNormal", "shape": list(self.loc.shape), "mean_loc": float(self.loc.mean()),
                "mean_scale": float(self.scale.mean())}

    def __eq__(self, other) -> bool:
        return isinstance(other, TensorNormal) and torch.equal(self.loc, other.loc) and \
            torch.equal(self.scale, other.scale)

    __hash__ = None  # type: ignore[assignment]  # mutable tensors: not hashable

    def __repr__(self) -> str:
        return f"TensorNormal(shape={tuple(self.loc.shape)})"


def from_posterior(bnn, posterior, inflate: float = 1.0, x=None, num_samples: int = 1000) -> dict[str, TensorNormal]:
    """Per-parameter Normal priors from a posterior, for ``lift(..., priors=...)`` (Bayesian updating: the
    posterior after one data set is the prior for the next; variational continual learning).

    ``posterior``: a :class:`pyrobnn.MeanFieldNormal` guide (its means and stds, exactly), any other guide of
    ``bnn`` (moments of ``num_samples`` draws; ``x``, a batch of inputs, is what the guide is called with), or a
    dict of draws ``{site: [S, *shape]}``. ``inflate`` multiplies
    every std (> 1 widens the prior, e.g. against over-confidence). Keys are the net's parameter names; the
    tensors live on the net's device. The likelihood's own latent sites (e.g. a learned noise) are not included.
    """
    from .autoguides import MeanFieldNormal

    _positive("inflate", inflate)
    sites = list(bnn.net_sites)
    if isinstance(posterior, MeanFieldNormal):
        with torch.no_grad():
            moments = {k: (posterior.loc[k].detach(), posterior.scale(k).detach()) for k in sites}
    else:
        if not isinstance(posterior, dict) and x is None:
            raise ValueError("from_posterior: pass x (a batch of inputs) to draw from this guide")
        draws = posterior if isinstance(posterior, dict) else _guide_draws(bnn, posterior, x, num_samples)
        missing = [k for k in sites if k not in draws]
        if missing:
            raise ValueError(f"from_posterior: the posterior has no draws of {missing[0]!r} (a site of this net)")
        moments = {}
        for k in sites:
            d = torch.as_tensor(draws[k]).detach()
            if d.dim() < 1 or tuple(d.shape[1:]) != tuple(bnn.shapes[k]) or d.shape[0] < 2:
                raise ValueError(f"from_posterior: draws of {k!r} must be [S >= 2, *{tuple(bnn.shapes[k])}]; "
                                 f"got {tuple(d.shape)}")
            moments[k] = (d.mean(0), d.std(0).clamp_min(1e-12))
    dev = bnn.device
    return {k: TensorNormal(m.to(dev), (s * inflate).to(dev)) for k, (m, s) in moments.items()}


def _guide_draws(bnn, guide, x, num_samples: int) -> dict[str, torch.Tensor]:
    from .predictive import _weight_draws

    with torch.no_grad():
        return _weight_draws(bnn, guide, torch.as_tensor(x).to(bnn.device), int(num_samples))


PRIORS: dict[str, type[Prior]] = {"normal": Normal, "laplace": Laplace, "scale_mixture": ScaleMixture,
                                  "learned_normal": LearnedNormal}

#: What ``lift`` accepts for a prior: a Prior, a name from ``PRIORS``, ``{"name": ..., **params}``, or ``None``
#: (keep the parameter deterministic).
PriorSpec = Union[Prior, str, "dict[str, Any]", None]


def make_prior(spec: PriorSpec) -> Prior | None:
    """A Prior from a Prior, ``None`` (keep deterministic), a name, or ``{"name": ..., **params}``."""
    if spec is None or isinstance(spec, Prior):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, dict):
        params = dict(spec)
        name = str(params.pop("name", "")).lower()
        aliases = {"scalemixture": "scale_mixture"}
        name = aliases.get(name, name)
        if name not in PRIORS:
            raise ValueError(f"unknown prior {spec.get('name')!r}; choose one of {sorted(PRIORS)}")
        return PRIORS[name](**params)
    raise TypeError(f"prior must be a pyrobnn.priors.Prior, a name, a dict or None; got {type(spec).__name__}")


def fan_in_normal(net: nn.Module, gain: float = 1.0, learned: bool = False) -> dict[str, Prior]:
    """Per-layer overrides for ``lift(priors=...)``: Normal(0, gain / sqrt(fan_in)) on the weights and
    biases of every Linear/Conv layer, so the prior over functions does not widen with layer width
    (Neal 1996). ``gain`` of about sqrt(2) suits ReLU nets. ``learned``: :class:`LearnedNormal` priors that start
    at those scales."""
    _positive("gain", gain)
    out: dict[str, Prior] = {}
    for name, m in net.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fan_in = m.weight[0].numel()
            out[name] = (LearnedNormal if learned else Normal)(0.0, gain / math.sqrt(fan_in))
    if not out:
        raise ValueError("fan_in_normal: the net has no Linear or Conv layer")
    return out
