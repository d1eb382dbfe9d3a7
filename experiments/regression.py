"""Shared recipe of the regression experiments: standardise with training statistics, lift an MLP,
infer weights and noise by SVI, and score the posterior predictive in the original units."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import torch

import pyrobnn
from models.regression import MLPRegressor
from pyrobnn import likelihoods, metrics, priors


@dataclass
class RegressionConfig:
    hidden: tuple = (50,)
    steps: int = 4000            # optimiser steps (epochs follow from the data size and batch size)
    batch_size: int | None = None  # None: full batch up to 1024 rows, else 1024-row minibatches
    lr: float = 0.01
    final_lr: float = 0.001          # the learning rate decays geometrically from lr to final_lr
    num_particles: int = 4           # vectorised ELBO particles
    init_scale: float = 1e-3
    prior_scale: float | None = None  # None: Normal(0, gain / sqrt(fan_in)) per layer; else N(0, s) everywhere
    prior_gain: float = 1.0
    noise_prior_median: float = 0.5  # in standardised target units
    heteroscedastic: bool = False
    num_samples: int = 1000
    seed: int = 0
    device: str = "cpu"


def standardisation(y: torch.Tensor) -> tuple[float, float]:
    std = float(y.std())
    if not std > 0:
        raise ValueError("cannot standardise the target: it has zero variance in the training split")
    return float(y.mean()), std


def build_regressor(n_in: int, cfg: RegressionConfig):
    """(bnn, guide) of the experiments' Bayesian MLP: fan-in scaled Normal priors (or N(0, prior_scale)),
    inferred noise with a log-normal prior (or heteroscedastic), a mean-field guide started at the net."""
    net = MLPRegressor(n_in, cfg.hidden, 2 if cfg.heteroscedastic else 1)
    if cfg.heteroscedastic:
        lik = likelihoods.Normal(scale=None, heteroscedastic=True)
    else:
        lik = likelihoods.Normal(scale=None, log_scale_prior=priors.Normal(math.log(cfg.noise_prior_median), 1.0),
                                 init_scale=cfg.noise_prior_median)
    layer_priors = priors.fan_in_normal(net, cfg.prior_gain) if cfg.prior_scale is None else {}
    bnn = pyrobnn.lift(net, prior=priors.Normal(0.0, cfg.prior_scale or 1.0), priors=layer_priors, likelihood=lik)
    return bnn, pyrobnn.MeanFieldNormal(bnn, init="net", init_scale=cfg.init_scale)


def fit_regressor(x_tr: torch.Tensor, y_tr: torch.Tensor, cfg: RegressionConfig, progress: bool = False,
                  checkpoint=None, resume: bool = False, callback=None):
    """Train a Bayesian MLP on (x_tr, y_tr); returns (bnn, guide, (y_mean, y_std), history).
    ``checkpoint`` / ``resume`` / ``callback`` as in :func:`pyrobnn.fit`."""
    pyro.clear_param_store()
    torch.manual_seed(cfg.seed)
    y_mean, y_std = standardisation(y_tr)
    bnn, guide = build_regressor(x_tr.shape[1], cfg)
    bnn.net.fit_inputs(x_tr)
    n = x_tr.shape[0]
    bs = cfg.batch_size or (n if n <= 1024 else 1024)
    epochs = max(1, round(cfg.steps / math.ceil(n / bs)))
    hist = pyrobnn.fit(bnn, guide, (x_tr, (y_tr - y_mean) / y_std), epochs=epochs, lr=cfg.lr, batch_size=bs,
                       num_particles=cfg.num_particles, seed=cfg.seed, device=cfg.device, progress=progress,
                       optimizer="clipped_adam", lr_decay=(cfg.final_lr / cfg.lr) ** (1.0 / cfg.steps),
                       checkpoint=checkpoint, checkpoint_every=max(1, epochs // 40), resume=resume,
                       callback=callback)  # epochs are single steps here: no fsync'd state file after each
    return bnn, guide, (y_mean, y_std), hist


def evaluate(bnn, guide, y_scaling, x: torch.Tensor, y: torch.Tensor, num_samples: int, seed: int = 0):
    """(report dict in original units, PosteriorPredictive in original units)."""
    pp = pyrobnn.predict(bnn, guide, x, num_samples=num_samples, seed=seed).rescaled(*y_scaling)
    rep = metrics.regression_report(pp, y)
    rep["calibration"] = metrics.calibration_curve(pp, y)
    return rep, pp
