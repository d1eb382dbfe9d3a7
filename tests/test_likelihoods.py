"""Likelihoods beyond the seeds': Bernoulli, Categorical read from the net, Normal with [N] and [N, k]
outputs, Student-t, Poisson and a user's own; each trains (loss falls, guide moves) and gets the
predictive summaries that fit it."""
from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.nn.functional import softplus

import pyrobnn
from pyrobnn import MeanFieldNormal, fit, likelihoods, predict, priors
from pyrobnn.fastelbo import MeanFieldELBO

torch.manual_seed(0)
X = torch.randn(160, 3)


def _train(lik, y, k=1, epochs=80):
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, k))
    bnn = pyrobnn.lift(net, likelihood=lik)
    guide = MeanFieldNormal(bnn)
    start = guide.loc_flat.detach().clone()
    hist = fit(bnn, guide, (X, y), epochs=epochs, lr=0.03, progress=False, seed=0)
    assert hist["loss"][-1] < hist["loss"][0]
    assert not torch.equal(start, guide.loc_flat.detach())
    return bnn, guide


def test_bernoulli_one_logit_gives_two_class_summaries():
    y = (X[:, 0] > 0).long()
    bnn, guide = _train(likelihoods.Bernoulli(), y)
    pp = predict(bnn, guide, X, num_samples=200)
    freq, probs = pp.class_frequencies(), pp.mean_probs()
    assert freq.shape == probs.shape == (160, 2)
    torch.testing.assert_close(freq.sum(1), torch.ones(160))
    assert float((probs.argmax(1) == y).float().mean()) > 0.9
    assert (pp.mutual_information() >= 0).all() and (pp.predictive_entropy() <= math.log(2) + 1e-6).all()
    assert float(pp.log_likelihood(y).mean()) > -0.4  # integer labels accepted


def test_categorical_reads_its_classes_from_the_net():
    bnn = pyrobnn.lift(nn.Linear(3, 4), likelihood=likelihoods.Categorical())
    y = torch.randint(0, 4, (160,))
    assert bnn.check_inputs(X, y)[1].max() == 3
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 4\); got 7 at row 5"):
        bnn.check_inputs(X, y.index_fill(0, torch.tensor([5]), 7))


def test_normal_with_k_targets_per_target_noise():
    y = torch.stack([X[:, 0], 3 * X[:, 1]], -1) + torch.tensor([0.1, 1.0]) * torch.randn(160, 2)
    bnn, guide = _train(likelihoods.Normal(scale=None, targets=2), y, k=2, epochs=300)
    sigma = softplus(bnn.likelihood.raw_scale.detach())
    assert sigma.shape == (2,) and sigma[1] > 2 * sigma[0]  # the noisier target gets the wider noise
    pp = predict(bnn, guide, X, num_samples=200)
    lo, hi = pp.interval(0.9)
    assert pp.mean().shape == pp.std().shape == lo.shape == (160, 2)
    assert (lo < hi).all()


def test_inferred_noise_for_k_targets_and_the_fast_path_equals_pyro():
    lik = likelihoods.Normal(scale=None, log_scale_prior=priors.Normal(0.0, 1.0), targets=2)
    bnn = pyrobnn.lift(nn.Linear(3, 2), likelihood=lik)
    guide = MeanFieldNormal(bnn)
    y = torch.randn(160, 2)
    pyro.set_rng_seed(3)
    fast = MeanFieldELBO().differentiable_loss(bnn.model, guide, X, y)
    pyro.set_rng_seed(3)
    ref = TraceMeanField_ELBO().differentiable_loss(bnn.model, guide, X, y)
    torch.testing.assert_close(fast, ref)


def test_student_t_poisson_and_custom_summaries():
    heavy = X[:, 0] + 0.3 * torch.distributions.StudentT(3.0).sample((160,))
    bnn, guide = _train(likelihoods.StudentT(df=3.0, scale=None), heavy)
    pp = predict(bnn, guide, X[:10], num_samples=100)
    assert pp.std().shape == (10,) and bool((pp.interval(0.9)[0] < pp.mean()).all())
    # variance of a Student-t: scale^2 df / (df - 2)
    s = softplus(bnn.likelihood.raw_scale.detach())
    torch.testing.assert_close(pp.aleatoric_variance(), (s ** 2 * 3.0).expand(10), rtol=1e-5, atol=0)

    counts = torch.poisson((0.7 * X[:, 0]).exp())
    bnn, guide = _train(likelihoods.Poisson(), counts)
    pp = predict(bnn, guide, X[:10], num_samples=100)
    torch.testing.assert_close(pp.aleatoric_variance(), pp.locs().mean(0))  # Poisson: variance = mean
    assert float(torch.corrcoef(torch.stack([pp.mean(), (0.7 * X[:10, 0]).exp()]))[0, 1]) > 0.8

    gamma = likelihoods.Custom(lambda out: dist.Gamma(softplus(out[..., 0]) + 1e-3, 1.0), name="gamma")
    bnn, guide = _train(gamma, torch.distributions.Gamma(2.0, 1.0).sample((160,)))
    pp = predict(bnn, guide, X[:10], num_samples=100)
    assert pp.mean().shape == pp.std().shape == (10,) and (pp.draws > 0).all()


def test_pyro_elbo_with_a_custom_likelihood():
    bnn = pyrobnn.lift(nn.Linear(3, 1), likelihood=likelihoods.Custom(lambda out: dist.Laplace(out[..., 0], 1.0)))
    loss = Trace_ELBO().loss(bnn.model, MeanFieldNormal(bnn), X, X[:, 0])
    assert math.isfinite(loss)
