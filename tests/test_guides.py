import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal, auto_normal


def mlp():
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def _kl_only_losses(elbo, bnn, guide, n=200):
    # the model without its likelihood: only the weight sites, so the ELBO is -KL(q || p)
    return torch.tensor([elbo.loss(bnn.sample_weights, guide) for _ in range(n)])


def test_meanfield_guide_gives_zero_variance_kl_under_tracemeanfield():
    bnn = pyrobnn.lift(mlp())
    guide = MeanFieldNormal(bnn, init_scale=0.3)
    analytic = _kl_only_losses(TraceMeanField_ELBO(), bnn, guide)
    assert (analytic == analytic[0]).all()  # bit-identical, draw after draw
    assert analytic[0] > 0
    # the same pair under Trace_ELBO is a Monte Carlo estimate: non-zero spread, same mean
    sampled = _kl_only_losses(Trace_ELBO(), bnn, guide)
    assert sampled.std() > 1.0
    assert sampled.mean() == pytest.approx(float(analytic[0]), rel=0.05)


def test_autonormal_kl_is_sampled_not_analytic():
    # documented limitation of AutoNormal (Delta at the site): TraceMeanField cannot use the closed form
    bnn = pyrobnn.lift(mlp())
    guide = auto_normal(bnn, init_scale=0.3)
    losses = _kl_only_losses(TraceMeanField_ELBO(), bnn, guide, n=50)
    assert losses.std() > 0


def test_guide_init_from_net_and_from_prior():
    net = mlp()
    bnn = pyrobnn.lift(net)
    g = MeanFieldNormal(bnn, init="net", init_scale=0.05)
    torch.testing.assert_close(g.loc["0.weight"], net[0].weight.detach())
    torch.testing.assert_close(g.scale("0.weight"), torch.full((16, 2), 0.05))
    gp = MeanFieldNormal(bnn, init="prior")
    assert not torch.allclose(gp.loc["0.weight"], net[0].weight)
    assert 0.7 < float(gp.loc["0.weight"].detach().std()) < 1.3  # a draw from N(0, 1)
    an = auto_normal(bnn, init="net")
    an(torch.randn(3, 2))
    torch.testing.assert_close(an.median()["0.weight"], net[0].weight.detach())


def test_vectorised_particles_train_a_lifted_sequential():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    bnn = pyrobnn.lift(mlp())
    guide = MeanFieldNormal(bnn)
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=60, lr=0.02, batch_size=50, num_particles=8,
                       vectorize_particles=True, loss="trace", seed=1, progress=False, val_data=(x, y),
                       val_every=60)
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist.last["val_accuracy"] > 0.8


def test_vectorised_particle_elbo_is_the_mean_of_single_particle_elbos():
    bnn = pyrobnn.lift(mlp())
    guide = MeanFieldNormal(bnn, init_scale=0.2)
    x, y = torch.randn(30, 2), torch.randint(0, 3, (30,))
    one = torch.tensor([Trace_ELBO().loss(bnn.model, guide, x, y) for _ in range(400)])
    vec = torch.tensor([Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
                        .loss(bnn.model, guide, x, y) for _ in range(50)])
    assert vec.mean() == pytest.approx(float(one.mean()), rel=0.03)
    assert vec.std() < one.std()  # 8 particles average out noise


def test_fit_trains_autonormal_and_handwritten_param_store_guides():
    x = torch.randn(100, 2)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(2, 2))
    bnn = pyrobnn.lift(net)

    def guide(x, y=None, data_size=None):
        wl = pyro.param("wl", torch.zeros(2, 2))
        ws = pyro.param("ws", torch.full((2, 2), 0.1), constraint=pyro.distributions.constraints.positive)
        bl = pyro.param("bl", torch.zeros(2))
        pyro.sample("0.weight", pyro.distributions.Normal(wl, ws).to_event(2))
        pyro.sample("0.bias", pyro.distributions.Normal(bl, 0.1).to_event(1))

    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=80, lr=0.05, seed=0, progress=False, val_data=(x, y))
    assert hist.last["val_accuracy"] > 0.9
    assert float((pyro.param("wl")[1, 0] - pyro.param("wl")[0, 0]).detach()) > 0.5  # learnt: class 1 <-> x0 > 0
