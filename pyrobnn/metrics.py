"""Scores of predicted class probabilities ``probs: [N, C]`` against integer labels ``y: [N]``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ._types import ArrayLike
from .data import check_labels

if TYPE_CHECKING:
    from .predictive import PosteriorPredictive


def _check(probs: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.as_tensor(probs, dtype=torch.float32)
    if probs.dim() != 2:
        raise ValueError(f"probs must be [N, C]; got shape {tuple(probs.shape)}")
    y = check_labels(y, probs.shape[1], probs.shape[0]).to(probs.device)
    return probs, y


def accuracy(probs: ArrayLike, y: ArrayLike) -> float:
    """Share of inputs whose most probable class is the label."""
    probs, y = _check(probs, y)
    return float((probs.argmax(-1) == y).float().mean())


def nll(probs: ArrayLike, y: ArrayLike, eps: float = 1e-12) -> float:
    """Mean negative log predictive probability of the true class (nats)."""
    probs, y = _check(probs, y)
    return float(-torch.log(probs.gather(1, y[:, None]).clamp_min(eps)).mean())


def brier(probs: ArrayLike, y: ArrayLike) -> float:
    """Mean over inputs of the squared distance between probs and the one-hot label (0 to 2)."""
    probs, y = _check(probs, y)
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).float()
    return float(((probs - onehot) ** 2).sum(-1).mean())


def ece(probs: ArrayLike, y: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error: confidences in ``n_bins`` equal-width bins of (0, 1], the
    ``|accuracy - confidence|`` gap of each bin weighted by its share of inputs."""
    probs, y = _check(probs, y)
    conf, pred = probs.max(-1)
    correct = (pred == y).float()
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    gap = torch.zeros(n_bins, device=probs.device)
    gap.scatter_add_(0, bins, correct - conf)
    return float(gap.abs().sum() / conf.shape[0])


def classification_report(probs: ArrayLike, y: ArrayLike, n_bins: int = 15) -> dict[str, float]:
    """accuracy, nll, brier and ece in one dict."""
    return {"accuracy": accuracy(probs, y), "nll": nll(probs, y), "brier": brier(probs, y),
            "ece": ece(probs, y, n_bins)}


def coverage(lower: ArrayLike, upper: ArrayLike, y: ArrayLike) -> float:
    """Share of targets inside their interval [lower, upper] (0 to 1)."""
    lower, upper, y = (torch.as_tensor(t, dtype=torch.float32) for t in (lower, upper, y))
    if not (lower.shape == upper.shape == y.shape):
        raise ValueError(f"lower, upper and y must have one shape; got {tuple(lower.shape)}, "
                         f"{tuple(upper.shape)}, {tuple(y.shape)}")
    if y.numel() == 0:
        raise ValueError("coverage of an empty set of targets is undefined")
    return float(((y >= lower) & (y <= upper)).float().mean())


def rmse(pred: ArrayLike, y: ArrayLike) -> float:
    """Root mean squared error of ``pred`` against ``y``."""
    pred, y = torch.as_tensor(pred, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    return float(((pred - y.to(pred.device)) ** 2).mean().sqrt())


def calibration_curve(pp: PosteriorPredictive, y: ArrayLike,
                      levels: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
                      ) -> list[dict]:
    """Regression calibration: for each central-interval level, the observed share of targets inside."""
    y = pp.targets(y).float()
    out = []
    for level in levels:
        lo, hi = pp.interval(level)
        out.append({"level": float(level), "observed": coverage(lo, hi, y)})
    return out


def regression_report(pp: PosteriorPredictive, y: ArrayLike, levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95)) -> dict:
    """RMSE of the predictive mean, mean log predictive density (log-mean-exp over draws), coverage of
    central intervals at ``levels``, and mean interval width at 95%."""
    y = pp.targets(y).float()
    rep = {"rmse": rmse(pp.mean(), y), "log_likelihood": float(pp.log_likelihood(y).mean())}
    for c in calibration_curve(pp, y, levels):
        rep[f"coverage_{round(c['level'] * 100)}"] = c["observed"]
    lo, hi = pp.interval(0.95)
    rep["width_95"] = float((hi - lo).mean())
    return rep


def referral_curve(probs: ArrayLike, y: ArrayLike, score: ArrayLike, fractions: Sequence[float]) -> list[float]:
    """Accuracy on the inputs kept when the fraction ``f`` with the highest ``score`` (the most
    uncertain) is referred elsewhere, for each f in ``fractions`` (f = 0 gives plain accuracy)."""
    probs, y = _check(probs, y)
    score = torch.as_tensor(score, dtype=torch.float32, device=probs.device)
    correct = (probs.argmax(-1) == y).float()[torch.argsort(score, stable=True)]  # most certain first
    n, out = len(correct), []
    for f in fractions:
        if not 0 <= f < 1:
            raise ValueError(f"fractions referred must lie in [0, 1); got {f}")
        keep = max(1, round(n * (1 - f)))
        out.append(float(correct[:keep].mean()))
    return out


def oracle_referral_curve(probs: ArrayLike, y: ArrayLike, fractions: Sequence[float]) -> list[float]:
    """The best possible referral: wrong predictions are referred first."""
    probs, y = _check(probs, y)
    wrong = (probs.argmax(-1) != y).float()
    return referral_curve(probs, y, wrong, fractions)


def reliability_bins(probs: ArrayLike, y: ArrayLike, n_bins: int = 15) -> list[dict]:
    """Per confidence bin (equal width on (0, 1]): mean confidence, accuracy and count."""
    probs, y = _check(probs, y)
    conf, pred = probs.max(-1)
    correct = (pred == y).float()
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = bins == b
        k = int(m.sum())
        out.append({"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": k,
                    "confidence": float(conf[m].mean()) if k else None,
                    "accuracy": float(correct[m].mean()) if k else None})
    return out


def auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the ROC curve for telling ``scores_out`` (positives: higher score = more likely
    out of distribution) from ``scores_in``; ties count one half (Mann-Whitney U / (n_in n_out))."""
    a = torch.as_tensor(scores_in, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(scores_out, dtype=torch.float64).reshape(-1)
    if a.numel() == 0 or b.numel() == 0:
        raise ValueError("auroc needs at least one score on each side")
    both = torch.cat([a, b])
    order = torch.argsort(both, stable=True)
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, len(both) + 1, dtype=torch.float64)
    for v in torch.unique(both):  # average ranks of ties
        m = both == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2
    return float(u / (len(a) * len(b)))
