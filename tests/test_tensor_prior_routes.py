"""A net of its own (Conv1d, GELU, LayerNorm, Linear), given its first posterior as tensor priors, through every
route: fit (one and four vectorised particles), a plain pyro.infer.SVI loop, predict and Pyro's Predictive."""
import copy

import pyro
import torch
from pyro.infer import SVI, Predictive, TraceMeanField_ELBO
from torch import nn

import pyrobnn
from pyrobnn import priors


class Unseen(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv1d(2, 4, 3), nn.LayerNorm(40), nn.Linear(40, 3)

    def forward(self, x):
        return self.head(self.norm(nn.functional.gelu(self.conv(x)).flatten(1)))


def test_tensor_priors_through_every_route():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 2, 12, generator=g)
    s = x[:, 0].sum(1)
    y = (s > s.quantile(1 / 3)).long() + (s > s.quantile(2 / 3)).long()
    torch.manual_seed(0)
    net = Unseen()
    bnn1 = pyrobnn.lift(copy.deepcopy(net))
    guide1 = pyrobnn.MeanFieldNormal(bnn1)
    h1 = pyrobnn.fit(bnn1, guide1, (x, y), epochs=30, batch_size=40, seed=0, progress=False)
    assert h1["loss"][-1] < h1["loss"][0]

    prior = priors.from_posterior(bnn1, guide1)
    assert set(prior) == set(bnn1.net_sites) and prior["norm.weight"].loc.shape == (40,)
    bnn2 = pyrobnn.lift(copy.deepcopy(net), priors=prior)
    guide2 = pyrobnn.MeanFieldNormal(bnn2, init={k: guide1.loc[k].detach().clone() for k in prior})
    for particles in (1, 4):
        before = guide2.loc_flat.detach().clone(), guide2.rho_flat.detach().clone()
        h = pyrobnn.fit(bnn2, guide2, (x, y), epochs=10, batch_size=40, num_particles=particles, seed=1,
                        progress=False)
        assert h["loss"][-1] < h["loss"][0]
        assert not torch.equal(before[0], guide2.loc_flat) and not torch.equal(before[1], guide2.rho_flat)

    pyro.clear_param_store()
    svi = SVI(bnn2.model, guide2, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    before = guide2.loc_flat.detach().clone()
    losses = [svi.step(x, y) for _ in range(40)]
    assert sum(losses[-10:]) < sum(losses[:10]) and not torch.equal(before, guide2.loc_flat)

    pp = pyrobnn.predict(bnn2, guide2, x, num_samples=30, seed=0)
    assert pp.outputs.shape == (30, 120, 3) and pp.mean_probs().shape == (120, 3)
    assert float((pp.mean_probs().argmax(1) == y).float().mean()) > 0.5
    obs = Predictive(bnn2.model, guide=guide2, num_samples=20, return_sites=["obs"])(x)["obs"]
    assert obs.shape == (20, 120) and set(obs.unique().tolist()) <= {0, 1, 2}
