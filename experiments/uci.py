"""The UCI regression benchmark (Hernandez-Lobato & Adams 2015; Gal & Ghahramani 2016).

Protocol: the standard train/test split files (20 splits, protein 5), one hidden layer of 50 units
(100 for protein), inputs and target standardised with training statistics; report the mean and
standard error over splits of test RMSE and test log-likelihood, in the original units.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pyrobnn.runs import write_json

from . import conformal_eval, open_run_dir
from .options import option, out_option
from .regression import RegressionConfig, over_splits, summary

FOLDERS = {"boston": "bostonHousing", "concrete": "concrete", "energy": "energy", "kin8nm": "kin8nm",
           "naval": "naval-propulsion-plant", "power": "power-plant", "protein": "protein-tertiary-structure",
           "wine": "wine-quality-red", "yacht": "yacht"}
# Published test RMSE / log-likelihood (Gal & Ghahramani 2016, table 1): VI (Graves 2011), PBP, MC dropout
PUBLISHED = {
    "boston": {"VI": (4.32, -2.90), "PBP": (3.01, -2.57), "MC dropout": (2.97, -2.46)},
    "concrete": {"VI": (7.19, -3.39), "PBP": (5.67, -3.16), "MC dropout": (5.23, -3.04)},
    "energy": {"VI": (2.65, -2.39), "PBP": (1.80, -2.04), "MC dropout": (1.66, -1.99)},
    "kin8nm": {"VI": (0.10, 0.90), "PBP": (0.10, 0.90), "MC dropout": (0.10, 0.95)},
    "naval": {"VI": (0.01, 3.73), "PBP": (0.01, 3.73), "MC dropout": (0.01, 3.80)},
    "power": {"VI": (4.33, -2.89), "PBP": (4.12, -2.84), "MC dropout": (4.02, -2.80)},
    "wine": {"VI": (0.65, -0.98), "PBP": (0.64, -0.97), "MC dropout": (0.62, -0.93)},
    "yacht": {"VI": (6.89, -3.43), "PBP": (1.02, -1.63), "MC dropout": (1.11, -1.55)},
}


LABELS = {"nuts": " (NUTS)", "laplace": " (Laplace)", "laplace_glm": " (Laplace, linearised)"}  # meanfield: none


@dataclass
class UCIConfig:
    dataset: str = option("yacht", "UCI data set", choices=sorted(FOLDERS), required=True)
    splits: int | None = option(None, "use the first K splits (default: all)")
    data_dir: str | None = option(None, "folder with bostonHousing/, ... (default: $PYROBNN_UCI_DIR)")
    model: RegressionConfig = field(default_factory=RegressionConfig)
    out: str = out_option()
    progress: bool = True


def data_folder(cfg: UCIConfig) -> Path:
    if cfg.dataset not in FOLDERS:
        raise ValueError(f"unknown UCI data set {cfg.dataset!r}; choose one of {sorted(FOLDERS)}")
    root = cfg.data_dir or os.environ.get("PYROBNN_UCI_DIR")
    if not root:
        raise ValueError("uci needs --data-dir (the folder with bostonHousing/, concrete/, ...) or $PYROBNN_UCI_DIR")
    folder = Path(root) / FOLDERS[cfg.dataset] / "data"
    if not (folder / "data.txt").is_file():
        raise FileNotFoundError(f"no data.txt for {cfg.dataset} in {folder}")
    return folder


def load(folder: Path):
    data = np.loadtxt(folder / "data.txt")
    feats = np.loadtxt(folder / "index_features.txt", dtype=int).reshape(-1)
    target = int(np.loadtxt(folder / "index_target.txt"))
    x = torch.tensor(data[:, feats], dtype=torch.float32)
    y = torch.tensor(data[:, target], dtype=torch.float32)
    n_splits = len(list(folder.glob("index_train_*.txt")))
    return x, y, n_splits


def split(folder: Path, k: int):
    tr = torch.from_numpy(np.loadtxt(folder / f"index_train_{k}.txt", dtype=int).reshape(-1))
    te = torch.from_numpy(np.loadtxt(folder / f"index_test_{k}.txt", dtype=int).reshape(-1))
    return tr, te


def run(cfg: UCIConfig, resume_dir=None) -> dict:
    cfg.model.validate()
    folder = data_folder(cfg)
    x, y, n_splits = load(folder)
    k_max = n_splits if cfg.splits is None else int(cfg.splits)
    if not 1 <= k_max <= n_splits:
        raise ValueError(f"splits must be between 1 and {n_splits} for {cfg.dataset}; got {cfg.splits}")
    model = cfg.model if cfg.dataset != "protein" or cfg.model.hidden != (50,) else replace(cfg.model, hidden=(100,))
    run_dir = open_run_dir(replace(cfg, model=model), cfg.out, f"uci-{cfg.dataset}", resume_dir)
    splits = [split(folder, k) for k in range(k_max)]
    per_split = over_splits(run_dir, x, y, splits, model, resume=resume_dir is not None,
                            progress=cfg.progress)
    method = "nuts" if model.inference == "nuts" else model.guide
    result = {"dataset": cfg.dataset, "method": method, **summary(per_split),
              "published": PUBLISHED.get(cfg.dataset, {}), "per_split": per_split}
    write_json(run_dir / "metrics.json", result)
    (run_dir / "table.md").write_text(table([result]))
    if model.conformal:
        conformal_eval.regression_figure(run_dir, [s["conformal"] for s in per_split],
                                         f"UCI {cfg.dataset}, {k_max} split(s): Bayesian vs conformal intervals")
    return {**result, "run_dir": str(run_dir)}


def table(results: list[dict]) -> str:
    """Markdown table: ours (mean +- s.e.) beside the published VI / PBP / MC dropout numbers."""
    head = ("| data set | splits | pyrobnn RMSE | pyrobnn LL | VI RMSE / LL | PBP RMSE / LL | MC dropout RMSE / LL |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        pub = r["published"]
        cols = [f"{pub[m][0]:.2f} / {pub[m][1]:.2f}" if m in pub else "–" for m in ("VI", "PBP", "MC dropout")]
        name = r["dataset"] + LABELS.get(r.get("method", "meanfield"), "")
        rows.append(f"| {name} | {r['splits']} | {r['rmse'][0]:.3f} ± {r['rmse'][1]:.3f} | "
                    f"{r['log_likelihood'][0]:.3f} ± {r['log_likelihood'][1]:.3f} | " + " | ".join(cols) + " |")
    return head + "\n".join(rows) + "\n"


def print_summary(res: dict) -> None:
    """What ``pyrobnn run uci`` prints when the run is done."""
    print(table([res]), end="")
    if "nuts" in res:
        d = res["nuts"]
        print(f"NUTS over the splits: predictive R-hat max {d['rhat_max']:.3f}, bulk ESS min {d['ess_bulk_min']:.0f}, "
              f"{d['divergences']} divergences, {d['seconds'][0]:.0f} s per split")
    if "prior_scales" in res:
        print("learned prior sigmas (mean ± s.e. over the splits): " + ", ".join(
            f"{k} {m:.3f} ± {se:.3f}" for k, (m, se) in res["prior_scales"].items()))
    if "conformal" in res:
        c = res["conformal"]
        print(f"conformal {c['level']:.0%} intervals ({c['score']}): coverage {c['conformal_coverage'][0]:.3f} ± "
              f"{c['conformal_coverage'][1]:.3f}, width {c['conformal_width'][0]:.3f}; Bayesian coverage "
              f"{c['bayes_coverage'][0]:.3f} ± {c['bayes_coverage'][1]:.3f}, width {c['bayes_width'][0]:.3f}")
    print(f"run directory: {res['run_dir']}")
