"""Split-conformal prediction on top of the posterior predictive.

A Bayesian interval covers as often as its level says only when the model is right. Split conformal calibration
(Vovk et al. 2005; Lei et al. 2018) turns any score of a held-out calibration set of n rows into a guarantee that
holds whatever the model gets wrong: with s_(k) the k-th smallest calibration score, k = ceil((n + 1) * level), a
new exchangeable row falls inside its set with probability at least ``level`` (and below level + 1 / (n + 1) when
scores have no ties). The posterior predictive supplies the scores:

- regression, ``"cqr"`` (conformalised quantile regression, Romano et al. 2019): the predictive's (1 - level) / 2
  and (1 + level) / 2 quantiles widened (or narrowed) by s_(k), the score being how far y falls outside them;
  ``"normalized"``: mean +/- s_(k) * predictive std, the score being ``abs(y - mean) / std``.
- classification, ``"lac"`` (least ambiguous sets, Sadinle et al. 2019): every class whose mean predictive
  probability is at least 1 - s_(k); ``"aps"`` (adaptive prediction sets, Romano et al. 2020): classes taken from
  the most probable down until their cumulative probability reaches s_(k), with randomised tie-breaking (seedable)
  so that the coverage is exact rather than conservative.

Targets with k outputs (``[N, k]``) are calibrated per output.
"""
from __future__ import annotations

import math

import torch

from .predictive import PosteriorPredictive

REGRESSION_SCORES = ("cqr", "normalized")
CLASSIFICATION_SCORES = ("aps", "lac")


def _check_level(level: float) -> float:
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    return float(level)


def min_calibration_rows(level: float) -> int:
    """The smallest calibration set for which ``level`` can be guaranteed: ceil((n + 1) * level) <= n."""
    n = max(1, math.ceil(level / (1 - level)) - 1)
    while math.ceil((n + 1) * level) > n:
        n += 1
    return n


def conformal_quantile(scores: torch.Tensor, level: float) -> torch.Tensor:
    """The ceil((n + 1) * level)-th smallest of ``scores`` along dimension 0 (n rows): the finite-sample corrected
    quantile of split conformal prediction."""
    n = scores.shape[0]
    k = math.ceil((n + 1) * level)
    if k > n:
        raise ValueError(f"a calibration set of {n} rows is too small for level {level}: it needs at least "
                         f"{min_calibration_rows(level)} rows")
    return scores.sort(dim=0).values[k - 1]


def _predictive(pp, kind: str) -> PosteriorPredictive:
    if not isinstance(pp, PosteriorPredictive):
        raise TypeError(f"expected a PosteriorPredictive (pyrobnn.predict's result); got {type(pp).__name__}")
    if pp.kind != kind:
        raise ValueError(f"this conformal predictor needs a {kind} predictive; got a {pp.kind} one")
    return pp


class ConformalRegressor:
    """Split-conformal intervals from a regression posterior predictive.

    ``ConformalRegressor(0.9).calibrate(pp_cal, y_cal).interval(pp_test) -> (lower, upper)``, in the units of the
    predictive (use ``pp.rescaled(mean, std)`` for a model trained on standardised targets, for both).
    """

    def __init__(self, level: float = 0.9, score: str = "cqr"):
        self.level = _check_level(level)
        if score not in REGRESSION_SCORES:
            raise ValueError(f"score must be one of {REGRESSION_SCORES}; got {score!r}")
        self.score = score
        self.threshold: torch.Tensor | None = None  # s_(k), one per output
        self.n_calibration = 0

    def _parts(self, pp: PosteriorPredictive) -> tuple[torch.Tensor, torch.Tensor]:
        """(centre-ish lower, upper) before widening: the predictive quantiles (cqr) or mean and std (normalized)."""
        if self.score == "cqr":
            lo, hi = pp.quantiles([(1 - self.level) / 2, (1 + self.level) / 2])
            return lo, hi
        return pp.mean(), pp.std()

    def _scores(self, pp: PosteriorPredictive, y: torch.Tensor) -> torch.Tensor:
        a, b = self._parts(pp)
        if self.score == "cqr":
            return torch.maximum(a - y, y - b)
        return (y - a).abs() / b.clamp_min(torch.finfo(b.dtype).tiny)

    def calibrate(self, pp_cal: PosteriorPredictive, y_cal) -> ConformalRegressor:
        """Compute the threshold from the calibration predictive and its targets; returns ``self``."""
        pp = _predictive(pp_cal, "regression")
        y = _targets(y_cal, pp)
        self.threshold = conformal_quantile(self._scores(pp, y), self.level)
        self.n_calibration = y.shape[0]
        return self

    def interval(self, pp: PosteriorPredictive) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) per input, shaped like ``pp.mean()``; covers with probability >= level."""
        q = self._calibrated(_predictive(pp, "regression"))
        a, b = self._parts(pp)
        if self.score == "cqr":
            return a - q, b + q
        return a - q * b, a + q * b

    def _calibrated(self, pp: PosteriorPredictive) -> torch.Tensor:
        if self.threshold is None:
            raise RuntimeError("call calibrate(pp_cal, y_cal) before interval()")
        per_row = tuple(pp.mean().shape[1:])
        if per_row != tuple(self.threshold.shape):
            raise ValueError(f"the predictive has {per_row or 'one'} output(s) per row; the calibration had "
                             f"{tuple(self.threshold.shape) or 'one'}")
        return self.threshold.to(pp.outputs.device)

    def state(self) -> dict:
        """JSON-able state (level, score, threshold, calibration size), for :meth:`from_state`."""
        return {"kind": "regression", "level": self.level, "score": self.score, "n_calibration": self.n_calibration,
                "threshold": None if self.threshold is None else self.threshold.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> ConformalRegressor:
        out = cls(state["level"], state["score"])
        out.threshold = torch.tensor(state["threshold"], dtype=torch.float32)
        out.n_calibration = int(state["n_calibration"])
        return out


class ConformalClassifier:
    """Split-conformal prediction sets from a classification posterior predictive's mean probabilities.

    ``ConformalClassifier(0.9, "aps", seed=0).calibrate(pp_cal, y_cal).predict_sets(pp_test) -> bool [N, C]``.
    ``seed`` fixes the random tie-breaking of ``"aps"`` (calibration and every call of ``predict_sets``).
    """

    def __init__(self, level: float = 0.9, score: str = "aps", seed: int | None = 0):
        self.level = _check_level(level)
        if score not in CLASSIFICATION_SCORES:
            raise ValueError(f"score must be one of {CLASSIFICATION_SCORES}; got {score!r}")
        self.score, self.seed = score, seed
        self.threshold: torch.Tensor | None = None
        self.n_calibration, self.num_classes = 0, 0

    def _uniform(self, n: int, device, salt: int) -> torch.Tensor:
        g = torch.Generator()
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed * 1_000_003 + salt)
        return torch.rand(n, generator=g).to(device)

    def _class_scores(self, probs: torch.Tensor, salt: int) -> torch.Tensor:
        """Every class's score ``[N, C]``: a class is in the set when its score is <= the threshold."""
        if self.score == "lac":
            return 1 - probs
        order = probs.argsort(dim=1, descending=True, stable=True)
        sorted_p = probs.gather(1, order)
        before = sorted_p.cumsum(1) - sorted_p  # mass of the more probable classes
        u = self._uniform(probs.shape[0], probs.device, salt)[:, None]
        return torch.empty_like(probs).scatter_(1, order, before + u * sorted_p)

    def calibrate(self, pp_cal: PosteriorPredictive, y_cal) -> ConformalClassifier:
        """Compute the threshold from the calibration predictive and its labels; returns ``self``."""
        probs = _predictive(pp_cal, "classification").mean_probs()
        y = torch.as_tensor(y_cal, device=probs.device)
        if y.dim() != 1 or y.shape[0] != probs.shape[0]:
            raise ValueError(f"labels must be 1-D with one per row ({probs.shape[0]}); got shape {tuple(y.shape)}")
        if y.is_floating_point() or ((y < 0) | (y >= probs.shape[1])).any():
            raise ValueError(f"labels must be integers in [0, {probs.shape[1]})")
        scores = self._class_scores(probs, salt=0).gather(1, y.long()[:, None])[:, 0]
        self.threshold = conformal_quantile(scores, self.level)
        self.n_calibration, self.num_classes = y.shape[0], probs.shape[1]
        return self

    def predict_sets(self, pp: PosteriorPredictive, salt: int = 1) -> torch.Tensor:
        """Boolean ``[N, C]``: the classes in each input's prediction set (covers the true class with probability
        >= level). ``salt`` varies the tie-breaking draws between calls with a fixed seed."""
        probs = _predictive(pp, "classification").mean_probs()
        if self.threshold is None:
            raise RuntimeError("call calibrate(pp_cal, y_cal) before predict_sets()")
        if probs.shape[1] != self.num_classes:
            raise ValueError(f"the predictive has {probs.shape[1]} classes; the calibration had {self.num_classes}")
        return self._class_scores(probs, salt) <= self.threshold.to(probs.device)

    def state(self) -> dict:
        """JSON-able state, for :meth:`from_state`."""
        return {"kind": "classification", "level": self.level, "score": self.score, "seed": self.seed,
                "n_calibration": self.n_calibration, "num_classes": self.num_classes,
                "threshold": None if self.threshold is None else float(self.threshold)}

    @classmethod
    def from_state(cls, state: dict) -> ConformalClassifier:
        out = cls(state["level"], state["score"], state.get("seed"))
        out.threshold = torch.tensor(float(state["threshold"]))
        out.n_calibration, out.num_classes = int(state["n_calibration"]), int(state["num_classes"])
        return out


def from_state(state: dict) -> ConformalRegressor | ConformalClassifier:
    """A calibrated predictor from its :meth:`state` (e.g. a run directory's ``conformal.json``)."""
    return (ConformalRegressor if state["kind"] == "regression" else ConformalClassifier).from_state(state)


def _targets(y, pp: PosteriorPredictive) -> torch.Tensor:
    y = pp.targets(y).float()
    want = tuple(pp.mean().shape)
    if y.dim() == 2 and y.shape[1] == 1 and len(want) == 1:
        y = y[:, 0]
    if tuple(y.shape) != want:
        raise ValueError(f"targets must have shape {want} (one per predictive row); got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("targets contain NaN or inf")
    return y


def coverage(lower: torch.Tensor, upper: torch.Tensor, y) -> float:
    """Fraction of targets inside their interval."""
    y = torch.as_tensor(y, dtype=lower.dtype, device=lower.device).reshape(lower.shape)
    return float(((y >= lower) & (y <= upper)).float().mean())


def set_coverage(sets: torch.Tensor, y) -> float:
    """Fraction of rows whose prediction set holds the true label."""
    y = torch.as_tensor(y, device=sets.device).long()
    return float(sets.gather(1, y[:, None]).float().mean())
