"""How good is each approximate posterior? Every guide and NUTS on the same split, measured against NUTS.

    pyrobnn run posterior-quality --data ../shared/data/egg_times/egg_times.csv
    pyrobnn run posterior-quality --data-set yacht --data-dir ../shared/data/uci_regression

Fits mean-field (pyrobnn's fast path), Pyro's AutoNormal, a low-rank-plus-diagonal Normal over all weights, a
structured guide (full covariance on the last layer) and the Laplace approximation at the MAP (its predictive
from the plain net, and from the net linearised at the MAP: ``laplace_glm``), then runs NUTS (batched chains
from MAP starts) as the reference. Per method: test accuracy / NLL / ECE, the mean total-variation distance
between its predictive class probabilities and NUTS's (on the test rows and along the figure's slice), and the fit
time. Figure ``probability_curves.png``: outcome probabilities against boiling time at 55 g, one curve
per method over NUTS's 5-95% band.

UCI sets (boston, yacht, concrete; the first standard split, a 1x50 net with the UCI experiment's priors and inferred
noise): test RMSE / log-likelihood / 95% coverage in original units, the mean over test rows of the 1-Wasserstein
distance between the method's predictive distribution and NUTS's, and the mean ratio of predictive standard
deviations (method / NUTS), with the two parts of the predictive spread (mean epistemic std and noise std).
Figure ``regression_slice.png``: every method's 95% band along the input most correlated
with the target (the others at their training means) over NUTS's.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass

import pyro
import torch

import pyrobnn
from pyrobnn import metrics, plots
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

METHODS = ("meanfield", "autonormal", "lowrank", "structured", "laplace", "laplace_glm")


DATA_SETS = ("egg", "boston", "yacht", "concrete")


@dataclass
class PosteriorQualityConfig:
    data_set: str = option("egg", "data set", choices=DATA_SETS)
    data: str | None = option(None, "path to egg_times.csv (default: $PYROBNN_EGG_CSV, else simulated)")
    data_dir: str | None = option(None, "UCI folder with bostonHousing/, yacht/, ... (default: $PYROBNN_UCI_DIR)")
    holdout: int = 50
    hidden: tuple = option((16,), "hidden layer widths of the egg net (UCI: 50)")
    steps: int = option(2000, "UCI: full-batch SVI steps per approximation", minimum=1)
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
    return LaplaceGuide(bnn, linearized=name == "laplace_glm"), "trace"


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over rows of 0.5 * sum |p - q| between two ``[N, C]`` class-probability tables."""
    return float(0.5 * (p - q).abs().sum(-1).mean())


def _fit(name: str, bnn, cfg: PosteriorQualityConfig, data, epochs: int, batch_size: int):
    """Fit one approximation; returns (guide, seconds, the loss of the first and the last epoch)."""
    guide, loss = _guide(name, bnn, cfg)
    start = time.perf_counter()
    hist = pyrobnn.fit(bnn, guide, data, epochs=epochs, lr=cfg.lr, batch_size=batch_size, loss=loss, seed=cfg.seed,
                       progress=cfg.progress)
    if isinstance(guide, LaplaceGuide):
        guide.approximate(bnn, data, cfg.laplace)
    return guide, time.perf_counter() - start, {"loss_first_epoch": hist.records[0]["loss"],
                                                "loss_last_epoch": hist.records[-1]["loss"]}


def _reference(bnn, cfg: PosteriorQualityConfig, data, x_check, run_dir):
    """NUTS from MAP starts, its diagnostics at ``x_check`` and its seconds; the posterior is saved."""
    start = time.perf_counter()
    post = nuts(bnn, data, cfg.nuts_samples, cfg.nuts_warmup, num_chains=cfg.chains, init="map",
                max_tree_depth=cfg.max_tree_depth, seed=cfg.seed, progress=cfg.progress)
    seconds = time.perf_counter() - start
    diag = post.diagnostics(bnn, x_check)
    save_posterior(run_dir / "nuts_posterior.pt", bnn, post, data[0][:1], meta={"diagnostics": diag})
    return post, seconds, diag


def _egg(cfg: PosteriorQualityConfig, run_dir) -> dict:
    path = cfg.data or os.environ.get("PYROBNN_EGG_CSV")
    df, source = (load_egg_csv(path), str(path)) if path else (simulate_eggs(seed=cfg.seed), SIMULATED_LABEL)
    train, test = split_last(df, cfg.holdout)

    def tensors(d):
        return (torch.tensor(d[["weight", "time"]].to_numpy(), dtype=torch.float32),
                torch.tensor(d["outcome"].to_numpy()))

    (x, y), (xt, yt) = tensors(train), tensors(test)
    grid = torch.linspace(0.0, 8.0, 81)
    xq = torch.cat([xt, torch.stack([torch.full_like(grid, 55.0), grid], -1)])
    torch.manual_seed(cfg.seed)
    base = EggNet(tuple(cfg.hidden))
    base.standardize.fit(x)

    def lifted():
        pyro.clear_param_store()
        return pyrobnn.lift(copy.deepcopy(base), prior=pyrobnn.priors.Normal(0.0, 1.0))

    rows, curves = {}, {}
    for name in cfg.methods:
        bnn = lifted()
        guide, seconds, losses = _fit(name, bnn, cfg, (x, y), cfg.epochs, cfg.batch_size)
        probs = pyrobnn.predict(bnn, guide, xq, num_samples=cfg.num_samples, seed=cfg.seed).probs
        rows[name] = {**classification_report(probs[:, :len(xt)].mean(0), yt), "fit_seconds": seconds, **losses}
        curves[name] = probs
    bnn = lifted()
    post, seconds, diag = _reference(bnn, cfg, (x, y), xt, run_dir)
    ref = pyrobnn.predict(bnn, post, xq, num_samples=cfg.chains * cfg.nuts_samples).probs
    rows["nuts"] = {**classification_report(ref[:, :len(xt)].mean(0), yt), "fit_seconds": seconds,
                    "diagnostics": diag}
    ref_test, ref_grid = ref[:, :len(xt)].mean(0), ref[:, len(xt):]
    for name, probs in curves.items():
        rows[name]["tv_to_nuts_test"] = total_variation(probs[:, :len(xt)].mean(0), ref_test)
        rows[name]["tv_to_nuts_slice"] = total_variation(probs[:, len(xt):].mean(0), ref_grid.mean(0))
    band = (ref_grid.quantile(0.05, 0), ref_grid.quantile(0.95, 0))
    lines = {"NUTS (mean)": ref_grid.mean(0), **{k: v[:, len(xt):].mean(0) for k, v in curves.items()}}
    fig = plots.probability_curves(grid, lines, band, CLASSES, "boiling time (min) at 55 g", "NUTS 5-95%",
                                   f"Egg net {'-'.join(map(str, (2, *cfg.hidden, 3)))}: every approximation "
                                   f"against NUTS ({cfg.chains} chains x {cfg.nuts_samples})")
    fig.savefig(run_dir / "probability_curves.png", dpi=110)
    plots.plt.close(fig)
    return {"source": source, "n_train": len(y), "n_test": len(yt), "methods": rows}


def wasserstein1(a: torch.Tensor, b: torch.Tensor, points: int = 200) -> float:
    """Mean over inputs of the 1-Wasserstein distance between two predictive samples ``[S_a, N]`` and ``[S_b, N]``
    (the mean absolute difference of their quantile functions on a grid of ``points`` levels)."""
    u = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    return float((torch.quantile(a.double(), u, 0) - torch.quantile(b.double(), u, 0)).abs().mean())


def _uci(cfg: PosteriorQualityConfig, run_dir) -> dict:
    from .regression import RegressionConfig, build_regressor, standardisation
    from .uci import UCIConfig, data_folder, load, split

    folder = data_folder(UCIConfig(dataset=cfg.data_set, data_dir=cfg.data_dir))
    x_all, y_all, _ = load(folder)
    tr, te = split(folder, 0)
    x, y_raw, xt, yt = x_all[tr], y_all[tr], x_all[te], y_all[te]
    scaling = standardisation(y_raw)
    y = (y_raw - scaling[0]) / scaling[1]
    feature = int(torch.stack([torch.corrcoef(torch.stack([x[:, j], y]))[0, 1] for j in range(x.shape[1])])
                  .nan_to_num().abs().argmax())
    grid = torch.linspace(float(x[:, feature].min()), float(x[:, feature].max()), 60)
    xs = x.mean(0).expand(len(grid), -1).clone()
    xs[:, feature] = grid
    xq = torch.cat([xt, xs])
    model = RegressionConfig(seed=cfg.seed)

    def lifted():
        pyro.clear_param_store()
        torch.manual_seed(cfg.seed)
        bnn = build_regressor(x.shape[1], model)[0]
        bnn.net.fit_inputs(x)
        return bnn

    def scored(bnn, guide, n):
        pp = pyrobnn.predict(bnn, guide, xq, num_samples=n, seed=cfg.seed).rescaled(*scaling)
        test = pp.select(slice(0, len(xt)))
        rep = metrics.regression_report(test, yt)
        out = {k: rep[k] for k in ("rmse", "log_likelihood", "coverage_95", "width_95")}
        out["epistemic_std"] = float(test.epistemic_variance().sqrt().mean())  # the two parts of the spread
        out["noise_std"] = float(test.aleatoric_variance().sqrt().mean())
        return pp, out

    rows, preds = {}, {}
    for name in cfg.methods:
        bnn = lifted()
        guide, seconds, losses = _fit(name, bnn, cfg, (x, y), cfg.steps, len(y))
        preds[name], rep = scored(bnn, guide, cfg.num_samples)
        rows[name] = {**rep, "fit_seconds": seconds, **losses}
    bnn = lifted()
    post, seconds, diag = _reference(bnn, cfg, (x, y), xt, run_dir)
    ref, rep = scored(bnn, post, cfg.chains * cfg.nuts_samples)
    rows["nuts"] = {**rep, "fit_seconds": seconds, "diagnostics": diag}
    n = len(xt)
    for name, pp in preds.items():
        rows[name]["w1_to_nuts"] = wasserstein1(pp.draws[:, :n], ref.draws[:, :n])
        rows[name]["std_ratio_to_nuts"] = float((pp.std()[:n] / ref.std()[:n]).mean())
    bands = {name: (pp.mean()[n:], *pp.interval(0.95)) for name, pp in {"NUTS": ref, **preds}.items()}
    bands = {k: (m, lo[n:], hi[n:]) for k, (m, lo, hi) in bands.items()}
    fig = plots.regression_bands(grid, bands, f"input {feature} (others at their training means)",
                                 f"UCI {cfg.data_set}, split 0: 95% predictive bands of every approximation over "
                                 f"NUTS's ({cfg.chains} chains x {cfg.nuts_samples})")
    fig.savefig(run_dir / "regression_slice.png", dpi=110)
    plots.plt.close(fig)
    return {"source": str(folder), "n_train": len(y), "n_test": n, "slice_feature": feature, "methods": rows}


def run(cfg: PosteriorQualityConfig, resume_dir=None) -> dict:
    """Fit every method and NUTS, compare, draw the figure; writes config.json, metrics.json, table.json and the
    figure."""
    cfg.validate()
    name = "posterior-quality" if cfg.data_set == "egg" else f"posterior-quality-{cfg.data_set}"
    run_dir = open_run_dir(cfg, cfg.out, name, resume_dir)
    metrics_ = _egg(cfg, run_dir) if cfg.data_set == "egg" else _uci(cfg, run_dir)
    write_json(run_dir / "table.json", [{"method": k, **{m: v for m, v in r.items() if m != "diagnostics"}}
                                        for k, r in metrics_["methods"].items()])
    write_results(run_dir, metrics_)
    return {**metrics_, "data_set": cfg.data_set, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """The comparison table ``pyrobnn run posterior-quality`` prints."""
    print(f"data: {res['source']}  ({res['n_train']} train / {res['n_test']} held out)")
    regression = res.get("data_set", "egg") != "egg"
    cols = (("rmse", "RMSE", 8), ("log_likelihood", "LL", 8), ("coverage_95", "cov95", 7), ("w1_to_nuts", "W1", 7),
            ("std_ratio_to_nuts", "std/NUTS", 9), ("epistemic_std", "epist.", 8), ("noise_std", "noise", 7)) \
        if regression else \
        (("accuracy", "accuracy", 9), ("nll", "NLL", 8), ("ece", "ECE", 8), ("tv_to_nuts_test", "TV test", 9),
         ("tv_to_nuts_slice", "TV slice", 10))
    print(f"{'method':<12}" + "".join(f"{title:>{w}}" for _, title, w in cols) + f"{'fit s':>8}")
    for name, r in res["methods"].items():
        print(f"{name:<12}" + "".join(f"{r[k]:>{w}.3f}" if k in r else f"{'-':>{w}}" for k, _, w in cols)
              + f"{r['fit_seconds']:>8.1f}")
    d = res["methods"]["nuts"]["diagnostics"]
    print(f"NUTS: predictive R-hat max {d['rhat_max']:.3f}, bulk ESS min {d['ess_bulk_min']:.0f}, "
          f"{d['divergences']} divergences; run directory {res['run_dir']}")
