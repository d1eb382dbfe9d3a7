"""NUTS reference posteriors: the lean potential against Pyro's trace, the sampler on real egg data, and
the posterior through predict, Pyro's Predictive, checkpoints and ArviZ."""
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive
from torch import nn

import pyrobnn
from pyrobnn import checkpoint, likelihoods, priors
from pyrobnn.mcmc import MCMCPosterior, nuts, rank_rhat_ess
from pyrobnn.models.egg import EggNet
from pyrobnn.models.mnist import mlp
from pyrobnn.potential import FlatLayout, Potential
from tests.conftest import data_file


class GatedRegressor(nn.Module):
    """A net of its own: a gated hidden layer, a deterministic skip and an output of shape [N]."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 6), nn.Linear(3, 6), nn.Linear(6, 1)
        self.skip = nn.Linear(3, 1)

    def forward(self, x):
        return (self.out(torch.tanh(self.a(x)) * torch.sigmoid(self.b(x))) + self.skip(x)).squeeze(-1)


def _regressor():
    torch.manual_seed(1)
    net = GatedRegressor()
    lik = likelihoods.Normal(scale=None, log_scale_prior=priors.Normal(math.log(0.5), 1.0))
    bnn = pyrobnn.lift(net, prior=priors.Normal(0, 1.5), likelihood=lik,
                       priors={"b": priors.Laplace(0, 0.7), "skip": None,
                               "a.bias": priors.TensorNormal(torch.linspace(-1, 1, 6), torch.full((6,), 0.5))})
    x = torch.randn(40, 3)
    y = torch.sin(x[:, 0]) + 0.3 * x[:, 1] + 0.1 * torch.randn(40)
    return bnn, x, y


def _pyro_log_joint(bnn, values, x, y):
    tr = poutine.trace(poutine.condition(bnn.model, values)).get_trace(x, y)
    return tr.log_prob_sum()


@pytest.mark.parametrize("chains", [None, 3])
def test_potential_equals_pyros_log_joint_and_gradient(chains):
    bnn, x, y = _regressor()
    layout = FlatLayout(bnn)
    assert layout.sites[-1] == "obs_log_scale" and "skip.weight" not in layout.sites
    pot = Potential(bnn, x, y, chains=chains)
    w0 = layout.join(bnn.initial_values())
    w = w0 + 0.3 * torch.randn(chains or 1, layout.dim)
    grad, energy = pot.value_and_grad(w if chains else w[0])
    total = 0.0
    for i in range(chains or 1):
        wi = w[i].clone().requires_grad_(True)
        lj = _pyro_log_joint(bnn, layout.split(wi), x, y)
        (g,) = torch.autograd.grad(lj, wi)
        gi = grad[i] if chains else grad
        assert torch.allclose(-gi, g, rtol=1e-4, atol=1e-4)
        total += float(lj.detach())
    assert float(energy) == pytest.approx(-total, rel=1e-5)
    # the Pyro form is differentiable and gives the same gradient
    z = {"w": (w if chains else w[0]).clone().requires_grad_(True)}
    (g2,) = torch.autograd.grad(pot.potential_fn(z), z["w"])
    assert torch.allclose(g2, grad)


class PackedClassifier(nn.Module):
    """Variable-length rows through pack_padded_sequence: the lengths must be concrete, so make_fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4, padding_idx=0)
        self.gru, self.out = nn.GRU(4, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, ids):
        lengths = (ids != 0).sum(1).clamp_min(1).cpu()
        _, h = self.gru(nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                                          enforce_sorted=False))
        return self.out(h[-1])


@pytest.mark.parametrize("chains", [None, 2])
def test_a_net_make_fx_cannot_trace_gets_the_call_by_call_potential_and_samples(chains):
    """NUTS on it failed ("trying to get value out of a tracing tensor")."""
    torch.manual_seed(0)
    bnn = pyrobnn.lift(PackedClassifier())
    lengths = torch.randint(1, 6, (12,))
    x = torch.randint(1, 10, (12, 5)) * (torch.arange(5) < lengths[:, None])
    y = (x[:, 0] > 4).long()
    pot = Potential(bnn, x, y, chains=chains)
    assert not pot.traced
    layout = FlatLayout(bnn)
    w = layout.join(bnn.initial_values()) + 0.2 * torch.randn(chains or 1, layout.dim)
    grad, energy = pot.value_and_grad(w if chains else w[0])
    wi = w[0].clone().requires_grad_(True)
    lj = _pyro_log_joint(bnn, layout.split(wi), x, y)
    (g,) = torch.autograd.grad(lj, wi)
    torch.testing.assert_close(-(grad[0] if chains else grad), g, rtol=1e-4, atol=1e-4)
    if chains is None:
        assert float(energy) == pytest.approx(-float(lj), rel=1e-5)
        return
    post = nuts(bnn, (x, y), num_samples=6, warmup_steps=6, num_chains=2, max_tree_depth=3, seed=0, progress=False)
    pp = pyrobnn.predict(bnn, post, x, num_samples=12)
    assert pp.outputs.shape == (12, 12, 2) and torch.isfinite(pp.outputs).all()


def test_bad_input_is_refused_in_one_line():
    bnn, x, y = _regressor()
    for kwargs, match in [({"num_samples": 0}, "num_samples must be an integer >= 1"),
                          ({"warmup_steps": 0}, "warmup_steps must be an integer >= 1"),
                          ({"chain_method": "threads"}, "chain_method must be one of"),
                          ({"init": "zeros"}, "init must be 'net', 'map' or a dict"),
                          ({"init": {"a.weight": torch.zeros(6, 3)}}, "init: no value for site"),
                          ({"kernel": "gibbs"}, "kernel must be 'nuts' or 'hmc'")]:
        args = {"num_samples": 5, "warmup_steps": 5, "progress": False, **kwargs}
        with pytest.raises(ValueError, match=match):
            nuts(bnn, (x, y), **args)
    big = pyrobnn.lift(mlp())
    with pytest.raises(ValueError, match=r"NUTS evaluates all 10,000 rows .* train it with SVI"):
        nuts(big, (torch.rand(10_000, 784), torch.randint(0, 10, (10_000,))), 10, 10, progress=False)


def test_rank_rhat_flags_chains_that_disagree():
    g = torch.Generator().manual_seed(0)
    same = torch.randn(2, 400, 3, generator=g, dtype=torch.float64)
    rhat, ess = rank_rhat_ess(same)
    assert rhat.max() < 1.02 and ess.min() > 500
    apart = same + torch.tensor([0.0, 1.0], dtype=torch.float64)[:, None, None]
    assert rank_rhat_ess(apart)[0].min() > 1.1  # one std apart: R-hat about 1.14


def _egg(egg_csv):
    from experiments.egg_data import load_egg_csv, split_last

    train, test = split_last(load_egg_csv(egg_csv))

    def tensors(df: pd.DataFrame):
        return (torch.tensor(df[["weight", "time"]].to_numpy(), dtype=torch.float32),
                torch.tensor(df["outcome"].to_numpy()))

    return tensors(train), tensors(test)


def test_two_batched_chains_on_real_eggs(egg_csv, tmp_path):
    (x, y), (xt, yt) = _egg(egg_csv)
    torch.manual_seed(0)
    net = EggNet((8,))
    net.standardize.fit(x)
    bnn = pyrobnn.lift(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    post = nuts(bnn, (x, y), num_samples=150, warmup_steps=150, num_chains=2, init="map", map_steps=1000,
                max_tree_depth=6, seed=0, progress=False)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the net is left as it was
    assert post.draws.shape == (2, 150, FlatLayout(bnn).dim)
    assert post.chain_samples["1.weight"].shape == (2, 150, 8, 2)
    assert not torch.equal(post.draws[0, 0], post.draws[0, -1])  # the chains moved
    diag = post.diagnostics(bnn, xt)
    assert diag["rhat_max"] <= 1.1 and diag["ess_bulk_min"] >= 10, diag
    assert diag["divergences"] <= 3 and diag["grad_evals"][0] > 300
    json.dumps(diag)

    pp = pyrobnn.predict(bnn, post, xt, num_samples=300)
    acc = float((pp.mean_probs().argmax(-1) == yt).float().mean())
    assert acc >= 0.7, acc
    # Pyro's own Predictive takes the samples as they are
    pred = Predictive(bnn.model, posterior_samples=post.samples, return_sites=["obs"], parallel=True)(xt)
    assert pred["obs"].shape == (300, len(xt))
    agree = (pred["obs"].float().mode(0).values == pp.class_frequencies().argmax(-1)).float().mean()
    assert agree >= 0.9

    # checkpoint: tensors + JSON, into an empty posterior; same predictive after
    path = checkpoint.save_posterior(tmp_path / "nuts.pt", bnn, post, x, meta={"diagnostics": diag})
    loaded = MCMCPosterior(bnn)
    meta = checkpoint.load_posterior(path, bnn, loaded, x)
    assert meta["diagnostics"]["rhat_max"] == diag["rhat_max"]
    assert torch.equal(loaded.draws, post.draws) and loaded.stats()["step_size"] == post.stats()["step_size"]
    torch.testing.assert_close(pyrobnn.predict(bnn, loaded, xt, num_samples=300).outputs, pp.outputs)

    # a posterior from another net is refused by predict and by load_posterior
    other = pyrobnn.lift(EggNet((5,)))
    with pytest.raises(ValueError, match="the posterior does not fit this net"):
        pyrobnn.predict(other, post, xt)
    with pytest.raises(ValueError, match="does not match the network"):
        checkpoint.load_posterior(path, other, MCMCPosterior(other), x)

    az = pytest.importorskip("arviz")
    from pyrobnn.export import to_inference_data

    idata = to_inference_data(bnn, post, xt, y=yt)
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 150
    assert idata.posterior_predictive["obs"].shape == (2, 150, len(xt))
    assert float(az.rhat(idata.log_likelihood)["obs"].max()) < 1.2


def test_sequential_chains_run_independently_and_hmc_samples():
    bnn, x, y = _regressor()
    post = nuts(bnn, (x, y), num_samples=20, warmup_steps=20, num_chains=2, chain_method="sequential",
                max_tree_depth=5, seed=3, progress=False)
    st = post.stats()
    assert st["method"] == "sequential" and len(st["step_size"]) == 2 and st["step_size"][0] != st["step_size"][1]
    assert post.samples["obs_log_scale"].shape == (40,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pyro runs them in turn where cores are short, and says so
        multi = nuts(bnn, (x, y), num_samples=10, warmup_steps=10, num_chains=2, chain_method="parallel",
                     max_tree_depth=4, seed=3, progress=False)
    assert multi.draws.shape == (2, 10, post.layout.dim) and not torch.equal(multi.draws[0], multi.draws[1])
    hmc = nuts(bnn, (x, y), num_samples=50, warmup_steps=100, kernel="hmc", trajectory_length=0.3, seed=3,
               progress=False)
    assert hmc.stats()["accept_rate"][0] > 0.5 and hmc.samples["b.weight"].std(0).min() > 0
    with pytest.raises(ValueError, match="holds no draws"):
        pyrobnn.predict(bnn, MCMCPosterior(bnn), x)


def test_dense_mass_samples_an_exact_gaussian_posterior_with_correlated_weights():
    """Bayesian linear regression on the boston features (rad and tax correlate at 0.91): the posterior is a
    Gaussian known in closed form. Two batched chains with a dense mass matrix per chain recover its mean and
    covariance, in fewer gradient evaluations than the diagonal mass needs for the same draws."""
    table = torch.from_numpy(np.loadtxt(data_file("uci_regression/bostonHousing/data/data.txt"))).float()
    x, y = table[:, :13], table[:, 13]
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    noise, prior = 0.5, 1.0
    bnn = pyrobnn.lift(nn.Linear(13, 1), prior=priors.Normal(0.0, prior),
                       likelihood=likelihoods.Normal(scale=noise))
    design = torch.cat([x, torch.ones(len(x), 1)], 1).double()  # the layout: weight [1, 13], then bias [1]
    precision = design.T @ design / noise ** 2 + torch.eye(14, dtype=torch.float64) / prior ** 2
    cov = torch.linalg.inv(precision)
    mean = cov @ design.T @ y.double() / noise ** 2
    assert FlatLayout(bnn).sites == ["weight", "bias"]

    runs = {dense: nuts(bnn, (x, y), num_samples=400, warmup_steps=300, num_chains=2, dense_mass=dense, seed=0,
                        progress=False) for dense in (True, False)}
    draws = runs[True].draws.reshape(-1, 14).double()
    sd = cov.diagonal().sqrt()
    assert ((draws.mean(0) - mean).abs() / sd).max() < 0.3
    assert ((draws.std(0) / sd).log().abs()).max() < 0.2
    corr = torch.corrcoef(draws.T)
    exact = cov / torch.outer(sd, sd)
    assert (corr - exact).abs().max() < 0.15 and exact.abs().triu(1).max() > 0.5  # strong correlations, recovered
    assert sum(runs[True].stats()["grad_evals"]) < 0.7 * sum(runs[False].stats()["grad_evals"])  # measured 0.41-0.49
