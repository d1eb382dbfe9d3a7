"""How the experiments report split-conformal prediction (``--conformal LEVEL``): calibrate on rows reserved from the
training set, then score the conformal intervals or sets on the test rows beside the Bayesian ones."""
from __future__ import annotations

from pathlib import Path

import torch

from pyrobnn import plots
from pyrobnn.conformal import ConformalClassifier, ConformalRegressor, coverage, min_calibration_rows, set_coverage

CURVE_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def reserve(n_rows: int, level: float, fraction: float | None = None, size: int | None = None,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows to train on, rows to calibrate on): a random ``fraction`` (or ``size``) of ``n_rows``; a one-line error
    when the calibration rows would be too few for ``level`` or leave nothing to train on."""
    n_cal = size if size is not None else round((fraction or 0.0) * n_rows)
    need = min_calibration_rows(level)
    if n_cal < need:
        raise ValueError(f"--conformal {level}: {n_cal} calibration rows are too few (level {level} needs at least "
                         f"{need}); reserve more of the {n_rows} training rows")
    if n_rows - n_cal < 2:
        raise ValueError(f"--conformal: {n_cal} calibration rows leave {n_rows - n_cal} of {n_rows} to train on")
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed + 7919))
    return perm[n_cal:], perm[:n_cal]


def regression(pp_cal, y_cal, pp_test, y_test, level: float, score: str = "cqr") -> dict:
    """Conformal and Bayesian intervals at ``level`` on the test rows (coverage, mean width), the calibrated state,
    and both at every level of CURVE_LEVELS the calibration set allows (the coverage-width figure)."""
    def pair(lv):
        conf = ConformalRegressor(lv, score).calibrate(pp_cal, y_cal)
        lo, hi = conf.interval(pp_test)
        blo, bhi = pp_test.interval(lv)
        return conf, {"level": lv, "conformal_coverage": coverage(lo, hi, y_test),
                      "conformal_width": float((hi - lo).mean()), "bayes_coverage": coverage(blo, bhi, y_test),
                      "bayes_width": float((bhi - blo).mean())}

    conf, main = pair(level)
    n = len(y_cal)
    curve = [pair(lv)[1] for lv in CURVE_LEVELS if min_calibration_rows(lv) <= n]
    return {**main, "score": score, "n_calibration": n, "state": conf.state(), "curve": curve}


def classification(pp_cal, y_cal, pp_test, y_test, level: float, score: str = "aps", seed: int = 0) -> dict:
    """Conformal prediction sets at ``level`` on the test rows: coverage, mean size, the count of each size, and the
    accuracy on the rows whose set is a single class."""
    conf = ConformalClassifier(level, score, seed=seed).calibrate(pp_cal, y_cal)
    sets = conf.predict_sets(pp_test)
    sizes = sets.sum(1)
    single = sizes == 1
    probs = pp_test.mean_probs()
    hit = (probs.argmax(1) == torch.as_tensor(y_test, device=probs.device)).float()
    return {"level": level, "score": score, "n_calibration": len(y_cal), "coverage": set_coverage(sets, y_test),
            "mean_set_size": float(sizes.float().mean()),
            "size_counts": torch.bincount(sizes.cpu(), minlength=sets.shape[1] + 1).tolist(),
            "singleton_fraction": float(single.float().mean()),
            "singleton_accuracy": float(hit[single].mean()) if bool(single.any()) else None,
            "top1_accuracy": float(hit.mean()), "state": conf.state()}


def mean_curve(entries: list[dict]) -> list[dict]:
    """The coverage-width curve averaged over splits (each entry a :func:`regression` result)."""
    levels = [c["level"] for c in entries[0]["curve"]]
    keys = ("conformal_coverage", "conformal_width", "bayes_coverage", "bayes_width")
    return [{"level": lv, **{k: sum(e["curve"][i][k] for e in entries) / len(entries) for k in keys}}
            for i, lv in enumerate(levels)]


def regression_figure(run_dir: Path, entries: list[dict], title: str) -> None:
    fig = plots.coverage_width(mean_curve(entries), title)
    fig.savefig(run_dir / "conformal_coverage_width.png", dpi=110)
    plots.plt.close(fig)


def classification_figure(run_dir: Path, report: dict, title: str) -> None:
    fig = plots.set_size_histogram(report["size_counts"], report["level"], report["coverage"], title)
    fig.savefig(run_dir / "conformal_set_sizes.png", dpi=110)
    plots.plt.close(fig)


def summary_line(rep: dict) -> str:
    """One printed line about a conformal result (regression or classification)."""
    if "mean_set_size" in rep:
        return (f"conformal {rep['level']:.0%} sets ({rep['score']}, {rep['n_calibration']} calibration rows): "
                f"coverage {rep['coverage']:.3f}, mean size {rep['mean_set_size']:.2f}, "
                f"{rep['singleton_fraction']:.0%} single-class")
    return (f"conformal {rep['level']:.0%} intervals ({rep['score']}, {rep['n_calibration']} calibration rows): "
            f"coverage {rep['conformal_coverage']:.3f}, mean width {rep['conformal_width']:.3f}; Bayesian "
            f"{rep['bayes_coverage']:.3f}, width {rep['bayes_width']:.3f}")
