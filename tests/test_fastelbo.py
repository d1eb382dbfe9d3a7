"""The fast mean-field ELBO equals Pyro's TraceMeanField_ELBO on the same draws (loss and gradients)."""
import math

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal, likelihoods, priors
from pyrobnn.fastelbo import MeanFieldELBO, supports


def pair(kind):
    torch.manual_seed(0)
    if kind == "classification":
        net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 4))
        bnn = pyrobnn.lift(net, prior=priors.Normal(0.1, 0.7), priors={"2.bias": priors.Normal(0, 2)})
        x, y = torch.randn(20, 3), torch.randint(0, 4, (20,))
    elif kind == "tensor priors":  # a previous posterior as the prior of two layers, scalar Normals elsewhere
        net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 4))
        g = torch.Generator().manual_seed(5)
        tensor = {n: priors.TensorNormal(torch.randn(p.shape, generator=g), torch.rand(p.shape, generator=g) + 0.2)
                  for n, p in net.named_parameters() if n.startswith("0.")}
        bnn = pyrobnn.lift(net, prior=priors.Normal(0.0, 0.5), priors=tensor)
        x, y = torch.randn(20, 3), torch.randint(0, 4, (20,))
    else:
        net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        lik = likelihoods.Normal(scale=None, log_scale_prior=priors.Normal(math.log(0.5), 1.0))
        bnn = pyrobnn.lift(net, likelihood=lik)
        x, y = torch.randn(20, 3), torch.randn(20)
    return bnn, MeanFieldNormal(bnn, init_scale=0.3), x, y


@pytest.mark.parametrize("kind", ["classification", "regression", "tensor priors"])
@pytest.mark.parametrize("particles", [1, 8])
def test_same_loss_and_gradients_as_tracemeanfield(kind, particles):
    bnn, guide, x, y = pair(kind)
    assert supports(bnn, guide)
    results = []
    for elbo in (TraceMeanField_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1),
                 MeanFieldELBO(num_particles=particles)):
        pyro.set_rng_seed(11)
        guide.zero_grad()
        loss = elbo.differentiable_loss(bnn.model, guide, x, y, data_size=500)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in guide.parameters()]))
    assert_same_loss_and_gradients(results)


def assert_same_loss_and_gradients(results):
    """results: [(Pyro's loss, its gradients), (the fast path's loss, its gradients)] on the same draws."""
    (ref, ref_g), (fast, fast_g) = results
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-4)
    for a, b in zip(fast_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_unsupported_pairs_are_refused_and_fit_falls_back_to_pyro():
    bnn = pyrobnn.lift(nn.Linear(2, 3), prior=priors.Laplace(0, 1))
    guide = MeanFieldNormal(bnn)
    assert not supports(bnn, guide)
    with pytest.raises(ValueError, match="MeanFieldELBO needs"):
        MeanFieldELBO().differentiable_loss(bnn.model, guide, torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    x, y = torch.randn(50, 2), torch.randint(0, 3, (50,))
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=3, progress=False)  # Laplace prior: Pyro's ELBO
    assert len(hist) == 3 and all(math.isfinite(v) for v in hist["loss"])
