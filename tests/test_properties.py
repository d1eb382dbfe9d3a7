"""Property-based tests (hypothesis) of the loaders and the predictive summaries."""
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pyrobnn import likelihoods, metrics
from pyrobnn.data import check_labels, read_csv
from pyrobnn.predictive import PosteriorPredictive

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.just(3)), elements=finite))
def test_csv_round_trip(tmp_path, values):
    path = tmp_path / "t.csv"
    pd.DataFrame(values, columns=["a", "b", "c"]).to_csv(path)
    df = read_csv(path, ["a", "b", "c"], index_col=0)
    np.testing.assert_allclose(df.to_numpy(), values, rtol=1e-12)


@SETTINGS
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.integers(-3, k + 2), min_size=1,
                                                                          max_size=40))))
def test_labels_accepted_exactly_when_in_range(case):
    k, labels = case
    bad = [i for i, v in enumerate(labels) if not 0 <= v < k]
    if not bad:
        assert check_labels(np.array(labels), k).tolist() == labels
    else:
        with pytest.raises(ValueError, match=f"got {labels[bad[0]]} at row {bad[0]}$"):
            check_labels(np.array(labels), k)


@SETTINGS
@given(st.integers(1, 50), st.integers(1, 8), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_classification_summaries(s, n, c, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(s, n, c, generator=g) * 5
    pp = PosteriorPredictive(logits, likelihoods.Categorical(c))
    for freq in (pp.class_frequencies(), pp.class_frequencies(votes=True)):
        assert freq.shape == (n, c) and (freq >= 0).all()
        torch.testing.assert_close(freq.sum(1), torch.ones(n))
    torch.testing.assert_close(pp.mean_probs().sum(1), torch.ones(n))
    mi = pp.mutual_information()
    assert (mi >= 0).all() and (pp.predictive_entropy() <= np.log(c) + 1e-5).all()
    y = torch.randint(0, c, (n,), generator=g)
    assert 0.0 <= metrics.ece(pp.mean_probs(), y) <= 1.0
    assert 0.0 <= metrics.brier(pp.mean_probs(), y) <= 2.0


@SETTINGS
@given(st.integers(2, 60), st.integers(1, 10), st.floats(0.05, 0.99), st.integers(0, 2**31 - 1))
def test_regression_intervals_are_ordered_and_coverage_is_a_share(s, n, level, seed):
    g = torch.Generator().manual_seed(seed)
    pp = PosteriorPredictive(torch.randn(s, n, 1, generator=g), likelihoods.Normal(scale=0.3))
    lo, hi = pp.interval(level)
    assert lo.shape == (n,) and (lo <= hi).all()
    lo2, hi2 = pp.interval(min(0.999, level + 0.1 * (1 - level)))
    assert (lo2 <= lo + 1e-6).all() and (hi2 >= hi - 1e-6).all()  # wider level, wider interval
    cov = metrics.coverage(lo, hi, torch.randn(n, generator=g))
    assert 0.0 <= cov <= 1.0
