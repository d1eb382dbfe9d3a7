"""The approximations compared against NUTS: low-rank, structured and Laplace guides through fit, predict and
Pyro's Predictive, the Laplace curvature against a closed form, and the posterior-quality experiment end to end."""
import json
from pathlib import Path

import pandas as pd
import pyro
import pytest
import torch
from pyro.infer import Predictive
from torch import nn

import pyrobnn
from pyrobnn import checkpoint, likelihoods, priors
from pyrobnn.autoguides import last_layer, low_rank, make_guide, structured
from pyrobnn.laplace import LaplaceGuide
from pyrobnn.mcmc import MCMCPosterior
from pyrobnn.models.egg import EggNet
from pyrobnn.models.mnist import mlp
from pyrobnn.models.zoo import CASES
from pyrobnn.transformable import transformable
from tests.conftest import data_file


class TwoPath(nn.Module):
    """A classifier of its own: two hidden paths joined by a product, standardising its own inputs."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mu", torch.tensor([55.0, 4.5]))
        self.register_buffer("sd", torch.tensor([5.0, 1.8]))
        self.p, self.q, self.head = nn.Linear(2, 6), nn.Linear(2, 6), nn.Linear(6, 3)

    def forward(self, x):
        z = (x - self.mu) / self.sd
        return self.head(torch.relu(self.p(z)) * torch.sigmoid(self.q(z)))


def _eggs(egg_csv):
    df = pd.read_csv(egg_csv, index_col=0)
    x = torch.tensor(df[["weight", "time"]].to_numpy(), dtype=torch.float32)
    return x[:-50], torch.tensor(df["outcome"].to_numpy())[:-50], x[-50:]


@pytest.mark.parametrize("name,particles", [("lowrank", 1), ("structured", 1), ("laplace", 1), ("lowrank", 4),
                                            ("structured", 4)])
def test_new_guides_train_and_predict_on_real_eggs(egg_csv, name, particles):
    """particles > 1: Pyro's vectorised particles, the guide drawn under a particle plate."""
    x, y, xt = _eggs(egg_csv)
    torch.manual_seed(0)
    bnn = pyrobnn.lift(TwoPath())
    guide = LaplaceGuide(bnn) if name == "laplace" else make_guide(name, bnn, **({"rank": 4} if name == "lowrank"
                                                                                  else {}))
    guide(x[:1])  # materialise lazy parameters, to compare after training
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    before.update({k: v.detach().clone() for k, v in getattr(guide, "named_parameters", lambda: [])()})
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=15, lr=2e-2, batch_size=64, loss="trace", seed=0, progress=False,
                       num_particles=particles)
    after = dict(pyro.get_param_store().items())
    after.update(dict(getattr(guide, "named_parameters", lambda: [])()))
    assert before and all(not torch.equal(v, after[k].detach()) for k, v in before.items())
    assert hist.records[-1]["loss"] < hist.records[0]["loss"]
    if name == "laplace":
        guide.approximate(bnn, (x, y), "full")
    pp = pyrobnn.predict(bnn, guide, xt, num_samples=200, seed=0)
    assert pp.outputs.shape == (200, 50, 3) and pp.outputs.std(0).min() > 0  # a spread, not a point
    pred = Predictive(bnn.model, guide=guide, num_samples=20, return_sites=["obs"])(xt)
    assert pred["obs"].shape == (20, 50)


def _loss_and_grads(elbo, bnn, guide, x, y):
    pyro.set_rng_seed(7)
    loss = elbo.differentiable_loss(bnn.model, guide, x, y)
    params = [p for _, p in sorted(pyro.get_param_store().named_parameters())]
    return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, params)]


@pytest.mark.parametrize("particles", [1, 3])
def test_meanfield_elbo_counts_the_log_density_of_structureds_delta_sites(particles):
    """Pyro's kl(Delta, p) drops a Delta's log-density, so TraceMeanField_ELBO is wrong for AutoStructured; pyrobnn's
    "meanfield" loss equals Trace_ELBO on the same draws there, and is TraceMeanField_ELBO where no site is a Delta."""
    from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

    from pyrobnn.elbo import MeanField_ELBO

    torch.manual_seed(0)
    bnn, x, y = pyrobnn.lift(TwoPath()), torch.randn(20, 2) * 5 + 55, torch.randint(0, 3, (20,))
    kw = {"num_particles": particles, "vectorize_particles": True}
    for guide, reference in ((structured(bnn), Trace_ELBO), (pyrobnn.MeanFieldNormal(bnn), TraceMeanField_ELBO)):
        ours, want = _loss_and_grads(MeanField_ELBO(**kw), bnn, guide, x, y), \
            _loss_and_grads(reference(**kw), bnn, guide, x, y)
        torch.testing.assert_close(ours[0], want[0])
        for a, b in zip(ours[1], want[1]):
            torch.testing.assert_close(a, b)
        pyro.clear_param_store()


def test_structured_is_full_on_the_last_layer_and_low_rank_checks_rank():
    bnn = pyrobnn.lift(TwoPath())
    assert last_layer(bnn) == ["head.weight", "head.bias"]
    g = structured(bnn)
    assert {k: v for k, v in g.conditionals.items() if v == "mvn"} == {"head.weight": "mvn", "head.bias": "mvn"}
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        low_rank(bnn, rank=0)
    with pytest.raises(ValueError, match="'nope' is not a site"):
        structured(bnn, full=["nope"])


def test_laplace_of_linear_regression_is_the_exact_posterior():
    torch.manual_seed(0)
    x = torch.randn(60, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.5 * torch.randn(60)
    net = nn.Linear(3, 1)
    bnn = pyrobnn.lift(net, prior=priors.Normal(0, 2.0), likelihood=likelihoods.Normal(scale=0.5))
    design = torch.cat([x, torch.ones(60, 1)], 1)  # weight then bias, the site order
    precision = design.T @ design / 0.25 + torch.eye(4) / 4.0
    cov = torch.linalg.inv(precision)
    mean = cov @ design.T @ y / 0.25
    guide = LaplaceGuide(bnn)
    with torch.no_grad():
        guide.loc.copy_(mean)
    guide.approximate(bnn, (x, y), "full")
    torch.testing.assert_close(guide.block @ guide.block.T, cov, rtol=1e-4, atol=1e-6)
    draws = guide.sample_flat(20000)
    torch.testing.assert_close(draws.mean(0), mean, atol=4 * cov.diag().sqrt().max() / 100, rtol=0)
    diag = LaplaceGuide(bnn)
    with torch.no_grad():
        diag.loc.copy_(mean)
    diag.approximate(bnn, (x, y), "diagonal")
    assert diag.block_index.numel() == 0 and (diag.diag > 0).all() and (diag.diag <= 2.0).all()


def test_linearised_laplace_predictive_is_the_first_order_net():
    bnn = pyrobnn.lift(TwoPath())
    x, y = torch.randn(30, 2) * 5 + 50, torch.randint(0, 3, (30,))
    glm = LaplaceGuide(bnn, linearized=True).approximate(bnn, (x, y), "full")
    plain = LaplaceGuide(bnn)
    plain.adopt_state(glm.state_dict())
    a = pyrobnn.predict(bnn, glm, x, num_samples=50, seed=3)
    b = pyrobnn.predict(bnn, plain, x, num_samples=50, seed=3)  # the same weight draws through the plain net
    w0 = glm.loc.detach()
    draws = glm.sample_flat(2)
    def forward(w):
        return bnn.forward(x, glm.layout.split(w))

    try:
        jac = torch.func.jacrev(forward)(w0)
    except RuntimeError:  # torch's packing kernel has no torch.func support: its composite twin (tests/test_recurrent)
        with transformable(bnn.net):
            jac = torch.func.jacrev(forward)(w0)  # reverse mode: [30, 3, D]
    for d in draws:  # f(w0) + J (w - w0), against the Jacobian built explicitly
        out = glm.linearized_outputs(bnn, x, {k: v[None] for k, v in glm.layout.split(d).items()})[0]
        torch.testing.assert_close(out, bnn.forward(x, glm.layout.split(w0)) + jac @ (d - w0), rtol=1e-4, atol=1e-4)
    assert a.outputs.shape == b.outputs.shape == (50, 30, 3) and not torch.allclose(a.outputs, b.outputs)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_laplace_on_every_zoo_net(case):
    """Curvature and the GLM predictive on every kind of net, fused kernels included (the Transformer's eval-mode
    fast path, CPU flash attention and mkldnn LSTM/GRU have no forward-mode AD): the linearised draws equal
    f(w*) + J (w - w*) with J built by reverse mode on the net as torch runs it."""
    net, lik, x, y = case.build()
    bnn = pyrobnn.lift(net, likelihood=lik)
    glm = LaplaceGuide(bnn, linearized=True)
    pyrobnn.fit(bnn, glm, (x, y), epochs=3, lr=0.02, progress=False)
    glm.approximate(bnn, (x, y), "last_layer")
    assert glm.block_index.numel() and (glm.diag[glm.block_index] == 0).all() and torch.isfinite(glm.block).all()
    assert (glm.diag > 0).sum() + glm.block_index.numel() == glm.layout.dim
    out = pyrobnn.predict(bnn, glm, x, num_samples=4, seed=0).outputs
    assert out.shape[:2] == (4, len(x)) and torch.isfinite(out).all()
    bnn.eval()
    w0, d = glm.loc.detach(), glm.sample_flat(1)[0]
    def forward(w):
        return bnn.forward(x, glm.layout.split(w))

    try:
        jac = torch.func.jacrev(forward)(w0)
    except RuntimeError:  # torch's packing kernel has no torch.func support: its composite twin (tests/test_recurrent)
        with transformable(bnn.net):
            jac = torch.func.jacrev(forward)(w0)
    lin = glm.linearized_outputs(bnn, x, {k: v[None] for k, v in glm.layout.split(d).items()})[0]
    torch.testing.assert_close(lin, bnn.forward(x, glm.layout.split(w0)) + jac @ (d - w0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode,padding,weighted", [("mean", None, False), ("mean", 0, False), ("sum", 0, True),
                                                   ("max", 0, False), ("max", None, False)])
def test_the_composite_embedding_bag_equals_torchs_kernel(mode, padding, weighted):
    """pyrobnn.transformable runs an EmbeddingBag (no forward-mode AD in torch) as a lookup and a masked
    reduction, for the GLM predictive's jvp; rows of padding only included."""
    from pyrobnn.transformable import bag_forward

    torch.manual_seed(7)
    m = nn.EmbeddingBag(12, 5, mode=mode, padding_idx=padding)
    ids = torch.randint(0, 12, (6, 4))
    ids[0] = 0  # all padding when padding_idx is 0
    psw = torch.rand(6, 4) if weighted else None
    torch.testing.assert_close(bag_forward(m, ids, None, psw), m(ids, per_sample_weights=psw), atol=1e-6, rtol=0)


def test_laplace_modes_and_refusals():
    bnn = pyrobnn.lift(TwoPath())
    x, y = torch.randn(30, 2) * 5 + 50, torch.randint(0, 3, (30,))
    g = LaplaceGuide(bnn).approximate(bnn, (x, y), "last_layer")
    assert g.block.shape == (21, 21) and (g.diag[g.block_index] == 0).all() and (g.diag > 0).sum() == 36
    with pytest.raises(ValueError, match="mode must be one of"):
        g.approximate(bnn, (x, y), "kfac")
    big = pyrobnn.lift(mlp())
    with pytest.raises(ValueError, match="a full Hessian of 478,410 weights .* use mode='last_layer' or 'diagonal'"):
        LaplaceGuide(big).approximate(big, (torch.rand(4, 784), torch.randint(0, 10, (4,))), "full")


def test_posterior_quality_experiment_on_real_eggs(egg_csv, tmp_path):
    from experiments.posterior_quality import PosteriorQualityConfig, print_summary, run

    cfg = PosteriorQualityConfig(data=str(egg_csv), epochs=20, nuts_samples=40, nuts_warmup=40, chains=2,
                                 max_tree_depth=5, num_samples=200, out=str(tmp_path), progress=False)
    res = run(cfg)
    rows = res["methods"]
    assert list(rows) == ["meanfield", "autonormal", "lowrank", "structured", "laplace", "laplace_glm", "nuts"]
    for name, r in rows.items():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["nll"] > 0
        if name != "nuts":
            assert r["loss_last_epoch"] < r["loss_first_epoch"], name
            assert 0.0 <= r["tv_to_nuts_test"] <= 1.0 and 0.0 <= r["tv_to_nuts_slice"] <= 1.0
    assert rows["nuts"]["accuracy"] >= 0.7 and rows["meanfield"]["tv_to_nuts_test"] < 0.2
    run_dir = Path(res["run_dir"])
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["methods"]["nuts"]["diagnostics"]["chains"] == 2
    assert (run_dir / "probability_curves.png").stat().st_size > 10_000
    bnn = pyrobnn.lift(EggNet((16,)))
    post = MCMCPosterior(bnn)
    checkpoint.load_posterior(run_dir / "nuts_posterior.pt", bnn, post, torch.zeros(1, 2))
    assert post.draws.shape == (2, 40, 99)  # 2-16-3
    print_summary(res)


def test_posterior_quality_on_a_uci_set(tmp_path):
    from experiments.posterior_quality import PosteriorQualityConfig, print_summary, run

    root = data_file("uci_regression/yacht/data/data.txt").parents[2]
    cfg = PosteriorQualityConfig(data_set="yacht", data_dir=str(root), methods=("meanfield", "laplace"), steps=150,
                                 nuts_samples=30, nuts_warmup=30, chains=2, max_tree_depth=5, num_samples=200,
                                 out=str(tmp_path), progress=False)
    res = run(cfg)
    rows = res["methods"]
    assert list(rows) == ["meanfield", "laplace", "nuts"] and res["n_test"] == 31
    for name in ("meanfield", "laplace"):
        r = rows[name]
        assert r["loss_last_epoch"] < r["loss_first_epoch"] and r["w1_to_nuts"] > 0 and r["std_ratio_to_nuts"] > 0
        assert r["epistemic_std"] > 0 and r["noise_std"] > 0
    assert rows["nuts"]["rmse"] < 6.0  # yacht's target std is 15
    assert (Path(res["run_dir"]) / "regression_slice.png").stat().st_size > 10_000
    print_summary(res)
