"""Likelihoods: the observation site of a lifted net, inside a minibatch-scaled data plate.

``pyro.plate("data", size=N, subsample=...)`` scales the log-likelihood of a minibatch of B rows by
N / B, so one minibatch step is an unbiased estimate of the full-data ELBO.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ._types import ArrayLike
from .data import check_labels, check_targets

if TYPE_CHECKING:
    from .priors import PriorSpec


class Likelihood(nn.Module):
    """Base class. ``forward(out, y, data_size, latents)`` samples or observes site ``"obs"``.

    A likelihood may own latent sites of its own (e.g. a noise scale with a prior): ``latents()``
    names them with their shape and prior, and lift turns them into sample sites like weights.
    """

    kind = "generic"

    def latents(self) -> dict:
        """{site name: (shape, prior)} of the likelihood's own latent variables."""
        return {}

    def initial_latents(self) -> dict[str, torch.Tensor]:
        """Starting values of the latent sites (used to initialise guides)."""
        return {}

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """The per-row distribution of y given the net's outputs ``out`` (and the latent sites' values)."""
        raise NotImplementedError

    def check(self, y: ArrayLike, n_rows: int) -> torch.Tensor:
        """Targets ``y`` checked and converted for this likelihood, one per input row."""
        return torch.as_tensor(y)

    def forward(self, out: torch.Tensor, y: torch.Tensor | None = None, data_size: int | None = None,
                latents: dict | None = None) -> torch.Tensor:
        """Sample (``y=None``) or observe site ``"obs"`` in a data plate of ``data_size`` rows."""
        n = out.shape[-2]
        if y is not None and y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} rows but the inputs have {n}")
        size = n if data_size is None else int(data_size)
        with pyro.plate("data", size=size, subsample=torch.arange(n, device=out.device)):
            return pyro.sample("obs", self.distribution(out, latents), obs=y)

    def config(self) -> dict:
        """JSON-able description (written into run directories and checkpoints)."""
        return {"name": type(self).__name__}


class Categorical(Likelihood):
    """Class labels from logits: the net's last layer has one output per class."""

    kind = "classification"

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}")
        self.num_classes = None if num_classes is None else int(num_classes)

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """Categorical over the classes, logits ``out[..., C]``."""
        if self.num_classes is not None and out.shape[-1] != self.num_classes:
            raise ValueError(f"the net outputs {out.shape[-1]} logits but the likelihood has "
                             f"{self.num_classes} classes")
        return dist.Categorical(logits=out)

    def check(self, y: ArrayLike, n_rows: int) -> torch.Tensor:
        """Integer labels in [0, num_classes), one per row."""
        return check_labels(y, self.num_classes, n_rows)

    def config(self) -> dict:
        """JSON-able description (written into run directories and checkpoints)."""
        return {"name": "Categorical", "num_classes": self.num_classes}


NOISE_SITE = "obs_log_scale"


class Normal(Likelihood):
    """Real targets, y ~ Normal(loc, scale), the net's output ``[..., 1]`` giving loc.

    scale: a fixed noise std (float); or ``None`` to learn it, as a point estimate, or, with
    ``log_scale_prior`` (a prior on log sigma, e.g. ``priors.Normal(math.log(0.5), 1.0)``, i.e. a
    log-normal prior on sigma), as a latent site ``"obs_log_scale"`` that the guide infers.
    heteroscedastic: the net outputs ``[..., 2]``: loc and a raw scale, sigma = softplus(raw) + 1e-3.
    """

    kind = "regression"
    MIN_SCALE = 1e-3

    def __init__(self, scale: float | None = 1.0, log_scale_prior: PriorSpec = None, heteroscedastic: bool = False,
                 init_scale: float = 1.0):
        super().__init__()
        from .priors import make_prior

        if heteroscedastic and (scale is not None or log_scale_prior is not None):
            raise ValueError("a heteroscedastic likelihood takes its scale from the net: pass scale=None "
                             "and no log_scale_prior")
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"likelihood scale must be > 0 or None (learned); got {scale!r}")
        if log_scale_prior is not None and scale is not None:
            raise ValueError("log_scale_prior needs scale=None (the noise is then inferred)")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0; got {init_scale!r}")
        self.fixed_scale = None if scale is None else float(scale)
        self.heteroscedastic = bool(heteroscedastic)
        self.log_scale_prior = make_prior(log_scale_prior)
        self.init_scale = float(init_scale)
        if scale is None and log_scale_prior is None and not heteroscedastic:
            self.raw_scale = nn.Parameter(torch.log(torch.expm1(torch.tensor(float(init_scale)))))

    def latents(self) -> dict:
        """``{"obs_log_scale": (shape, prior)}`` when the noise is inferred, else nothing."""
        return {} if self.log_scale_prior is None else {NOISE_SITE: (torch.Size(), self.log_scale_prior)}

    def initial_latents(self) -> dict[str, torch.Tensor]:
        """log(init_scale) for the inferred noise site, if there is one."""
        return {} if self.log_scale_prior is None else {NOISE_SITE: torch.tensor(math.log(self.init_scale))}

    def loc(self, out: torch.Tensor) -> torch.Tensor:
        """The predictive mean: the net's first output."""
        return out[..., 0]

    def scale(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """Noise std, broadcastable against ``loc(out)``."""
        if self.heteroscedastic:
            return softplus(out[..., 1]) + self.MIN_SCALE
        if self.fixed_scale is not None:
            return torch.tensor(self.fixed_scale, device=out.device, dtype=out.dtype)
        if self.log_scale_prior is None:
            return softplus(self.raw_scale)
        if latents is None or NOISE_SITE not in latents:
            raise ValueError(f"this likelihood infers its noise: pass latents holding {NOISE_SITE!r}")
        log_s = latents[NOISE_SITE]
        # per-draw noise [S] (or the plate-broadcast [S, 1]) against loc [S, N]
        return log_s.reshape(*log_s.shape, *([1] * (out.dim() - 1 - log_s.dim()))).exp()

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """Normal(loc(out), scale(out, latents)) per row."""
        want = 2 if self.heteroscedastic else 1
        if out.shape[-1] != want:
            raise ValueError(f"the net must output {want} value(s) per row for this likelihood; got {out.shape[-1]}")
        return dist.Normal(self.loc(out), self.scale(out, latents))

    def check(self, y: ArrayLike, n_rows: int) -> torch.Tensor:
        """Real targets without NaN/inf, 1-D (a ``[rows, 1]`` column is flattened)."""
        y = check_targets(y, n_rows)
        if y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dim() != 1:
            raise ValueError(f"targets must be 1-D [rows] (or [rows, 1]); got shape {tuple(y.shape)}")
        return y

    def config(self) -> dict:
        """JSON-able description (written into run directories and checkpoints)."""
        return {"name": "Normal", "scale": self.fixed_scale, "heteroscedastic": self.heteroscedastic,
                "log_scale_prior": None if self.log_scale_prior is None else self.log_scale_prior.config()}


LIKELIHOODS = {"categorical": Categorical, "normal": Normal}


def make_likelihood(spec: Likelihood | str) -> Likelihood:
    """A Likelihood from an instance or a name (``"categorical"``, ``"normal"``)."""
    if isinstance(spec, Likelihood):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {spec!r}; choose one of {sorted(LIKELIHOODS)}")
        return LIKELIHOODS[key]()
    raise TypeError(f"likelihood must be a pyrobnn Likelihood or a name; got {type(spec).__name__}")
