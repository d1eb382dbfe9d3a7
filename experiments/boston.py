"""Seed 004: Bayesian regression on Boston housing with credible intervals.

Ethics note: column ``b`` of this data set encodes 1000 (Bk - 0.63)^2, Bk being the share of Black
residents of a town; it was built on the assumption that racial self-segregation affects house
prices. The data set is kept here only to reproduce the seed article; ``--drop-b`` leaves the
column out, and we would not use this data for any decision about people.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from pyrobnn import plots
from pyrobnn.checkpoint import save_posterior
from pyrobnn.data import read_csv
from pyrobnn.runs import EpochLog, write_json

from . import open_run_dir, stop_if_interrupted, write_results
from .regression import RegressionConfig, evaluate, fit_regressor

COLUMNS = ["crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax", "ptratio", "b", "lstat", "medv"]


@dataclass
class BostonConfig:
    data: str | None = None     # BostonHousing.csv; None -> $PYROBNN_BOSTON_CSV
    test_fraction: float = 0.25
    level: float = 0.95
    drop_b: bool = False
    model: RegressionConfig = field(default_factory=RegressionConfig)
    out: str = "runs"


def load_boston(path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    df = read_csv(path, COLUMNS)
    x = torch.tensor(df[COLUMNS[:-1]].to_numpy(), dtype=torch.float32)
    return x, torch.tensor(df["medv"].to_numpy(), dtype=torch.float32), COLUMNS[:-1]


def run(cfg: BostonConfig, resume_dir=None) -> dict:
    path = cfg.data or os.environ.get("PYROBNN_BOSTON_CSV")
    if not path:
        raise ValueError("boston needs the data file: pass --data BostonHousing.csv (or set $PYROBNN_BOSTON_CSV)")
    if not 0 < cfg.test_fraction < 1 or not 0 < cfg.level < 1:
        raise ValueError("test_fraction and level must lie in (0, 1)")
    x, y, names = load_boston(path)
    if cfg.drop_b:
        keep = [i for i, n in enumerate(names) if n != "b"]
        x, names = x[:, keep], [names[i] for i in keep]
    perm = torch.from_numpy(np.random.default_rng(cfg.model.seed).permutation(len(y)))
    n_test = round(cfg.test_fraction * len(y))
    te, tr = perm[:n_test], perm[n_test:]
    run_dir = open_run_dir(cfg, cfg.out, "boston", resume_dir)
    bnn, guide, scaling, hist = fit_regressor(x[tr], y[tr], cfg.model, checkpoint=run_dir / "train_state.pt",
                                              callback=EpochLog(run_dir),
                                              resume=resume_dir is not None)
    stop_if_interrupted(hist, run_dir)
    rep, pp = evaluate(bnn, guide, scaling, x[te], y[te], cfg.model.num_samples, cfg.model.seed)
    lo, hi = pp.interval(cfg.level)
    rep["level"] = cfg.level
    rep["inside_interval"] = float(((y[te] >= lo) & (y[te] <= hi)).float().mean())
    rep["noise_std"] = float(pp.aleatoric_variance().sqrt().mean())
    rep["epistemic_std"] = float(pp.epistemic_variance().sqrt().mean())
    fig = plots.intervals_sorted_by_target(y[te], pp.mean(), lo, hi, cfg.level, "median value ($1000s)",
                                           f"Boston housing, test set: {rep['inside_interval']:.0%} inside "
                                           f"the {cfg.level:.0%} interval")
    fig.savefig(run_dir / "intervals_sorted.png", dpi=110)
    fig2 = plots.calibration_curve(rep["calibration"], "Boston housing: interval calibration")
    fig2.savefig(run_dir / "calibration.png", dpi=110)
    plots.plt.close("all")
    save_posterior(run_dir / "posterior.pt", bnn, guide, x[tr][:1],
                   meta={"experiment": "boston", "y_mean": scaling[0], "y_std": scaling[1]})
    write_json(run_dir / "history.json", hist.records)
    metrics = {"n_train": len(tr), "n_test": len(te), "features": names, **rep}
    write_results(run_dir, metrics)
    return {**metrics, "run_dir": str(run_dir)}
