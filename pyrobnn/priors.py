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


PRIORS: dict[str, type[Prior]] = {"normal": Normal, "laplace": Laplace, "scale_mixture": ScaleMixture}

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


def fan_in_normal(net: nn.Module, gain: float = 1.0) -> dict[str, Prior]:
    """Per-layer overrides for ``lift(priors=...)``: Normal(0, gain / sqrt(fan_in)) on the weights and
    biases of every Linear/Conv layer, so the prior over functions does not widen with layer width
    (Neal 1996). ``gain`` of about sqrt(2) suits ReLU nets."""
    _positive("gain", gain)
    out: dict[str, Prior] = {}
    for name, m in net.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fan_in = m.weight[0].numel()
            out[name] = Normal(0.0, gain / math.sqrt(fan_in))
    if not out:
        raise ValueError("fan_in_normal: the net has no Linear or Conv layer")
    return out
