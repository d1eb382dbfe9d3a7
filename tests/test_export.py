"""ArviZ export: pyrobnn.export.to_inference_data."""
import math
import sys
import warnings

import pyro
import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn.export import to_inference_data

S = 4000


@pytest.fixture
def az():
    return pytest.importorskip("arviz")


def _classifier(init_scale=0.3):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    bnn = pyrobnn.lift(net, prior=pyrobnn.priors.Normal(0, 1), likelihood=pyrobnn.likelihoods.Categorical(3))
    guide = pyrobnn.MeanFieldNormal(bnn, init="prior", init_scale=init_scale)
    x = torch.randn(6, 2) * 2
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return bnn, guide, x, y


def test_groups_dims_and_shapes(az):
    bnn, guide, x, y = _classifier()
    idata = to_inference_data(bnn, guide, x, num_samples=300, seed=0, y=y)
    assert isinstance(idata, az.InferenceData)
    assert set(idata.groups()) == {"posterior", "posterior_predictive", "observed_data", "log_likelihood"}
    post = idata.posterior
    assert set(post.data_vars) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 300
    for site, shape in bnn.shapes.items():
        var = post[site]
        assert var.dims == ("chain", "draw", *[f"{site}_dim_{i}" for i in range(len(shape))])
        assert var.shape == (1, 300, *shape)
    obs = idata.posterior_predictive["obs"]
    assert obs.dims == ("chain", "draw", "obs_dim_0") and obs.shape == (1, 300, 6)
    assert set(obs.values.ravel().tolist()) <= {0, 1, 2}
    assert idata.observed_data["obs"].dims == ("obs_dim_0",)
    assert idata.observed_data["obs"].values.tolist() == y.tolist()
    assert idata.log_likelihood["obs"].shape == (1, 300, 6)
    assert idata.posterior.attrs["inference_library"] == "pyrobnn"


def test_without_x_only_the_posterior(az):
    bnn, guide, _, _ = _classifier()
    idata = to_inference_data(bnn, guide, num_samples=50)
    assert idata.groups() == ["posterior"]
    assert idata.posterior["2.weight"].shape == (1, 50, 3, 8)
    with pytest.raises(ValueError, match="y was given without x"):
        to_inference_data(bnn, guide, y=torch.tensor([0]))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        to_inference_data(bnn, guide, num_samples=0)


def test_posterior_draws_match_the_guide(az):
    bnn, guide, _, _ = _classifier()
    idata = to_inference_data(bnn, guide, num_samples=S, seed=1)
    for site, loc in guide.loc.items():
        draws = torch.as_tensor(idata.posterior[site].values[0])
        scale = guide.scale(site).detach()
        se = scale / math.sqrt(S)
        assert ((draws.mean(0) - loc.detach()).abs() <= 5 * se).all(), site  # every weight within 5 s.e.
        torch.testing.assert_close(draws.std(0), scale, rtol=0.1, atol=0.0)
    summary = az.summary(idata, var_names=["2.bias"], kind="stats")
    torch.testing.assert_close(torch.tensor(summary["mean"].values, dtype=torch.float32),
                               guide.loc["2.bias"].detach(),
                               atol=float(5 * guide.scale("2.bias").detach().max() / S ** 0.5),
                               rtol=0)


def test_posterior_predictive_matches_pyrobnn_predict(az):
    bnn, guide, x, y = _classifier(init_scale=0.5)
    idata = to_inference_data(bnn, guide, x, num_samples=S, seed=2, y=y)
    obs = torch.as_tensor(idata.posterior_predictive["obs"].values[0])
    freq = torch.stack([(obs == c).float().mean(0) for c in range(3)], -1)
    ref = pyrobnn.predict(bnn, guide, x, num_samples=S, seed=3).class_frequencies()
    tol = 5 * torch.sqrt(2 * (ref * (1 - ref)).clamp_min(1 / S) / S)
    assert ((freq - ref).abs() <= tol).all(), (freq, ref)
    assert ((ref > 0.05) & (ref < 0.95)).any()  # the check is not trivially about certain predictions

    # every group comes from the same draws: log p(y | w_s) recomputed from the exported weights
    weights = {k: torch.as_tensor(v.values[0]) for k, v in idata.posterior.data_vars.items()}
    logits = bnn.forward(x, weights)
    expected = torch.distributions.Categorical(logits=logits).log_prob(y)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["obs"].values[0]), expected)
    with warnings.catch_warnings():  # an unfitted guide: Pareto k is high, which is not the point here
        warnings.simplefilter("ignore", UserWarning)
        loo = az.loo(idata)
    assert math.isfinite(loo.elpd_loo) and loo.elpd_loo < 0


def test_regression_with_inferred_noise(az):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
    lik = pyrobnn.likelihoods.Normal(scale=None, log_scale_prior=pyrobnn.priors.Normal(math.log(0.3), 0.5),
                                     init_scale=0.3)
    bnn = pyrobnn.lift(net, likelihood=lik)
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.05)
    x = torch.linspace(-2, 2, 5).reshape(-1, 1)
    y = torch.sin(x[:, 0])
    idata = to_inference_data(bnn, guide, x, num_samples=S, seed=4, y=y)
    assert idata.posterior["obs_log_scale"].dims == ("chain", "draw")
    torch.testing.assert_close(torch.as_tensor(idata.posterior["obs_log_scale"].values).mean(),
                               guide.loc["obs_log_scale"].detach(), atol=0.01, rtol=0)
    obs = torch.as_tensor(idata.posterior_predictive["obs"].values[0])
    assert obs.shape == (S, 5) and obs.dtype.is_floating_point
    pp = pyrobnn.predict(bnn, guide, x, num_samples=S, seed=5)
    torch.testing.assert_close(obs.mean(0), pp.mean(), atol=float(5 * pp.std().max() * math.sqrt(2 / S)), rtol=0)
    torch.testing.assert_close(obs.std(0), pp.std(), rtol=0.08, atol=0)
    torch.testing.assert_close(torch.as_tensor(idata.observed_data["obs"].values), y)


def test_a_guide_without_sample_posterior(az):
    from pyrobnn.guides.egg import egg_guide
    from pyrobnn.models.egg import EggNet

    pyro.clear_param_store()
    bnn = pyrobnn.lift(EggNet(), likelihood=pyrobnn.likelihoods.Categorical(3))
    x = torch.tensor([[54.0, 1.5], [53.0, 6.0]])
    idata = to_inference_data(bnn, egg_guide, x, num_samples=200, seed=0)
    assert idata.posterior["1.weight"].shape == (1, 200, 32, 2)
    assert idata.posterior_predictive["obs"].shape == (1, 200, 2)
    mu = pyro.param("fc1b_mu").detach()
    draws = torch.as_tensor(idata.posterior["1.bias"].values[0])
    assert ((draws.mean(0) - mu).abs() <= 5 * 0.1 / math.sqrt(200)).all()  # the guide's sigma is 0.1


def test_arviz_is_optional(monkeypatch):
    bnn, guide, x, _ = _classifier()
    monkeypatch.setitem(sys.modules, "arviz", None)  # "import arviz" now raises ImportError
    with pytest.raises(ImportError) as e:
        to_inference_data(bnn, guide, x)
    assert str(e.value) == "to_inference_data needs arviz: pip install 'pyrobnn[arviz]'"
