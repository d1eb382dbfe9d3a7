"""Prior scales by evidence (type-II maximum likelihood): LearnedNormal sigmas trained with the guide."""
import math

import pyro
import pytest
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import Adam
from torch import nn

import pyrobnn
from pyrobnn import checkpoint, likelihoods, priors
from pyrobnn.fastelbo import MeanFieldELBO, supports
from pyrobnn.potential import FlatLayout, Potential


class Residual(nn.Module):
    """A net of its own: a residual tanh block between two Linear layers."""

    def __init__(self, n_in=4):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(n_in, 10), nn.Linear(10, 10), nn.Linear(10, 1)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h + torch.tanh(self.mid(h)))


def _lifted(n_in=4):
    torch.manual_seed(0)
    net = Residual(n_in)
    lik = likelihoods.Normal(scale=None, log_scale_prior=priors.Normal(math.log(0.5), 1.0))
    layer = {k: v for k, v in priors.fan_in_normal(net, learned=True).items() if k != "mid"}
    return pyrobnn.lift(net, prior=priors.Normal(0, 0.8), priors=layer, likelihood=lik)


def test_fast_path_equals_pyro_including_the_prior_scale_gradients():
    bnn = _lifted()
    assert sorted(bnn.prior_log_scales) == ["inp", "out"]
    assert bnn.prior_scales()["inp.weight"] == pytest.approx(0.5) and "mid.weight" not in bnn.prior_scales()
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.3)
    with torch.no_grad():
        bnn.prior_log_scales["out"].fill_(math.log(0.2))  # away from the fan-in start
    assert supports(bnn, guide)
    x, y = torch.randn(25, 4), torch.randn(25)
    params = list(guide.parameters()) + list(bnn.prior_log_scales.values())
    results = []
    for elbo in (TraceMeanField_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1),
                 MeanFieldELBO(num_particles=4)):
        pyro.set_rng_seed(3)
        for p in params:
            p.grad = None
        loss = elbo.differentiable_loss(bnn.model, guide, x, y, data_size=300)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in params]))
    (ref, ref_g), (fast, fast_g) = results
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-4)
    for a, b in zip(fast_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert ref_g[-1].abs() > 0 and ref_g[-2].abs() > 0  # the sigmas get a gradient


def test_type_two_ml_on_real_boston_moves_the_scales_and_raises_the_elbo(tmp_path):
    import pandas as pd

    from tests.conftest import data_file

    df = pd.read_csv(data_file("boston_housing/BostonHousing.csv"))
    x = torch.tensor(df.drop(columns=["medv"]).to_numpy(), dtype=torch.float32)[:, :4]
    y = torch.tensor(df["medv"].to_numpy(), dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    losses = {}
    for learned in (False, True):
        pyro.clear_param_store()
        torch.manual_seed(0)
        net = Residual()
        lik = likelihoods.Normal(scale=None, log_scale_prior=priors.Normal(math.log(0.5), 1.0))
        bnn = pyrobnn.lift(net, priors=priors.fan_in_normal(net, gain=3.0, learned=learned), likelihood=lik)
        guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
        start = dict(bnn.prior_scales())
        hist = pyrobnn.fit(bnn, guide, (x, y), epochs=150, lr=1e-2, batch_size=len(y), num_particles=4, seed=0,
                           progress=False)
        losses[learned] = sum(hist["loss"][-20:]) / 20
        assert hist["loss"][-1] < hist["loss"][0]
        if learned:
            moved = {k: (start[k], v) for k, v in bnn.prior_scales().items()}
            assert all(abs(math.log(b / a)) > 0.05 for a, b in moved.values()), moved
            path = checkpoint.save_posterior(tmp_path / "ev.pt", bnn, guide, x[:1])
            again = pyrobnn.lift(Residual(), priors=priors.fan_in_normal(Residual(), gain=3.0, learned=True),
                                 likelihood=likelihoods.Normal(scale=None,
                                                               log_scale_prior=priors.Normal(math.log(0.5), 1.0)))
            checkpoint.load_posterior(path, again, pyrobnn.MeanFieldNormal(again), x[:1])
            assert again.prior_scales() == bnn.prior_scales()
            # NUTS and the potential take the learned sigmas at their current values
            pot = Potential(bnn, x, y)
            w = FlatLayout(bnn).join(bnn.initial_values())
            tr = pyro.poutine.trace(pyro.poutine.condition(bnn.model, FlatLayout(bnn).split(w))).get_trace(x, y)
            assert float(pot.value_and_grad(w)[1]) == pytest.approx(-float(tr.log_prob_sum().detach()), rel=1e-5)
    assert losses[True] < losses[False]  # maximising over the prior scales too gives a higher ELBO


def test_a_plain_pyro_svi_loop_trains_the_prior_scales():
    bnn = _lifted()
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.1)
    x = torch.randn(60, 4)
    y = x[:, 0] - 0.5 * x[:, 1]
    before = bnn.prior_scales()
    svi = SVI(bnn.model, guide, Adam({"lr": 0.05}), TraceMeanField_ELBO())
    for _ in range(30):
        svi.step(x, y)
    assert all(before[k] != v for k, v in bnn.prior_scales().items())
