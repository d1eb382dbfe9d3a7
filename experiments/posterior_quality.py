"""How good is each approximate posterior? Every guide and NUTS on the same egg split, measured against NUTS.

    pyrobnn run posterior-quality --data ../shared/data/egg_times/egg_times.csv

Fits mean-field (pyrobnn's fast path), Pyro's AutoNormal, a low-rank-plus-diagonal Normal over all weights, a
structured guide (full covariance on the last layer) and the Laplace approximation at the MAP, then runs NUTS
(batched chains from MAP starts) as the reference. Per method: test accuracy / NLL / ECE, the mean total-variation
distance between its predictive class probabilities and NUTS's (on the test rows and along the figure's slice),
and the fit time. Figure ``probability_curves.png``: outcome probabilities against boiling time at 55 g, one curve
per method over NUTS's 5-95% band. Only the egg data set is wired in so far.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass

import pyro
import torch

import pyrobnn
from pyrobnn import plots
from pyrobnn.autoguides import auto_normal, low_rank, structured
from pyrobnn.checkpoint import save_posterior
from pyrobnn.laplace import LaplaceGuide
from pyrobnn.mcmc import nuts
from pyrobnn.metrics import classification_report
from pyrobnn.models.egg import CLASSES, EggNet
from pyrobnn.runs import write_json

from . import open_run_dir, write_results
from .egg_data import SIMULATED_LABEL, load_egg_csv, simulate_eggs, split_last
from .options import option, out_option, seed_option

METHODS = ("meanfield", "autonormal", "lowrank", "structured", "laplace")


@dataclass
class PosteriorQualityConfig:
    data: str | None = option(None, "path to egg_times.csv (default: $PYROBNN_EGG_CSV, else simulated)")
    holdout: int = 50
    hidden: tuple = option((16,), "hidden layer widths of the egg net")
    methods: tuple = option(METHODS, "approximations to compare with NUTS", item_type=str)
    epochs: int = option(300, "SVI epochs per approximation", minimum=1)
    lr: float = option(0.01, "learning rate")
    batch_size: int = option(64, "minibatch size", minimum=1)
    rank: int = option(10, "rank of the low-rank guide", minimum=1)
    laplace: str = option("full", "Laplace curvature", choices=("full", "last_layer", "diagonal"))
    nuts_samples: int = option(500, "NUTS draws per chain", minimum=1)
    nuts_warmup: int = option(500, "NUTS warm-up steps per chain", minimum=1)
    chains: int = option(4, "NUTS chains (batched)", minimum=1)
    max_tree_depth: int = option(8, "NUTS tree depth limit", minimum=1)
    num_samples: int = option(2000, "predictive draws per method", minimum=1)
    seed: int = seed_option()
    out: str = out_option()
    progress: bool = True

    def validate(self):
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r}; choose from {list(METHODS)}")


def _guide(name: str, bnn, cfg: PosteriorQualityConfig):
    if name == "meanfield":
        return pyrobnn.MeanFieldNormal(bnn), "meanfield"
    if name == "autonormal":
        return auto_normal(bnn), "trace"
    if name == "lowrank":
        return low_rank(bnn, rank=cfg.rank), "trace"
    if name == "structured":
        return structured(bnn), "trace"
    return LaplaceGuide(bnn), "trace"


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over rows of 0.5 * sum |p - q| between two ``[N, C]`` class-probability tables."""
    return float(0.5 * (p - q).abs().sum(-1).mean())


def run(cfg: PosteriorQualityConfig, resume_dir=None) -> dict:
    """Fit every method and NUTS, compare, draw the figure; writes config.json, metrics.json and the figure."""
    cfg.validate()

    path = cfg.data or os.environ.get("PYROBNN_EGG_CSV")
    df, source = (load_egg_csv(path), str(path)) if path else (simulate_eggs(seed=cfg.seed), SIMULATED_LABEL)
    train, test = split_last(df, cfg.holdout)

    def tensors(d):
        return (torch.tensor(d[["weight", "time"]].to_numpy(), dtype=torch.float32),
                torch.tensor(d["outcome"].to_numpy()))

    (x, y), (xt, yt) = tensors(train), tensors(test)
    grid = torch.linspace(0.0, 8.0, 81)
    xg = torch.stack([torch.full_like(grid, 55.0), grid], -1)
    run_dir = open_run_dir(cfg, cfg.out, "posterior-quality", resume_dir)
    torch.manual_seed(cfg.seed)
    base = EggNet(tuple(cfg.hidden))
    base.standardize.fit(x)
    prior = pyrobnn.priors.Normal(0.0, 1.0)

    rows, curves = {}, {}
    for name in cfg.methods:
        pyro.clear_param_store()
        bnn = pyrobnn.lift(copy.deepcopy(base), prior=prior)
        guide, loss = _guide(name, bnn, cfg)
        start = time.perf_counter()
        hist = pyrobnn.fit(bnn, guide, (x, y), epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, loss=loss,
                           seed=cfg.seed, progress=cfg.progress)
        if isinstance(guide, LaplaceGuide):
            guide.approximate(bnn, (x, y), cfg.laplace)
        seconds = time.perf_counter() - start
        pp = pyrobnn.predict(bnn, guide, torch.cat([xt, xg]), num_samples=cfg.num_samples, seed=cfg.seed)
        probs = pp.probs
        rows[name] = {**classification_report(probs[:, :len(xt)].mean(0), yt), "fit_seconds": seconds,
                      "loss_first_epoch": hist.records[0]["loss"], "loss_last_epoch": hist.records[-1]["loss"]}
        curves[name] = probs

    pyro.clear_param_store()
    bnn = pyrobnn.lift(copy.deepcopy(base), prior=prior)
    start = time.perf_counter()
    post = nuts(bnn, (x, y), cfg.nuts_samples, cfg.nuts_warmup, num_chains=cfg.chains, init="map",
                max_tree_depth=cfg.max_tree_depth, seed=cfg.seed, progress=cfg.progress)
    seconds = time.perf_counter() - start
    diag = post.diagnostics(bnn, xt)
    ref = pyrobnn.predict(bnn, post, torch.cat([xt, xg]), num_samples=cfg.chains * cfg.nuts_samples).probs
    rows["nuts"] = {**classification_report(ref[:, :len(xt)].mean(0), yt), "fit_seconds": seconds,
                    "diagnostics": diag}
    ref_test, ref_grid = ref[:, :len(xt)].mean(0), ref[:, len(xt):]
    for name, probs in curves.items():
        rows[name]["tv_to_nuts_test"] = total_variation(probs[:, :len(xt)].mean(0), ref_test)
        rows[name]["tv_to_nuts_slice"] = total_variation(probs[:, len(xt):].mean(0), ref_grid.mean(0))
    save_posterior(run_dir / "nuts_posterior.pt", bnn, post, x[:1], meta={"diagnostics": diag})

    band = (ref_grid.quantile(0.05, 0), ref_grid.quantile(0.95, 0))
    lines = {"NUTS (mean)": ref_grid.mean(0), **{k: v[:, len(xt):].mean(0) for k, v in curves.items()}}
    fig = plots.probability_curves(grid, lines, band, CLASSES, "boiling time (min) at 55 g", "NUTS 5-95%",
                                   f"Egg net {'-'.join(map(str, (2, *cfg.hidden, 3)))}: every approximation "
                                   f"against NUTS ({cfg.chains} chains x {cfg.nuts_samples})")
    fig.savefig(run_dir / "probability_curves.png", dpi=110)
    plots.plt.close(fig)
    metrics = {"source": source, "n_train": len(y), "n_test": len(yt), "methods": rows}
    write_json(run_dir / "table.json", [{"method": k, **{m: v for m, v in r.items() if m != "diagnostics"}}
                                        for k, r in rows.items()])
    write_results(run_dir, metrics)
    return {**metrics, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """The comparison table ``pyrobnn run posterior-quality`` prints."""
    print(f"data: {res['source']}  ({res['n_train']} train / {res['n_test']} held out)")
    print(f"{'method':<12}{'accuracy':>9}{'NLL':>8}{'ECE':>8}{'TV test':>9}{'TV slice':>10}{'fit s':>8}")
    for name, r in res["methods"].items():
        tv = (f"{r['tv_to_nuts_test']:>9.3f}{r['tv_to_nuts_slice']:>10.3f}" if "tv_to_nuts_test" in r
              else f"{'-':>9}{'-':>10}")
        print(f"{name:<12}{r['accuracy']:>9.3f}{r['nll']:>8.3f}{r['ece']:>8.3f}{tv}{r['fit_seconds']:>8.1f}")
    d = res["methods"]["nuts"]["diagnostics"]
    print(f"NUTS: predictive R-hat max {d['rhat_max']:.3f}, bulk ESS min {d['ess_bulk_min']:.0f}, "
          f"{d['divergences']} divergences; run directory {res['run_dir']}")
