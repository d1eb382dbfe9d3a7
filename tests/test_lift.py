import pyro
import pytest
import torch
from pyro import poutine
from torch import nn
from torch.func import functional_call

import pyrobnn
from pyrobnn import priors


def mlp():
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))


def test_batched_forward_matches_one_draw_at_a_time():
    net = mlp()
    bnn = pyrobnn.lift(net)
    x = torch.randn(5, 2)
    w = {k: torch.randn(4, 3, *s) for k, s in bnn.shapes.items()}  # two leading sample dims
    out = bnn.forward(x, w)
    assert out.shape == (4, 3, 5, 3)
    for i in range(4):
        for j in range(3):
            ref = functional_call(net, {k: v[i, j] for k, v in w.items()}, (x,))
            torch.testing.assert_close(out[i, j], ref)


def test_conv_net_lifts_and_runs_with_sample_dims():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 10))
    bnn = pyrobnn.lift(net)
    x = torch.randn(6, 1, 8, 8)
    w = {k: torch.randn(7, *s) * 0.1 for k, s in bnn.shapes.items()}
    out = bnn.forward(x, w)
    assert out.shape == (7, 6, 10)
    ref = functional_call(net, {k: v[3] for k, v in w.items()}, (x,))
    torch.testing.assert_close(out[3], ref)


def test_per_module_priors_and_deterministic_parameters():
    net = mlp()
    bnn = pyrobnn.lift(net, prior=priors.Normal(0, 2), priors={"0": priors.Laplace(0, 0.5), "2.bias": None})
    assert bnn.site_names == ["0.weight", "0.bias", "2.weight"]
    assert isinstance(bnn.priors["0.weight"], priors.Laplace)
    assert bnn.priors["2.weight"] == priors.Normal(0, 2)
    assert [id(p) for p in bnn.point_parameters()] == [id(net[2].bias)]
    tr = poutine.trace(bnn.model).get_trace(torch.randn(4, 2))
    assert set(tr.stochastic_nodes) - {"data"} == {"0.weight", "0.bias", "2.weight", "obs"}
    assert tr.nodes["0.weight"]["fn"].event_shape == (8, 2)


def test_unknown_prior_key_is_rejected():
    with pytest.raises(ValueError, match="'3' names no module or parameter"):
        pyrobnn.lift(mlp(), priors={"3": None})


def test_scale_mixture_prior_density():
    p = priors.ScaleMixture(pi=0.25, sigma1=1.0, sigma2=0.01)
    d = p.distribution((3, 4))
    assert d.event_shape == (3, 4) and d.sample().shape == (3, 4)
    x = torch.tensor(0.3)
    expect = torch.log(0.25 * torch.distributions.Normal(0, 1.0).log_prob(x).exp()
                       + 0.75 * torch.distributions.Normal(0, 0.01).log_prob(x).exp())
    torch.testing.assert_close(p.distribution(()).log_prob(x), expect)


def test_minibatch_likelihood_is_scaled_to_the_data_size():
    bnn = pyrobnn.lift(mlp())
    x, y = torch.randn(10, 2), torch.randint(0, 3, (10,))
    tr = poutine.trace(bnn.model).get_trace(x, y, data_size=250)
    tr.compute_log_prob()
    obs = tr.nodes["obs"]
    assert obs["scale"] == pytest.approx(25.0)
    assert tr.nodes["0.weight"]["scale"] == 1.0


def test_priors_live_on_the_nets_device():
    bnn = pyrobnn.lift(mlp().double())
    d = bnn.priors["0.weight"].distribution(bnn.shapes["0.weight"], bnn.device)
    assert d.mean.device == bnn.device
    if torch.cuda.is_available():
        bnn.to("cuda")
        tr = poutine.trace(bnn.model).get_trace(torch.randn(3, 2, device="cuda"))
        assert tr.nodes["0.weight"]["value"].is_cuda


def test_likelihood_normal_learns_noise_parameter():
    bnn = pyrobnn.lift(nn.Linear(3, 1), likelihood=pyrobnn.likelihoods.Normal(scale=None))
    assert any(p is bnn.likelihood.raw_scale for p in bnn.point_parameters())
    tr = poutine.trace(bnn.model).get_trace(torch.randn(4, 3), torch.randn(4))
    assert tr.nodes["obs"]["fn"].batch_shape == (4,)
    pyro.clear_param_store()
