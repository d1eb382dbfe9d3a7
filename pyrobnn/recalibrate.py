"""Post-hoc recalibration of a posterior predictive on held-out data: one scalar, chosen to maximise
the mean log predictive density of held-out targets on a grid in log space (5% steps, then 1% steps
around the best).

- Regression, :func:`fit_noise_factor`: with one noise level shared by all inputs, the ELBO sets
  sigma^2 to the training residual variance *plus* the weight posterior's variance of the fit at the
  training points (the expected log-likelihood averages over weight draws), and the predictive then
  adds the epistemic variance again, so mean-field intervals come out wide. Choosing the noise
  precision on held-out data is Gal & Ghahramani's (2016) protocol for the UCI benchmark.
- Classification, :func:`fit_temperature`: every draw's logits divided by one temperature (Guo et
  al. 2017; for Bayesian nets, Laves et al. 2019), which mends a predictive made under-confident by
  the KL term (or over-confident) without changing the predicted classes of the draws.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._types import ArrayLike
from .predictive import PosteriorPredictive


def _best_on_grid(score: Callable[[float], float], low: float, high: float, what: str) -> float:
    if not 0 < low < 1 < high:
        raise ValueError(f"need 0 < low < 1 < high; got low={low}, high={high}")
    grid = torch.exp(torch.arange(math.log(low), math.log(high), math.log(1.05))).tolist()
    coarse = max(range(len(grid)), key=lambda i: score(grid[i]))
    if coarse in (0, len(grid) - 1):
        raise ValueError(f"the best {what} lies on the edge of [{low}, {high}]: widen the range")
    fine = [grid[coarse] * 1.01 ** k for k in range(-5, 6)]
    return max(fine, key=score)


def _targets(pp: PosteriorPredictive, y: ArrayLike) -> torch.Tensor:
    y = torch.as_tensor(y, device=pp.outputs.device).reshape(-1)
    if y.numel() != pp.outputs.shape[1] or (y.is_floating_point() and not torch.isfinite(y).all()):
        raise ValueError(f"y must hold {pp.outputs.shape[1]} finite targets, one per input; got {y.numel()}")
    return y


def fit_noise_factor(pp: PosteriorPredictive, y: ArrayLike, low: float = 0.2, high: float = 5.0) -> float:
    """The factor on every draw's noise std that maximises the held-out log-likelihood of ``y``."""
    pp._regression()
    y = _targets(pp, y).to(pp.outputs.dtype)
    return _best_on_grid(lambda c: float(pp.with_noise_factor(c).log_likelihood(y).mean()), low, high, "noise factor")


def fit_temperature(pp: PosteriorPredictive, y: ArrayLike, low: float = 0.2, high: float = 5.0) -> float:
    """The temperature on every draw's logits that maximises the held-out log-likelihood of labels ``y``."""
    pp._need("classification")
    y = _targets(pp, y).long()
    return _best_on_grid(lambda t: float(pp.with_temperature(t).log_likelihood(y).mean()), low, high, "temperature")
