"""Seed 001: the boiled-egg classifier, deterministic vs Bayesian, with 5000-draw class histograms.

Run from the CLI (``pyrobnn run egg --help``) or from a notebook::

    from pyrobnn.experiments.egg import EggConfig, run
    result = run(EggConfig(data="../shared/data/egg_times/egg_times.csv"))
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer import Predictive

import pyrobnn
from pyrobnn import plots
from pyrobnn.checkpoint import save_posterior
from pyrobnn.conformal import from_state
from pyrobnn.guides.egg import egg_guide
from pyrobnn.infer import resolve_device
from pyrobnn.metrics import classification_report
from pyrobnn.models.egg import CLASSES, EggNet, train_deterministic
from pyrobnn.runs import EpochLog, write_json

from . import conformal_eval, open_run_dir, print_model_table, stop_if_interrupted, write_results
from .egg_data import SIMULATED_LABEL, load_egg_csv, simulate_eggs, split_last
from .options import device_option, option, out_option, seed_option

# The seed's three histogram inputs: CSV rows 590, 638 and 602 of egg_times.csv.
QUERY_EGGS = ((54.0, 1.5), (53.0, 6.0), (47.9, 2.1))
GUIDES = ("meanfield", "autonormal", "handwritten")


@dataclass
class EggConfig:
    data: str | None = option(None, "path to egg_times.csv (default: $PYROBNN_EGG_CSV, else simulated)")
    holdout: int = 50                # last rows held out (seed protocol)
    hidden: tuple = (32, 32)
    epochs: int = option(600, "SVI epochs")
    det_epochs: int = option(300, "baseline epochs")
    guide: str = option("meanfield", "guide", choices=GUIDES)
    loss: str = option("meanfield", "TraceMeanField_ELBO or Trace_ELBO", choices=("meanfield", "trace"))
    lr: float = option(0.01, "learning rate")
    batch_size: int = option(64, "minibatch size")
    num_particles: int = option(1, "ELBO particles")
    init_scale: float = 0.1
    prior_scale: float = 1.0
    num_samples: int = option(5000, "posterior draws")  # for test metrics and the histograms
    pyro_baseline_samples: int = option(5000, "draws for the Pyro Predictive timing, 0 to skip")
    conformal: float = option(0.0, "split-conformal level, e.g. 0.9: prediction sets calibrated on "
                                   "--conformal-fraction of the training rows, kept out of training (0 = off)",
                              minimum=0, below=1)
    conformal_fraction: float = option(0.2, "training rows reserved for --conformal", minimum=0, below=1)
    conformal_score: str = option("aps", "conformal score", choices=("aps", "lac"))
    seed: int = seed_option()
    device: str = device_option()
    out: str = out_option()
    progress: bool = True
    queries: tuple = field(default=QUERY_EGGS)

    def validate(self):
        if self.guide not in GUIDES:
            raise ValueError(f"unknown guide {self.guide!r}; choose one of {list(GUIDES)}")
        if self.guide == "handwritten" and tuple(self.hidden) != (32, 32):
            raise ValueError("the hand-written guide is written for hidden=(32, 32)")
        for name in ("epochs", "det_epochs", "num_samples", "batch_size", "num_particles"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        resolve_device(self.device)


def _tensors(df, device):
    x = torch.tensor(df[["weight", "time"]].to_numpy(), dtype=torch.float32, device=device)
    y = torch.tensor(df["outcome"].to_numpy(), dtype=torch.long, device=device)
    return x, y


def load_data(cfg: EggConfig):
    """(dataframe, source label, simulated?) from cfg.data, $PYROBNN_EGG_CSV or the simulator."""
    path = cfg.data or os.environ.get("PYROBNN_EGG_CSV")
    if path:
        return load_egg_csv(path), str(path), False
    return simulate_eggs(seed=cfg.seed), SIMULATED_LABEL, True


def make_guide(cfg: EggConfig, bnn: pyrobnn.BayesianNet):
    if cfg.guide == "handwritten":
        return egg_guide
    return pyrobnn.make_guide(cfg.guide, bnn, init_scale=cfg.init_scale)


def _time_pyro_predictive(bnn, guide, x, n) -> float:
    """Seconds for Pyro's own sequential Predictive to draw ``n`` samples at ``x`` (same guide)."""
    pred = Predictive(bnn.model, guide=guide, num_samples=n, parallel=False, return_sites=["obs"])
    t0 = time.perf_counter()
    with torch.no_grad(), pyro.validation_enabled(False):
        pred(x)
    return time.perf_counter() - t0


def run(cfg: EggConfig, resume_dir=None) -> dict:
    """Train both models, score them on the hold-out, draw the figures; returns the metrics dict
    (with ``run_dir``) and writes config.json, metrics.json, history.json, *.png and posterior.pt.

    The Bayesian training state is kept in ``train_state.pt``: a SIGINT/SIGTERM saves it and
    raises :class:`experiments.Interrupted`; ``resume_dir`` continues that run where it stopped.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    df, source, simulated = load_data(cfg)
    train_df, test_df = split_last(df, cfg.holdout)
    x_tr, y_tr = _tensors(train_df, device)
    x_te, y_te = _tensors(test_df, device)
    cal = None
    if cfg.conformal:
        keep, c = conformal_eval.reserve(len(y_tr), cfg.conformal, cfg.conformal_fraction, seed=cfg.seed)
        x_tr, y_tr, cal = x_tr[keep], y_tr[keep], (x_tr[c], y_tr[c])
    run_dir = open_run_dir(cfg, cfg.out, "egg", resume_dir)
    tag = " [SIMULATED]" if simulated else ""

    # deterministic baseline
    torch.manual_seed(cfg.seed)
    net = EggNet(cfg.hidden).to(device)
    net.standardize.fit(x_tr)
    bayes_net = copy.deepcopy(net)  # same init and input scaling for the Bayesian model
    train_deterministic(net, x_tr, y_tr, epochs=cfg.det_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                        seed=cfg.seed)
    with torch.no_grad():
        det = classification_report(torch.softmax(net(x_te), -1), y_te)

    # Bayesian model
    pyro.clear_param_store()
    bnn = pyrobnn.lift(bayes_net, prior=pyrobnn.priors.Normal(0.0, cfg.prior_scale),
                       likelihood=pyrobnn.likelihoods.Categorical(len(CLASSES)))
    guide = make_guide(cfg, bnn)
    t0 = time.perf_counter()
    history = pyrobnn.fit(bnn, guide, (x_tr, y_tr), epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                          loss=cfg.loss, num_particles=cfg.num_particles, val_data=(x_te, y_te),
                          val_every=max(1, cfg.epochs // 10), seed=cfg.seed, device=device, progress=cfg.progress,
                          checkpoint=run_dir / "train_state.pt", resume=resume_dir is not None,
                          callback=EpochLog(run_dir))
    train_seconds = time.perf_counter() - t0
    stop_if_interrupted(history, run_dir)
    pp = pyrobnn.predict(bnn, guide, x_te, num_samples=cfg.num_samples, seed=cfg.seed)
    bayes = classification_report(pp.mean_probs(), y_te)
    bayes["mean_predictive_entropy"] = float(pp.predictive_entropy().mean())
    bayes["mean_mutual_information"] = float(pp.mutual_information().mean())

    # class histograms for the seed's three eggs, timed against Pyro's sequential Predictive
    xq = torch.tensor(cfg.queries, dtype=torch.float32, device=device)
    pyrobnn.predict(bnn, guide, xq, num_samples=cfg.num_samples)  # warm-up
    t0 = time.perf_counter()
    ppq = pyrobnn.predict(bnn, guide, xq, num_samples=cfg.num_samples, seed=cfg.seed)
    fast_s = time.perf_counter() - t0
    freq = ppq.class_frequencies()
    pyro_s = _time_pyro_predictive(bnn, guide, xq, cfg.pyro_baseline_samples) if cfg.pyro_baseline_samples else None
    timing = {"draws": cfg.num_samples, "pyrobnn_seconds": fast_s,
              "pyro_predictive_draws": cfg.pyro_baseline_samples, "pyro_predictive_seconds": pyro_s,
              "speedup_per_draw": (pyro_s / cfg.pyro_baseline_samples) / (fast_s / cfg.num_samples)
              if pyro_s else None}

    labels = [f"{w:g} g, {t:g} min" for w, t in cfg.queries]
    figs = {
        "fig_2_01_scatter.png": plots.scatter_by_class(df["weight"], df["time"], df["outcome"], CLASSES,
                                                       ("weight (g)", "boiling time (min)"),
                                                       f"Egg outcomes{tag}"),
        "fig_2_02_time_histograms.png": plots.histograms_by_class(df["time"], df["outcome"], CLASSES,
                                                                  "boiling time (min)",
                                                                  title=f"Boiling time by outcome{tag}"),
        "fig_2_03_time_violins.png": plots.violins_by_class(df["time"], df["outcome"], CLASSES,
                                                            "boiling time (min)",
                                                            f"Boiling time by outcome{tag}"),
        "fig_2_04_class_histograms.png": plots.class_frequency_histogram(
            freq, CLASSES, labels, cfg.num_samples,
            f"Posterior predictive: {cfg.num_samples} draws per egg ({cfg.guide} guide){tag}"),
    }
    for name, fig in figs.items():
        fig.savefig(run_dir / name, dpi=110)
        plots.plt.close(fig)

    meta = {"experiment": "egg", "guide": cfg.guide, "epochs": cfg.epochs, "seed": cfg.seed}
    conformal = None
    if cal is not None:
        pp_cal = pyrobnn.predict(bnn, guide, cal[0], num_samples=cfg.num_samples, seed=cfg.seed + 1)
        conformal = conformal_eval.classification(pp_cal, cal[1], pp, y_te, cfg.conformal, cfg.conformal_score,
                                                  seed=cfg.seed)
        sets = from_state(conformal["state"]).predict_sets(ppq)
        conformal["query_sets"] = [[c for c, inside in zip(CLASSES, row) if inside] for row in sets.tolist()]
        conformal_eval.classification_figure(run_dir, conformal, f"Egg outcomes: conformal prediction sets{tag}")
        meta["conformal"] = conformal["state"]
    save_posterior(run_dir / "posterior.pt", bnn, guide, x_tr[:1], meta=meta)
    write_json(run_dir / "history.json", history.records)
    metrics = {
        **({"conformal": conformal} if conformal else {}),
        "source": source, "simulated": simulated, "n_train": len(y_tr), "n_test": len(test_df),
        "deterministic": det, "bayesian": bayes, "train_seconds": train_seconds,
        "query_eggs": [{"weight": w, "time": t, "class_frequencies": dict(zip(CLASSES, map(float, f)))}
                       for (w, t), f in zip(cfg.queries, freq)],
        "predictive_timing": timing,
    }
    write_results(run_dir, metrics)
    return {**metrics, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """What ``pyrobnn run egg`` prints when the run is done."""
    tm = res["predictive_timing"]
    print(f"data: {res['source']}  ({res['n_train']} train / {res['n_test']} held out)")
    print_model_table(res)
    print(f"class frequencies over {tm['draws']} posterior draws:")
    for q in res["query_eggs"]:
        f = "  ".join(f"{k} {v:.3f}" for k, v in q["class_frequencies"].items())
        print(f"  {q['weight']:g} g, {q['time']:g} min: {f}")
    line = f"predictive: {tm['draws']} draws for 3 eggs in {tm['pyrobnn_seconds'] * 1e3:.1f} ms"
    if tm["pyro_predictive_seconds"]:
        line += (f"; Pyro's sequential Predictive: {tm['pyro_predictive_draws']} draws in "
                 f"{tm['pyro_predictive_seconds']:.2f} s ({tm['speedup_per_draw']:.0f}x slower per draw)")
    print(line)
    if "conformal" in res:
        c = res["conformal"]
        print(conformal_eval.summary_line(c))
        for q, members in zip(res["query_eggs"], c["query_sets"]):
            print(f"  {q['weight']:g} g, {q['time']:g} min: {{{', '.join(members)}}}")
    print(f"run directory: {res['run_dir']}")
