"""Local reparameterisation and flipout: unbiased, and lower gradient variance at batch >= 128."""
import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal
from pyrobnn.fastelbo import MeanFieldELBO


def setup(conv=False):
    torch.manual_seed(0)
    if conv:
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        x = torch.randn(128, 1, 6, 6)
    else:
        net = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
        x = torch.randn(128, 10)
    y = torch.randint(0, 3, (128,))
    bnn = pyrobnn.lift(net)
    return bnn, MeanFieldNormal(bnn, init_scale=0.2), x, y


def draws(estimator, n, conv=False):
    bnn, guide, x, y = setup(conv)
    elbo = MeanFieldELBO(estimator=estimator)
    losses, grads = [], []
    for i in range(n):
        torch.manual_seed(100 + i)
        guide.zero_grad()
        loss = elbo.differentiable_loss(bnn.model, guide, x, y, data_size=128)
        loss.backward()
        losses.append(loss.detach())
        grads.append(guide.loc_flat.grad.clone())
    return torch.stack(losses), torch.stack(grads)


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_lower_gradient_variance_than_plain_reparameterisation_same_expectation(conv):
    results = {e: draws(e, 300, conv) for e in ("reparam", "local", "flipout")}
    var = {e: g.var(0).sum().item() for e, (_, g) in results.items()}
    assert var["local"] < 0.5 * var["reparam"]
    assert var["flipout"] < 0.5 * var["reparam"]
    ref = results["reparam"][0]
    se = ref.std() / len(ref) ** 0.5
    for e in ("local", "flipout"):
        losses = results[e][0]
        assert abs(losses.mean() - ref.mean()) < 4 * (se + losses.std() / len(losses) ** 0.5)
        g_ref, g = results["reparam"][1].mean(0), results[e][1].mean(0)
        assert torch.nn.functional.cosine_similarity(g, g_ref, dim=0) > 0.9  # same expected gradient


def test_fit_with_each_estimator_and_bad_choices():
    x = torch.randn(256, 2)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    for est in ("local", "flipout"):
        bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3)))
        hist = pyrobnn.fit(bnn, MeanFieldNormal(bnn), (x, y), epochs=40, lr=0.03, batch_size=128, estimator=est,
                           num_particles=2, seed=0, progress=False, val_data=(x, y), val_every=40)
        assert hist.last["val_accuracy"] > 0.85
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="'1.weight' is not"):
        pyrobnn.fit(bnn, MeanFieldNormal(bnn), (x, y), epochs=1, estimator="local", progress=False)
    with pytest.raises(ValueError, match="unknown estimator 'lrt'"):
        MeanFieldELBO(estimator="lrt")


class BatchAttention(nn.Module):
    """A set model: each row attends to the other rows of the batch (all of its Bayesian layers are Linear)."""

    def __init__(self):
        super().__init__()
        self.q, self.out = nn.Linear(2, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.q(x)
        return self.out(torch.softmax(h @ h.T / 3, -1) @ h)


@pytest.mark.parametrize("est", ["local", "flipout"])
def test_nets_whose_rows_depend_on_each_other_are_refused_by_the_per_row_estimators(est):
    """Per-row noise samples another model than weights shared by the rows: it trained silently before."""
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    mixing = [BatchAttention(), nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))]
    for net, priors in zip(mixing, [None, {"1": None}]):  # the BatchNorm itself kept deterministic
        bnn = pyrobnn.lift(net, priors=priors)
        with pytest.raises(pyrobnn.errors.Unsupported, match=r"^local/flipout estimators draw each row's weights "
                                                              r"independently, but the net's output rows depend"):
            pyrobnn.fit(bnn, MeanFieldNormal(bnn), (x, y), epochs=1, estimator=est, progress=False)
    dropout = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 3)))
    hist = pyrobnn.fit(dropout, MeanFieldNormal(dropout), (x, y), epochs=20, lr=0.03, estimator=est, progress=False)
    assert hist.records[-1]["loss"] < hist.records[0]["loss"]  # per-row masks: rows stay independent
