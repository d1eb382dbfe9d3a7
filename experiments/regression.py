"""Shared recipe of the regression experiments: standardise with training statistics, lift an MLP,
infer weights and noise by SVI, and score the posterior predictive in the original units."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyro
import torch

import pyrobnn
from pyrobnn import likelihoods, metrics, priors
from pyrobnn.history import History
from pyrobnn.laplace import MAX_FULL, LaplaceGuide
from pyrobnn.mcmc import nuts
from pyrobnn.models.regression import MLPRegressor
from pyrobnn.runs import EpochLog, write_json

from .options import device_option, option, seed_option

GUIDES = ("meanfield", "laplace", "laplace_glm")


@dataclass
class RegressionConfig:
    hidden: tuple = option((50,), "hidden units, one number per layer", minimum=1)
    # optimiser steps (epochs follow from the data size and batch size)
    steps: int = option(4000, "optimiser steps", minimum=1)
    batch_size: int | None = None  # None: full batch up to 1024 rows, else 1024-row minibatches
    lr: float = option(0.01, "learning rate")
    final_lr: float = 0.001          # the learning rate decays geometrically from lr to final_lr
    num_particles: int = 4           # vectorised ELBO particles
    init_scale: float = 1e-3
    prior_scale: float | None = None  # None: Normal(0, gain / sqrt(fan_in)) per layer; else N(0, s) everywhere
    prior_gain: float = 1.0
    learn_prior_scales: bool = option(False, "learn each layer's prior std by maximising the ELBO (type-II maximum "
                                             "likelihood), starting from the fixed ones; with --inference nuts, NUTS "
                                             "then samples under the learned ones (empirical Bayes)")
    noise_prior_median: float = 0.5  # in standardised target units
    heteroscedastic: bool = option(False, "the net predicts the noise too")
    num_samples: int = option(1000, "posterior draws", minimum=1)
    calibrate: float = option(0.0, "hold out this fraction of the training rows to choose the noise level, then "
                                   "train on all of them (0 = off)", minimum=0, below=1)
    conformal: float = option(0.0, "split-conformal level, e.g. 0.9: calibrate intervals on --conformal-fraction of "
                                   "the training rows, kept out of training (0 = off)", minimum=0, below=1)
    conformal_fraction: float = option(0.2, "training rows reserved for --conformal", minimum=0, below=1)
    conformal_score: str = option("cqr", "conformal score", choices=("cqr", "normalized"))
    inference: str = option("vi", "vi (SVI with the mean-field guide) or nuts (the exact reference: pyrobnn.mcmc)",
                            choices=("vi", "nuts"))
    guide: str = option("meanfield", "the approximation --inference vi fits: meanfield, or laplace / laplace_glm (a "
                                     "MAP fit, then a Normal from the full Hessian there, with the plain or the "
                                     "linearised predictive)", choices=GUIDES)
    nuts_samples: int = option(300, "NUTS draws per chain (--inference nuts)", minimum=1)
    nuts_warmup: int = option(300, "NUTS warm-up steps per chain (--inference nuts)", minimum=1)
    nuts_chains: int = option(2, "NUTS chains, batched (--inference nuts)", minimum=1)
    max_tree_depth: int = option(7, "NUTS tree depth limit (--inference nuts)", minimum=1)
    nuts_dense_mass: bool = option(False, "NUTS adapts a dense mass matrix per chain (--inference nuts)")
    seed: int = seed_option()
    device: str = device_option()

    def validate(self) -> None:
        if self.guide != "meanfield" and (self.inference == "nuts" or self.learn_prior_scales):
            raise ValueError(f"--guide {self.guide} fits a MAP: it goes with --inference vi and without "
                             "--learn-prior-scales (the prior sigmas that maximise a MAP's objective shrink to zero)")


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
    learned = cfg.learn_prior_scales
    layer_priors = priors.fan_in_normal(net, cfg.prior_gain, learned) if cfg.prior_scale is None else {}
    default = (priors.LearnedNormal if learned else priors.Normal)(0.0, cfg.prior_scale or 1.0)
    bnn = pyrobnn.lift(net, prior=default, priors=layer_priors, likelihood=lik)
    if cfg.guide != "meanfield":
        return bnn, LaplaceGuide(bnn, init="net", linearized=cfg.guide == "laplace_glm")
    return bnn, pyrobnn.MeanFieldNormal(bnn, init="net", init_scale=cfg.init_scale)


def fit_regressor(x_tr: torch.Tensor, y_tr: torch.Tensor, cfg: RegressionConfig, progress: bool = False,
                  checkpoint=None, resume: bool = False, callback=None):
    """Train a Bayesian MLP on (x_tr, y_tr); returns (bnn, guide, (y_mean, y_std), history).
    ``checkpoint`` / ``resume`` / ``callback`` as in :func:`pyrobnn.fit`."""
    cfg.validate()
    pyro.clear_param_store()
    torch.manual_seed(cfg.seed)
    y_mean, y_std = standardisation(y_tr)
    bnn, guide = build_regressor(x_tr.shape[1], cfg)
    bnn.net.fit_inputs(x_tr)
    data = (x_tr, (y_tr - y_mean) / y_std)
    if cfg.inference == "nuts":  # every site is latent (weights and the noise), so NUTS samples them all
        start = time.perf_counter()
        if cfg.learn_prior_scales:  # empirical Bayes: the prior sigmas that maximise the ELBO, then NUTS under them
            _svi(bnn, guide, data, cfg, progress)
        post = nuts(bnn, data, cfg.nuts_samples, cfg.nuts_warmup, num_chains=cfg.nuts_chains,
                    max_tree_depth=cfg.max_tree_depth, dense_mass=cfg.nuts_dense_mass, init="map", seed=cfg.seed,
                    progress=progress)
        return bnn, post, (y_mean, y_std), History(records=[{"seconds": time.perf_counter() - start}])
    hist = _svi(bnn, guide, data, cfg, progress, checkpoint=checkpoint, resume=resume, callback=callback)
    if isinstance(guide, LaplaceGuide) and not hist.interrupted:  # the MAP is found: the Normal around it
        guide.approximate(bnn, data, "full" if guide.layout.dim <= MAX_FULL else "last_layer")
    return bnn, guide, (y_mean, y_std), hist


def _svi(bnn, guide, data, cfg: RegressionConfig, progress: bool, **run) -> History:
    """The experiments' SVI schedule: clipped Adam decaying geometrically from lr to final_lr over cfg.steps steps."""
    n = data[0].shape[0]
    bs = cfg.batch_size or (n if n <= 1024 else 1024)
    epochs = max(1, round(cfg.steps / math.ceil(n / bs)))
    point = isinstance(guide, LaplaceGuide)  # a MAP fit: one particle is exact, and Trace_ELBO takes Delta sites
    return pyrobnn.fit(bnn, guide, data, epochs=epochs, lr=cfg.lr, batch_size=bs,
                       num_particles=1 if point else cfg.num_particles, loss="trace" if point else "meanfield",
                       seed=cfg.seed, device=cfg.device, progress=progress, optimizer="clipped_adam",
                       lr_decay=(cfg.final_lr / cfg.lr) ** (1.0 / cfg.steps), checkpoint_every=max(1, epochs // 40),
                       **run)  # epochs are single steps here: no fsync'd state file after each


def holdout_noise_factor(x_tr: torch.Tensor, y_tr: torch.Tensor, cfg: RegressionConfig, fraction: float,
                         checkpoint=None, resume: bool = False):
    """Gal & Ghahramani's protocol for the noise level: train on a random (1 - fraction) of the
    training rows, choose the noise-std factor that maximises the log-likelihood of the held-out
    rest (:func:`pyrobnn.fit_noise_factor`); the caller then trains on all rows and applies it.
    Returns (factor, history of the held-out fit)."""
    if not 0 < fraction < 1:
        raise ValueError(f"calibration fraction must lie in (0, 1); got {fraction}")
    n_cal = round(fraction * len(y_tr))
    if n_cal < 10 or len(y_tr) - n_cal < 10:
        raise ValueError(f"calibration needs >= 10 rows on each side; {len(y_tr)} rows, fraction {fraction}")
    perm = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(cfg.seed))
    cal, rest = perm[:n_cal], perm[n_cal:]
    bnn, guide, scaling, hist = fit_regressor(x_tr[rest], y_tr[rest], cfg, checkpoint=checkpoint, resume=resume)
    if hist.interrupted:
        return 1.0, hist
    pp = pyrobnn.predict(bnn, guide, x_tr[cal], num_samples=cfg.num_samples, seed=cfg.seed).rescaled(*scaling)
    return pyrobnn.fit_noise_factor(pp, y_tr[cal]), hist


def evaluate(bnn, guide, y_scaling, x: torch.Tensor, y: torch.Tensor, num_samples: int, seed: int = 0,
             noise_factor: float = 1.0):
    """(report dict in original units, PosteriorPredictive in original units, noise std times
    ``noise_factor``)."""
    pp = pyrobnn.predict(bnn, guide, x, num_samples=num_samples, seed=seed).rescaled(*y_scaling)
    pp = pp.with_noise_factor(noise_factor) if noise_factor != 1.0 else pp
    rep = metrics.regression_report(pp, y)
    rep["calibration"] = metrics.calibration_curve(pp, y)
    return rep, pp


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (nan for one value)."""
    a = torch.tensor([float(v) for v in values], dtype=torch.float64)
    return float(a.mean()), float(a.std() / math.sqrt(len(a))) if len(a) > 1 else float("nan")


def over_splits(run_dir: Path, x: torch.Tensor, y: torch.Tensor, splits, model: RegressionConfig,
                resume: bool = False, on_split=None, progress: bool = False) -> list[dict]:
    """Train and score one model per (train, test) index pair in ``splits`` (seed ``model.seed + k``
    for split k), with the noise chosen on held-out training rows when ``model.calibrate`` > 0.
    Finished splits go to ``splits.json`` at once and a resume skips them. ``on_split(k, bnn, guide,
    scaling, pp, entry)`` sees each finished split (pp: test predictive in original units).
    With ``model.conformal`` a random ``conformal_fraction`` of each split's training rows is kept out of training
    (and of the noise calibration) to calibrate conformal intervals; ``entry["conformal"]`` reports them."""
    from . import conformal_eval, stop_if_interrupted  # late: experiments/__init__ is the package

    done = run_dir / "splits.json"
    per_split = json.loads(done.read_text()) if resume and done.is_file() else []
    for k in range(len(per_split), len(splits)):
        tr, te = splits[k]
        cfg_k = replace(model, seed=model.seed + k)
        if model.conformal:
            keep, cal = conformal_eval.reserve(len(tr), model.conformal, model.conformal_fraction, seed=cfg_k.seed)
            tr, cal = tr[keep], tr[cal]
        factor = 1.0
        if model.calibrate:
            factor, cal_hist = holdout_noise_factor(x[tr], y[tr], cfg_k, model.calibrate, resume=resume,
                                                    checkpoint=run_dir / f"calibration_train_state_{k}.pt")
            stop_if_interrupted(cal_hist, run_dir)
        bnn, guide, scaling, hist = fit_regressor(x[tr], y[tr], cfg_k, checkpoint=run_dir / f"train_state_{k}.pt",
                                                  resume=resume, callback=EpochLog(run_dir, f"history_split{k}"))
        stop_if_interrupted(hist, run_dir)
        rep, pp = evaluate(bnn, guide, scaling, x[te], y[te], model.num_samples, model.seed, factor)
        entry = {"split": k, "n_train": len(tr), "n_test": len(te), "noise_factor": factor,
                 **{m: v for m, v in rep.items() if m != "calibration"}}
        if bnn.prior_log_scales:  # type-II ML: the prior sigma each layer ended with, beside the fan-in start
            entry["prior_scales"] = bnn.prior_scales()
        if model.inference == "nuts":
            entry["nuts"] = {**guide.diagnostics(bnn, x[te]), "seconds": hist.records[0]["seconds"]}
        if factor != 1.0:
            plain = metrics.regression_report(pp.with_noise_factor(1.0 / factor), y[te])
            entry["uncalibrated"] = {m: plain[m] for m in ("log_likelihood", "coverage_95", "width_95")}
        if model.conformal:
            pp_cal = evaluate(bnn, guide, scaling, x[cal], y[cal], model.num_samples, model.seed + 1, factor)[1]
            entry["conformal"] = conformal_eval.regression(pp_cal, y[cal], pp, y[te], model.conformal,
                                                           model.conformal_score)
        if on_split is not None:
            on_split(k, bnn, guide, scaling, pp, {**rep, **entry})
        per_split.append(entry)
        write_json(done, per_split)
        for state in (f"train_state_{k}.pt", f"calibration_train_state_{k}.pt"):  # the result is in splits.json
            (run_dir / state).unlink(missing_ok=True)
        if progress:
            print(f"  split {k}: RMSE {rep['rmse']:.3f}  LL {rep['log_likelihood']:.3f}  "
                  f"95% coverage {rep['coverage_95']:.3f}", flush=True)
    return per_split


def summary(per_split: list[dict]) -> dict:
    """Mean and standard error over splits of RMSE, log-likelihood, 95% coverage and noise factor."""
    keys = ("rmse", "log_likelihood", "coverage_95", "width_95", "noise_factor")
    out: dict = {"splits": len(per_split), **{k: mean_se([s[k] for s in per_split]) for k in keys}}
    if all("uncalibrated" in s for s in per_split):
        plain = [s["uncalibrated"] for s in per_split]
        out["uncalibrated"] = {k: mean_se([p[k] for p in plain]) for k in plain[0]}
    if all("nuts" in s for s in per_split):
        diag = [s["nuts"] for s in per_split]
        out["nuts"] = {"rhat_max": max(d["rhat_max"] for d in diag),
                       "ess_bulk_min": min(d["ess_bulk_min"] for d in diag),
                       "divergences": sum(d["divergences"] for d in diag),
                       "seconds": mean_se([d["seconds"] for d in diag])}
    if all("prior_scales" in s for s in per_split):
        names = per_split[0]["prior_scales"]
        out["prior_scales"] = {k: mean_se([s["prior_scales"][k] for s in per_split]) for k in names}
    if all("conformal" in s for s in per_split):
        conf = [s["conformal"] for s in per_split]
        out["conformal"] = {"level": conf[0]["level"], "score": conf[0]["score"],
                            **{k: mean_se([c[k] for c in conf]) for k in
                               ("conformal_coverage", "conformal_width", "bayes_coverage", "bayes_width")}}
    return out
