"""Split-conformal prediction over the posterior predictive: coverage over many random calibration/test splits of a
simulated problem stays in its band, the finite-sample rule, [N, k] targets, saved state and bad input."""
import math

import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn import likelihoods
from pyrobnn.conformal import (
    ConformalClassifier,
    ConformalRegressor,
    conformal_quantile,
    coverage,
    from_state,
    min_calibration_rows,
    set_coverage,
)

N_CAL, SPLITS, LEVEL = 100, 300, 0.9


def _trained(x, y, likelihood, n_out, epochs=150):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(x.shape[1], 32), nn.Tanh(), nn.Linear(32, n_out))
    bnn = pyrobnn.lift(net, likelihood=likelihood)
    guide = pyrobnn.MeanFieldNormal(bnn)
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=epochs, lr=1e-2, seed=0, progress=False)
    assert hist["loss"][-1] < hist["loss"][0]
    return bnn, guide


def _band(coverages):
    """Split conformal: the expected coverage over random splits lies in [level, level + 1 / (n + 1)]; the mean
    of SPLITS splits may stray from it by its sampling error (4 standard errors here)."""
    c = torch.tensor(coverages, dtype=torch.float64)
    se = float(c.std() / math.sqrt(len(c)))
    return float(c.mean()), LEVEL - 4 * se, LEVEL + 1 / (N_CAL + 1) + 4 * se


def _splits(n):
    g = torch.Generator().manual_seed(1)
    for _ in range(SPLITS):
        perm = torch.randperm(n, generator=g)
        yield perm[:N_CAL], perm[N_CAL:]


@pytest.fixture(scope="module")
def regression_case():
    """Heteroscedastic data (noise 0.1 + 0.4 |x|) fitted with a fixed homoscedastic noise of 0.3: the Bayesian
    intervals are wrong by construction."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3300, 1, generator=g) * 6 - 3
    y = torch.sin(x[:, 0]) + (0.1 + 0.4 * x[:, 0].abs()) * torch.randn(3300, generator=g)
    bnn, guide = _trained(x[:300], y[:300], likelihoods.Normal(scale=0.3), 1)
    pp = pyrobnn.predict(bnn, guide, x[300:], num_samples=100, seed=0)
    return pp, y[300:]


@pytest.mark.parametrize("score", ["cqr", "normalized"])
def test_regression_coverage_over_random_splits(regression_case, score):
    pp, y = regression_case
    conf, widths = [], []
    for cal, test in _splits(len(y)):
        lo, hi = ConformalRegressor(LEVEL, score).calibrate(pp.select(cal), y[cal]).interval(pp.select(test))
        conf.append(coverage(lo, hi, y[test]))
        widths.append(float((hi - lo).mean()))
    mean, low, high = _band(conf)
    print(f"{score}: mean coverage {mean:.4f}, band [{low:.4f}, {high:.4f}]")
    assert low <= mean <= high, (score, mean, low, high)
    blo, bhi = pp.interval(LEVEL)
    assert coverage(blo, bhi, y) < 0.85  # the misspecified model's own interval under-covers
    assert all(w > 0 for w in widths)


@pytest.fixture(scope="module")
def classification_case():
    """Three overlapping Gaussian classes in 2-D."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (3300,), generator=g)
    centres = torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    x = centres[y] + torch.randn(3300, 2, generator=g)
    bnn, guide = _trained(x[:300], y[:300], "categorical", 3, epochs=100)
    return pyrobnn.predict(bnn, guide, x[300:], num_samples=30, seed=0), y[300:]


@pytest.mark.parametrize("score", ["aps", "lac"])
def test_classification_coverage_over_random_splits(classification_case, score):
    pp, y = classification_case
    conf, sizes = [], []
    for k, (cal, test) in enumerate(_splits(len(y))):
        sets = ConformalClassifier(LEVEL, score, seed=k).calibrate(pp.select(cal), y[cal]).predict_sets(pp.select(test))
        conf.append(set_coverage(sets, y[test]))
        sizes.append(float(sets.sum(1).float().mean()))
    mean, low, high = _band(conf)
    print(f"{score}: mean coverage {mean:.4f}, band [{low:.4f}, {high:.4f}]")
    assert low <= mean <= high, (score, mean, low, high)
    assert 1.0 < sum(sizes) / len(sizes) < 3.0  # informative sets: more than one class on average, not all three


def test_finite_sample_rule_and_too_small_calibration():
    scores = torch.arange(1.0, 20.0)  # 19 scores: k = ceil(20 * 0.9) = 18
    assert float(conformal_quantile(scores, 0.9)) == 18.0
    assert min_calibration_rows(0.9) == 9 and min_calibration_rows(0.95) == 19 and min_calibration_rows(0.5) == 1
    assert float(conformal_quantile(torch.arange(9.0), 0.9)) == 8.0
    with pytest.raises(ValueError, match="8 rows is too small for level 0.9: it needs at least 9"):
        conformal_quantile(torch.arange(8.0), 0.9)


def _tiny_regression(n_out=1, n=40):
    torch.manual_seed(0)
    bnn = pyrobnn.lift(nn.Linear(2, n_out), likelihood=likelihoods.Normal(scale=0.5))
    guide = pyrobnn.MeanFieldNormal(bnn)
    return pyrobnn.predict(bnn, guide, torch.randn(n, 2), num_samples=50, seed=0)


def test_multi_output_targets_rescaled_units_and_state_round_trip():
    pp = _tiny_regression(n_out=3).rescaled(10.0, 2.0)
    y = pp.mean() + 2.0 * torch.randn(40, 3)
    conf = ConformalRegressor(0.8, "normalized").calibrate(pp, y)
    assert conf.threshold.shape == (3,)
    lo, hi = conf.interval(pp)
    assert lo.shape == hi.shape == (40, 3) and bool((hi > lo).all())
    again = from_state(conf.state())
    torch.testing.assert_close(again.interval(pp)[0], lo)


def _tiny_classifier(n_classes=4, n=30):
    torch.manual_seed(0)
    bnn = pyrobnn.lift(nn.Linear(2, n_classes))
    return pyrobnn.predict(bnn, pyrobnn.MeanFieldNormal(bnn), torch.randn(n, 2), num_samples=20, seed=0)


def test_classifier_state_round_trip_and_seeded_ties():
    pp, y = _tiny_classifier(), torch.randint(0, 4, (30,))
    clf = ConformalClassifier(0.8, "aps", seed=3).calibrate(pp, y)
    sets = clf.predict_sets(pp)
    assert sets.shape == (30, 4) and sets.dtype == torch.bool
    assert torch.equal(from_state(clf.state()).predict_sets(pp), sets)  # same seed: same tie-breaking
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 4\)"):
        clf.calibrate(pp, torch.full((30,), 4))
    with pytest.raises(ValueError, match="the predictive has 3 classes; the calibration had 4"):
        clf.predict_sets(_tiny_classifier(3))


@pytest.mark.parametrize("bad, message", [
    (lambda pp, y: ConformalRegressor(1.0), "level must lie in"),
    (lambda pp, y: ConformalRegressor(0.9, "absolute"), "score must be one of"),
    (lambda pp, y: ConformalClassifier(0.9).calibrate(pp, y.long()), "needs a classification predictive"),
    (lambda pp, y: ConformalRegressor(0.9).calibrate(pp, y[:10]), r"targets must have shape \(40,\)"),
    (lambda pp, y: ConformalRegressor(0.9).calibrate(pp, torch.full((40,), float("nan"))), "NaN or inf"),
    (lambda pp, y: ConformalRegressor(0.9).interval(pp), "call calibrate"),
    (lambda pp, y: ConformalRegressor(0.9).calibrate(pp.mean(), y), "expected a PosteriorPredictive"),
    (lambda pp, y: ConformalRegressor(0.99).calibrate(pp, y), "40 rows is too small for level 0.99"),
    (lambda pp, y: ConformalRegressor(0.9).calibrate(pp, y).interval(_tiny_regression(n_out=2)), "output"),
])
def test_bad_input_gives_one_line_errors(bad, message):
    pp = _tiny_regression()
    y = pp.mean() + torch.randn(40)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message) as err:
        bad(pp, y)
    assert "\n" not in str(err.value)
