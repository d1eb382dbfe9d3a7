"""fit(kl_weight=...): a constant, a linear warm-up, Blundell et al.'s per-minibatch weights or a function; the fast
path and Pyro's ELBOs (latent sites scaled by pyrobnn.klweight.ScaleLatents) give the same loss on the same draws."""
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal, likelihoods, priors
from pyrobnn.fastelbo import MeanFieldELBO
from pyrobnn.klweight import ScaleLatents, schedule
from tests.test_fastelbo import assert_same_loss_and_gradients, pair


@pytest.mark.parametrize("kind", ["classification", "regression"])
@pytest.mark.parametrize("w", [0.0, 0.3, 2.0])
def test_fast_path_and_pyro_agree_on_the_weighted_loss(kind, w):
    bnn, guide, x, y = pair(kind)
    results = []
    for fast in (False, True):
        pyro.set_rng_seed(5)
        guide.zero_grad()
        if fast:
            elbo = MeanFieldELBO()
            elbo.kl_weight = w
            loss = elbo.differentiable_loss(bnn.model, guide, x, y, data_size=300)
        else:
            loss = TraceMeanField_ELBO(max_plate_nesting=1).differentiable_loss(
                ScaleLatents(w)(bnn.model), ScaleLatents(w)(guide), x, y, data_size=300)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in guide.parameters()]))
    assert_same_loss_and_gradients(results)
    fast = results[1][0]
    # and the weight really enters: the weighted loss is w * KL + NLL of the unweighted parts
    elbo = MeanFieldELBO()
    pyro.set_rng_seed(5)
    elbo.differentiable_loss(bnn.model, guide, x, y, data_size=300)
    kl, nll = elbo.last_parts["kl"], elbo.last_parts["nll"]
    torch.testing.assert_close(fast, w * kl + nll, rtol=1e-5, atol=1e-4)


def test_trace_elbo_kl_is_scaled_too():
    bnn, guide, x, y = pair("classification")
    losses = []
    for w in (0.0, 1.0):
        pyro.set_rng_seed(2)
        loss = Trace_ELBO().differentiable_loss(ScaleLatents(w)(bnn.model), ScaleLatents(w)(guide), x, y,
                                                data_size=300)
        losses.append(float(loss.detach()))
    pyro.set_rng_seed(2)
    elbo = MeanFieldELBO()
    elbo.kl_weight = 0.0
    nll = float(elbo.differentiable_loss(bnn.model, guide, x, y, data_size=300).detach())
    assert losses[0] == pytest.approx(nll, rel=1e-5)  # w = 0 leaves the data term alone
    assert losses[1] != pytest.approx(losses[0], rel=1e-3)


def test_schedules():
    m = 6
    blundell = [schedule("blundell")(1, i, m) for i in range(m)]
    assert sum(blundell) == pytest.approx(m)  # as many KLs per epoch as the constant weight 1
    assert all(a == pytest.approx(2 * b) for a, b in zip(blundell, blundell[1:]))  # halving step by step
    assert [schedule(("warmup", 4))(e, 0, m) for e in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert schedule(None) is None and schedule(1.0) is None
    for bad, msg in [(-1.0, "kl_weight must be >= 0"), (("warmup", 0), "whole number of epochs"),
                     ("bundle", "kl_weight must be a number")]:
        with pytest.raises(ValueError, match=msg):
            schedule(bad)


def _fit(**kw):
    torch.manual_seed(0)
    x = torch.randn(120, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(120)
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)),
                       prior=priors.Normal(0, 1), likelihood=likelihoods.Normal(scale=0.3))
    guide = MeanFieldNormal(bnn, init_scale=0.05)
    before = guide.loc_flat.detach().clone()
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=6, lr=0.02, batch_size=30, seed=1, progress=False, **kw)
    assert not torch.equal(before, guide.loc_flat.detach())
    return hist, guide


def test_fit_records_the_weights_and_fast_equals_pyro():
    hist, _ = _fit(kl_weight=("warmup", 3))
    assert hist["kl_weight"] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])
    assert hist["loss"][-1] < hist["loss"][0]
    hist, _ = _fit(kl_weight="blundell")
    assert hist["kl_weight"] == pytest.approx([1.0] * 6)  # the epoch's mean: M weights summing to M
    fast, g_fast = _fit(kl_weight=0.25)
    slow, g_slow = _fit(kl_weight=0.25, fast=False)
    assert fast["loss"] == pytest.approx(slow["loss"], rel=1e-4)
    torch.testing.assert_close(g_fast.loc_flat, g_slow.loc_flat, rtol=1e-3, atol=1e-4)
    plain, _ = _fit()
    assert "kl_weight" not in plain.last and not math.isclose(plain["loss"][0], fast["loss"][0])
