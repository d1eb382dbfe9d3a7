"""Seed 004: Bayesian regression on Boston housing with credible intervals.

Ethics note: column ``b`` of this data set encodes 1000 (Bk - 0.63)^2, Bk being the share of Black
residents of a town; it was built on the assumption that racial self-segregation affects house
prices. The data set is kept here only to reproduce the seed article; ``--drop-b`` leaves the
column out, and we would not use this data for any decision about people.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from pyrobnn import plots
from pyrobnn.checkpoint import save_posterior
from pyrobnn.data import read_csv
from pyrobnn.runs import write_json

from . import conformal_eval, open_run_dir, write_results
from .options import option, out_option
from .regression import RegressionConfig, over_splits, summary

COLUMNS = ["crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax", "ptratio", "b", "lstat", "medv"]


@dataclass
class BostonConfig:
    data: str | None = option(None, "BostonHousing.csv (default: $PYROBNN_BOSTON_CSV)")
    test_fraction: float = 0.25
    level: float = option(0.95, "credible interval level")
    drop_b: bool = option(False, "leave out column b (see the README's ethics note)")
    repeats: int = option(5, "random 75/25 splits, seeds SEED, SEED+1, ...; figures show the first")
    # the noise level chosen on 20% of the training rows (Gal & Ghahramani's protocol; see fit_noise_factor)
    model: RegressionConfig = field(default_factory=lambda: RegressionConfig(calibrate=0.2))
    out: str = out_option()


def load_boston(path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    df = read_csv(path, COLUMNS)
    x = torch.tensor(df[COLUMNS[:-1]].to_numpy(), dtype=torch.float32)
    return x, torch.tensor(df["medv"].to_numpy(), dtype=torch.float32), COLUMNS[:-1]


def run(cfg: BostonConfig, resume_dir=None) -> dict:
    cfg.model.validate()
    path = cfg.data or os.environ.get("PYROBNN_BOSTON_CSV")
    if not path:
        raise ValueError("boston needs the data file: pass --data BostonHousing.csv (or set $PYROBNN_BOSTON_CSV)")
    if not 0 < cfg.test_fraction < 1 or not 0 < cfg.level < 1:
        raise ValueError("test_fraction and level must lie in (0, 1)")
    if cfg.repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {cfg.repeats}")
    x, y, names = load_boston(path)
    if cfg.drop_b:
        keep = [i for i, n in enumerate(names) if n != "b"]
        x, names = x[:, keep], [names[i] for i in keep]
    n_test = round(cfg.test_fraction * len(y))
    splits = []
    for k in range(cfg.repeats):  # random splits; the first is the one in the figures and posterior.pt
        perm = torch.from_numpy(np.random.default_rng(cfg.model.seed + k).permutation(len(y)))
        splits.append((perm[n_test:], perm[:n_test]))
    run_dir = open_run_dir(cfg, cfg.out, "boston", resume_dir)

    def keep_first(k, bnn, guide, scaling, pp, rep):
        if k != 0:
            return
        tr, te = splits[0]
        lo, hi = pp.interval(cfg.level)
        rep = {**rep, "level": cfg.level, "inside_interval": float(((y[te] >= lo) & (y[te] <= hi)).float().mean()),
               "noise_std": float(pp.aleatoric_variance().sqrt().mean()),
               "epistemic_std": float(pp.epistemic_variance().sqrt().mean())}
        which = f"Boston housing, split 1 of {cfg.repeats}"
        fig = plots.intervals_sorted_by_target(y[te], pp.mean(), lo, hi, cfg.level, "median value ($1000s)",
                                               f"{which}: {rep['inside_interval']:.0%} of the test set inside "
                                               f"the {cfg.level:.0%} interval")
        fig.savefig(run_dir / "intervals_sorted.png", dpi=110)
        fig2 = plots.calibration_curve(rep["calibration"], f"{which}: interval calibration")
        fig2.savefig(run_dir / "calibration.png", dpi=110)
        plots.plt.close("all")
        meta = {"experiment": "boston", "y_mean": scaling[0], "y_std": scaling[1], "noise_factor": rep["noise_factor"]}
        if "conformal" in rep:  # `pyrobnn predict` prints the calibrated intervals too
            meta["conformal"] = rep["conformal"]["state"]
        save_posterior(run_dir / "posterior.pt", bnn, guide, x[tr][:1], meta=meta)
        write_json(run_dir / "first_split.json", rep)

    per_split = over_splits(run_dir, x, y, splits, cfg.model, resume=resume_dir is not None, on_split=keep_first)
    first = json.loads((run_dir / "first_split.json").read_text())
    if cfg.model.conformal:
        conformal_eval.regression_figure(run_dir, [s["conformal"] for s in per_split],
                                         f"Boston housing, {len(per_split)} split(s): Bayesian vs conformal intervals")
    metrics = {"features": names, **first, "repeats": {**summary(per_split), "per_split": per_split}}
    write_results(run_dir, metrics)
    return {**metrics, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """What ``pyrobnn run boston`` prints when the run is done."""
    print(f"Boston housing: {res['n_train']} train / {res['n_test']} test")
    print(f"first split: RMSE {res['rmse']:.3f}  log-likelihood {res['log_likelihood']:.3f}  "
          f"{res['inside_interval']:.1%} of test targets inside their {res['level']:.0%} interval "
          f"(mean width {res['width_95']:.2f})")
    rep = res["repeats"]
    if rep["splits"] > 1:
        print(f"{rep['splits']} random splits (mean ± s.e.): RMSE {rep['rmse'][0]:.3f} ± {rep['rmse'][1]:.3f}  "
              f"log-likelihood {rep['log_likelihood'][0]:.3f} ± {rep['log_likelihood'][1]:.3f}  "
              f"95% coverage {rep['coverage_95'][0]:.3f} ± {rep['coverage_95'][1]:.3f}")
    if "conformal" in res:
        print(f"first split: {conformal_eval.summary_line(res['conformal'])}")
    if "conformal" in rep:
        c = rep["conformal"]
        print(f"{rep['splits']} split(s): conformal {c['level']:.0%} coverage {c['conformal_coverage'][0]:.3f} "
              f"± {c['conformal_coverage'][1]:.3f} (width {c['conformal_width'][0]:.2f}), Bayesian "
              f"{c['bayes_coverage'][0]:.3f} ± {c['bayes_coverage'][1]:.3f} (width {c['bayes_width'][0]:.2f})")
    print(f"run directory: {res['run_dir']}")
