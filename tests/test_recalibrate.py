"""Temperature scaling of a classification predictive: a known answer and the input checks."""
import pytest
import torch

import pyrobnn
from pyrobnn import likelihoods


def test_fit_temperature_undoes_a_known_over_confidence():
    g = torch.Generator().manual_seed(0)
    z = 1.5 * torch.randn(20000, 4, generator=g)  # true logits
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=g)[:, 0]
    draws = 2.0 * z + 0.01 * torch.randn(20, 20000, 4, generator=g)  # every draw twice as sharp as the truth
    pp = pyrobnn.PosteriorPredictive(draws, likelihoods.Categorical(4))
    t = pyrobnn.fit_temperature(pp, y)
    assert t == pytest.approx(2.0, rel=0.05)
    fixed = pp.with_temperature(t)
    assert float(fixed.log_likelihood(y).mean()) > float(pp.log_likelihood(y).mean())
    assert torch.equal(fixed.predicted_class(), pp.predicted_class())  # one temperature keeps each argmax


def test_temperature_input_checks():
    pp = pyrobnn.PosteriorPredictive(torch.zeros(3, 5, 2), likelihoods.Categorical(2))
    with pytest.raises(ValueError, match="5 finite targets"):
        pyrobnn.fit_temperature(pp, torch.zeros(4))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        pp.with_temperature(-1.0)
    reg = pyrobnn.PosteriorPredictive(torch.zeros(3, 5, 1), likelihoods.Normal(scale=1.0))
    with pytest.raises(ValueError, match="this summary is for classification"):
        pyrobnn.fit_temperature(reg, torch.zeros(5))
