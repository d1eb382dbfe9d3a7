"""Regression: a closed-form check of SVI, the noise options, and the predictive variance split."""
import math

import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal, likelihoods, metrics, predict, priors


def test_mean_field_svi_recovers_the_closed_form_posterior_of_bayesian_linear_regression():
    # y = X w + eps, eps ~ N(0, sigma^2) known, w ~ N(0, alpha^2 I). With an orthogonal design
    # (X^T X = n I) the exact posterior factorises, so mean-field is exact:
    #   cov = (n / sigma^2 + 1 / alpha^2)^-1 I,   mean = cov X^T y / sigma^2
    g = torch.Generator().manual_seed(0)
    n, d, sigma, alpha = 64, 4, 2.0, 1.0
    q, _ = torch.linalg.qr(torch.randn(n, d, generator=g))
    x = q * math.sqrt(n)
    w_true = torch.tensor([1.5, -0.8, 0.6, 2.0])
    y = x @ w_true + sigma * torch.randn(n, generator=g)
    var = 1.0 / (n / sigma**2 + 1 / alpha**2)
    mean = var * (x.T @ y) / sigma**2

    bnn = pyrobnn.lift(nn.Linear(d, 1, bias=False), prior=priors.Normal(0, alpha),
                       likelihood=likelihoods.Normal(scale=sigma))
    guide = MeanFieldNormal(bnn, init="prior", init_scale=0.5)
    pyrobnn.fit(bnn, guide, (x, y), epochs=1500, lr=0.03, loss="meanfield", num_particles=16, seed=0,
                progress=False, optimizer="clipped_adam", lr_decay=0.998)
    loc = guide.loc["weight"].detach()[0]
    scale = guide.scale("weight").detach()[0]
    torch.testing.assert_close(loc, mean, rtol=0.02, atol=0)
    torch.testing.assert_close(scale, torch.full((d,), math.sqrt(var)), rtol=0.10, atol=0)


def test_inferred_noise_site_and_variance_split():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(400, 1, generator=g) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.3 * torch.randn(400, generator=g)
    net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
    lik = likelihoods.Normal(scale=None, log_scale_prior=priors.Normal(math.log(0.5), 1.0))
    bnn = pyrobnn.lift(net, likelihood=lik)
    assert "obs_log_scale" in bnn.site_names and bnn.shapes["obs_log_scale"] == ()
    guide = MeanFieldNormal(bnn, init_scale=0.05)
    pyrobnn.fit(bnn, guide, (x, y), epochs=600, lr=0.01, batch_size=100, seed=0, progress=False)
    noise = guide.loc["obs_log_scale"].exp().item()
    fit_rmse = metrics.rmse(predict(bnn, guide, x, num_samples=500, seed=0).mean(), y)
    assert noise == pytest.approx(fit_rmse, rel=0.15)  # the noise site explains the residuals
    assert 0.25 < noise < 0.45  # true noise 0.3, plus what the net has not fitted yet
    pp = predict(bnn, guide, torch.tensor([[0.0], [1.0], [6.0]]), num_samples=4000, seed=0)
    torch.testing.assert_close(pp.std() ** 2, pp.epistemic_variance() + pp.aleatoric_variance())
    ep = pp.epistemic_variance()
    assert ep[2] > 2 * ep[0]  # far outside the data (x = 6) the net is less sure
    lo, hi = pp.interval(0.9)
    lo2, hi2 = pp.quantiles([0.05, 0.95])
    torch.testing.assert_close(lo, lo2) and torch.testing.assert_close(hi, hi2)
    rep = metrics.regression_report(predict(bnn, guide, x, num_samples=1000, seed=0), y)
    assert 0.85 <= rep["coverage_90"] <= 0.97 and rep["rmse"] < 0.45


def test_heteroscedastic_net_learns_input_dependent_noise():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(600, 1, generator=g) * 2 - 1
    y = x[:, 0] + (0.05 + 0.5 * (x[:, 0] > 0)) * torch.randn(600, generator=g)
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 2)),
                       likelihood=likelihoods.Normal(scale=None, heteroscedastic=True))
    guide = MeanFieldNormal(bnn, init_scale=0.02)
    pyrobnn.fit(bnn, guide, (x, y), epochs=400, lr=0.01, batch_size=100, seed=0, progress=False)
    pp = predict(bnn, guide, torch.tensor([[-0.5], [0.5]]), num_samples=2000, seed=0)
    alea = pp.aleatoric_variance().sqrt()
    assert alea[0] < 0.15 and 0.35 < alea[1] < 0.7


def test_rescaled_predictive_is_in_original_units():
    bnn = pyrobnn.lift(nn.Linear(1, 1), likelihood=likelihoods.Normal(scale=0.5))
    guide = MeanFieldNormal(bnn, init_scale=1e-4)
    pp = predict(bnn, guide, torch.zeros(3, 1), num_samples=5000, seed=0)
    orig = pp.rescaled(mean=10.0, std=4.0)
    torch.testing.assert_close(orig.mean(), pp.mean() * 4 + 10)
    torch.testing.assert_close(orig.std(), pp.std() * 4, rtol=1e-4, atol=1e-4)
    y = torch.tensor([0.3, -0.2, 0.0])
    ll = pp.log_likelihood(y)
    torch.testing.assert_close(orig.log_likelihood(y * 4 + 10), ll - math.log(4), rtol=1e-4, atol=1e-4)


def _fixed_noise_predictive(means: torch.Tensor, noise: float, spread: float = 0.0, draws: int = 50):
    """A predictive in which every weight draw gives ``means`` (+ N(0, spread) per draw) and noise std ``noise``."""
    g = torch.Generator().manual_seed(1)
    out = means.expand(draws, -1) + spread * torch.randn(draws, 1, generator=g)
    return pyrobnn.PosteriorPredictive(out.unsqueeze(-1), likelihoods.Normal(scale=noise))


def test_noise_factor_scales_the_aleatoric_part_only():
    pp = _fixed_noise_predictive(torch.linspace(-1, 1, 5), noise=2.0, spread=0.5)
    half = pp.with_noise_factor(0.5)
    torch.testing.assert_close(half.aleatoric_variance(), pp.aleatoric_variance() / 4)
    torch.testing.assert_close(half.epistemic_variance(), pp.epistemic_variance())
    torch.testing.assert_close(half.mean(), pp.mean())
    with pytest.raises(ValueError, match="noise factor must be a finite number > 0"):
        pp.with_noise_factor(0.0)


def test_fit_noise_factor_recovers_the_noise_of_held_out_data():
    # no epistemic spread: the best factor is the rms residual over the model's noise (a known answer)
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4000, generator=g)
    y = means + 0.7 * torch.randn(4000, generator=g)
    c = pyrobnn.fit_noise_factor(_fixed_noise_predictive(means, noise=2.0), y)
    assert c == pytest.approx(float((y - means).pow(2).mean().sqrt()) / 2.0, rel=0.01)
    with pytest.raises(ValueError, match="edge of"):
        pyrobnn.fit_noise_factor(_fixed_noise_predictive(means, noise=100.0), y)
    with pytest.raises(ValueError, match="4000 finite targets"):
        pyrobnn.fit_noise_factor(_fixed_noise_predictive(means, noise=2.0), y[:10])


def test_on_boston_the_elbo_noise_absorbs_the_epistemic_variance_and_held_out_data_shrinks_it():
    """Why mean-field intervals come out wide: the inferred noise variance matches the training MSE
    plus the weight posterior's variance at the training points, which the predictive adds again."""
    from pyrobnn.experiments.boston import load_boston
    from pyrobnn.experiments.regression import RegressionConfig, evaluate, fit_regressor, holdout_noise_factor
    from tests.conftest import data_file

    x, y, _ = load_boston(data_file("boston_housing/BostonHousing.csv"))
    cfg = RegressionConfig(steps=1500, num_samples=500)
    bnn, guide, scaling, _ = fit_regressor(x[:380], y[:380], cfg)
    _, pp = evaluate(bnn, guide, scaling, x[:380], y[:380], cfg.num_samples)
    mse = float((pp.mean() - y[:380]).pow(2).mean())
    assert float(pp.aleatoric_variance().mean()) == pytest.approx(mse + float(pp.epistemic_variance().mean()), rel=0.15)
    factor, hist = holdout_noise_factor(x[:380], y[:380], cfg, 0.2)
    assert not hist.interrupted and 0.3 < factor < 0.95
