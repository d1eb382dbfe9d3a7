"""The lift -> guide -> inference -> predictive contract off the paved path: pyrobnn's guides under
Pyro's own SVI loop, BatchNorm/Dropout under vectorised draws, and predict's net mode."""
from __future__ import annotations

import math
import warnings

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import SGD, Adam, ClippedAdam
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal, auto_normal, checkpoint, predict
from pyrobnn.conformance import check, guide_tensors
from pyrobnn.guides.egg import egg_guide
from pyrobnn.guides.normal import normal_guide
from pyrobnn.models.egg import EggNet
from pyrobnn.models.zoo import ResidualBNCNN

X = torch.randn(60, 2)
Y = (X[:, 0] > 0).long() + (X[:, 1] > 1).long()


def _svi_trains(bnn, guide, optim, elbo, steps=40, x=X):
    guide = MeanFieldNormal(bnn) if guide is None else guide
    before = {n: t.detach().clone() for n, t in guide_tensors(bnn, guide, X).items()}
    svi = SVI(bnn.model, guide, optim, elbo)
    losses = [svi.step(x, Y) for _ in range(steps)]
    now = guide_tensors(bnn, guide, X)
    assert before and all(not torch.equal(t, now[n].detach()) for n, t in before.items()), "a guide tensor stayed put"
    assert sum(losses[-5:]) < sum(losses[:5])


@pytest.mark.parametrize("optim,elbo", [
    (Adam({"lr": 0.02}), TraceMeanField_ELBO()),
    (ClippedAdam({"lr": 0.02}), Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)),
    (SGD({"lr": 1e-4}), Trace_ELBO()),
])
def test_every_pyrobnn_guide_trains_under_a_plain_svi_loop(optim, elbo):
    for make in (MeanFieldNormal, auto_normal, normal_guide):
        pyro.clear_param_store()
        bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)))
        _svi_trains(bnn, make(bnn), optim, elbo)


def test_the_egg_guide_trains_under_svi():
    bnn = pyrobnn.lift(EggNet(hidden=(32, 32)), priors={"0": None})
    _svi_trains(bnn, egg_guide, Adam({"lr": 0.02}), Trace_ELBO())


def test_meanfield_tensors_are_the_param_sites_pyro_optimises():
    # fails if the guide's parameters are hidden from Pyro again (SVI would then train nothing)
    bnn = pyrobnn.lift(nn.Linear(2, 3))
    guide = MeanFieldNormal(bnn)
    with poutine.trace(param_only=True) as tr:
        guide(X)
    store = pyro.get_param_store()
    seen = {store._params[n] for n in tr.trace.nodes}
    assert {guide.loc_flat, guide.rho_flat} <= seen
    # a stale entry of the same name (another instance) is replaced by this guide's own tensor
    other = MeanFieldNormal(bnn)
    other(X)
    guide(X)
    assert store["meanfield$$$loc_flat"] is guide.loc_flat


def test_deterministic_parts_and_learned_noise_train_under_svi():
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    bnn = pyrobnn.lift(net, likelihood=pyrobnn.likelihoods.Normal(scale=None), priors={"2.bias": None})
    guide = MeanFieldNormal(bnn)
    bias, raw = net[2].bias.detach().clone(), bnn.likelihood.raw_scale.detach().clone()
    svi = SVI(bnn.model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(20):
        svi.step(X, X[:, 0] + 3.0)
    assert not torch.equal(bias, net[2].bias.detach()) and not torch.equal(raw, bnn.likelihood.raw_scale.detach())


def test_jit_elbo_and_checkpoint_round_trip_with_the_svi_trained_guide(tmp_path):
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)))
    guide = MeanFieldNormal(bnn)
    svi = SVI(bnn.model, guide, Adam({"lr": 0.02}), JitTrace_ELBO(ignore_jit_warnings=True))
    for _ in range(5):
        svi.step(X, Y, data_size=60)
    path = checkpoint.save_posterior(tmp_path / "p.pt", bnn, guide, X)
    assert set(checkpoint.read_checkpoint(path)["param_store"]) == set()  # saved once, with the module
    fresh = MeanFieldNormal(bnn, init="prior")
    checkpoint.load_posterior(path, bnn, fresh, X)
    torch.testing.assert_close(fresh.loc_flat, guide.loc_flat)


def _bn_net():
    torch.manual_seed(0)
    return ResidualBNCNN(width=4)


IMAGES = torch.randn(16, 1, 8, 8)


def test_batchnorm_train_mode_per_draw_statistics_and_one_running_update():
    net = _bn_net()
    bnn = pyrobnn.lift(net)
    w = dict(net.named_parameters())
    draws = {k: torch.stack([v.detach(), v.detach() * 1.5, v.detach() * 0.5]) for k, v in w.items()}
    stem_bn = net.stem[1]
    mean0, var0 = stem_bn.running_mean.clone(), stem_bn.running_var.clone()
    out = bnn.forward(IMAGES, draws)
    # each draw normalises by its own batch statistics: the same as the net run alone with those weights
    for d in range(3):
        ref = _bn_net()
        ref.load_state_dict({k: v[d] for k, v in draws.items()}, strict=False)
        torch.testing.assert_close(out[d], ref(IMAGES), rtol=1e-4, atol=1e-5)
    # running statistics: one momentum step towards the draws' mean batch statistics
    conv = nn.functional.conv2d
    acts = torch.stack([conv(IMAGES, draws["stem.0.weight"][d], padding=1) for d in range(3)])
    m = stem_bn.momentum
    torch.testing.assert_close(stem_bn.running_mean, (1 - m) * mean0 + m * acts.mean((1, 3, 4)).mean(0))
    torch.testing.assert_close(stem_bn.running_var,
                               (1 - m) * var0 + m * acts.var((1, 3, 4), correction=1).mean(0), rtol=1e-4, atol=1e-6)
    assert int(stem_bn.num_batches_tracked) == 1


def _instance_norm_net():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))


def test_instance_norm_with_running_statistics_under_batched_draws_takes_the_mean_of_the_draws_updates():
    """Failed before with "Batch norm got a batched tensor as input while the running_mean ... were not batched"."""
    torch.manual_seed(0)
    net = _instance_norm_net()
    bnn = pyrobnn.lift(net)
    draws = {k: v.detach() * torch.tensor([1.0, 1.5, 0.5]).view(3, *[1] * v.dim()) for k, v in net.named_parameters()}
    start = {k: v.clone() for k, v in net.state_dict().items()}
    out = bnn.forward(IMAGES, draws)
    refs = []
    for d in range(3):  # torch's kernel, one draw at a time: the same output and one update each
        ref = _instance_norm_net()
        ref.load_state_dict({**start, **{k: v[d] for k, v in draws.items()}})
        torch.testing.assert_close(out[d], ref(IMAGES), rtol=1e-4, atol=1e-5)
        refs.append(ref[1])
    norm = net[1]
    torch.testing.assert_close(norm.running_mean, torch.stack([r.running_mean for r in refs]).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack([r.running_var for r in refs]).mean(0))
    assert torch.equal(norm.num_batches_tracked, refs[0].num_batches_tracked)  # which instance_norm leaves alone
    x, y = IMAGES, (IMAGES[:, 0, :4].mean((1, 2)) > 0).long()
    for route in ("fit-particles", "svi"):
        pyro.clear_param_store()
        cell = check(pyrobnn.lift(_instance_norm_net()), MeanFieldNormal, route, x, y)
        assert cell.status == "pass", (route, cell.detail)


@pytest.mark.parametrize("options", [{"max_norm": 1.0}, {"sparse": True}, {"max_norm": 0.5, "padding_idx": 0}])
def test_an_embedding_with_max_norm_or_sparse_gradients_trains_on_every_route(options):
    """max_norm renormalises the weight in place (autograd refused it on a sampled one: "Output 0 of View is a view
    and its base ... has been modified inplace", or a plain SVI loop whose loss rose); sparse=True failed with
    "reshape is not implemented for sparse tensors". Outputs equal torch's."""
    def make():
        torch.manual_seed(2)
        return nn.Sequential(nn.Embedding(20, 8, **options), nn.Flatten(), nn.Linear(8 * 5, 2))

    tokens = torch.randint(1, 20, (40, 5))
    y = (tokens < 8).sum(1).gt(2).long()
    bnn = pyrobnn.lift(make())
    w = {k: v.detach() * 3 for k, v in bnn.net.named_parameters()}  # rows far longer than max_norm
    ref = make()
    ref.load_state_dict(w)
    with torch.no_grad():
        torch.testing.assert_close(bnn.forward(tokens, w), ref(tokens))
        torch.testing.assert_close(bnn.forward(tokens, {k: v.expand(2, *v.shape) for k, v in w.items()})[1],
                                   ref(tokens))
    for route in ("fit", "fit-particles", "svi"):
        pyro.clear_param_store()
        cell = check(pyrobnn.lift(make()), MeanFieldNormal, route, tokens, y)
        assert cell.status == "pass", (route, cell.detail)


def test_batchnorm_without_running_statistics_trains_predicts_and_checkpoints(tmp_path):
    """It normalises by the batch even in eval mode, so it cannot take one row: the shape probe, the activation
    count of predict and checkpoints once ran the net on one ("Expected more than 1 value per channel")."""
    def make():
        return nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16, track_running_stats=False), nn.ReLU(),
                             nn.Linear(16, 3))

    for route in ("fit-particles", "svi"):
        pyro.clear_param_store()
        cell = check(pyrobnn.lift(make()), MeanFieldNormal, route, X, Y)
        assert cell.status == "pass", (route, cell.detail)
    bnn = pyrobnn.lift(make())
    guide = auto_normal(bnn)
    pyro.clear_param_store()
    history = pyrobnn.fit(bnn, guide, (X, Y), epochs=30, lr=0.02, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    path = checkpoint.save_posterior(tmp_path / "bn.pt", bnn, guide, X)
    pp = predict(bnn, guide, X, num_samples=20, seed=0)
    assert float((pp.predicted_class() == Y).float().mean()) > 0.6
    pyro.clear_param_store()
    fresh = auto_normal(bnn)
    checkpoint.load_posterior(path, bnn, fresh, X)
    torch.testing.assert_close(predict(bnn, fresh, X, num_samples=20, seed=0).probs, pp.probs)


class NoGradBody(nn.Module):
    """A feature layer run under torch.no_grad(), an auxiliary head the forward never calls."""

    def __init__(self):
        super().__init__()
        self.body, self.aux, self.head = nn.Linear(2, 8), nn.Linear(8, 4), nn.Linear(8, 3)

    def forward(self, x):
        with torch.no_grad():
            h = torch.relu(self.body(x))
        return self.head(h)


def test_parameters_the_output_does_not_depend_on_are_named_in_one_warning_and_can_be_kept_fixed():
    """Lifted, they trained silently towards the prior (the KL their only gradient), the checker's loss still
    falling."""
    bnn = pyrobnn.lift(NoGradBody())
    with pytest.warns(UserWarning) as caught:
        pyrobnn.fit(bnn, MeanFieldNormal(bnn), (X, Y), epochs=1, progress=False)
    mine = [w for w in caught if "does not depend on" in str(w.message)]
    assert len(mine) == 1 and mine[0].filename == __file__  # the user's line, not pyrobnn's
    text = str(mine[0].message)
    assert "\n" not in text and "'body.weight', 'body.bias', 'aux.weight', 'aux.bias'" in text
    assert "priors={'body': None}" in text
    fixed = pyrobnn.lift(NoGradBody(), priors={"body": None, "aux": None})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed.check_inputs(X, Y)
    pyro.clear_param_store()
    cell = check(fixed, MeanFieldNormal, "svi", X, Y)
    assert cell.status == "pass", cell.detail


def test_an_svi_step_without_targets_is_named_in_one_warning_and_numpy_inputs_train():
    """svi.step(x) forgot y: every step fitted the prior without a word. Inputs as numpy arrays crashed inside torch
    ("linear(): argument 'input' must be Tensor")."""
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)))
    svi = SVI(bnn.model, MeanFieldNormal(bnn), Adam({"lr": 0.02}), Trace_ELBO())
    with pytest.warns(UserWarning, match=r"^pyrobnn: the model was run by an ELBO with no targets") as caught:
        svi.step(X)
        svi.step(X)
    assert len([w for w in caught if "no targets" in str(w.message)]) == 1  # once per net
    assert caught[0].filename == __file__
    guide = auto_normal(bnn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither Pyro's Predictive nor a prior trace is an ELBO
        pyro.infer.Predictive(bnn.model, guide=guide, num_samples=3)(X)
        poutine.trace(bnn.model).get_trace(X)
    pyro.clear_param_store()
    _svi_trains(pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))), None, Adam({"lr": 0.02}),
                Trace_ELBO(), x=X.numpy())


class RingGCN(nn.Module):
    """Node classification on a graph the net holds: X is node ids, which the net indexes its output with."""

    def __init__(self, adj, feat):
        super().__init__()
        self.register_buffer("adj", adj)
        self.register_buffer("feat", feat)
        self.l1, self.l2 = nn.Linear(feat.shape[1], 8), nn.Linear(8, 2)

    def forward(self, nodes):
        h = torch.relu(self.adj @ self.l1(self.feat))
        return (self.adj @ self.l2(h))[nodes[:, 0]]


class RawTable(nn.Module):
    """Token ids looked up in a raw Parameter with F.embedding; the first layer it registers is the Linear after."""

    def __init__(self):
        super().__init__()
        self.table, self.out = nn.Parameter(0.3 * torch.randn(12, 8)), nn.Linear(8, 2)

    def forward(self, ids):
        return self.out(nn.functional.embedding(ids, self.table).mean(1))


def test_integer_inputs_the_net_indexes_with_stay_integers_on_every_route():
    """Both were cast to floats and checked against the first Linear: "X has 1 features; the net expects 4"."""
    n = 40
    ring = torch.eye(n) + torch.roll(torch.eye(n), 1, 0) + torch.roll(torch.eye(n), -1, 0)
    feat = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    adj = ring / 3
    nodes, labels = torch.arange(n)[:, None], ((adj @ feat)[:, 0] > 0).long()
    ids = torch.randint(0, 12, (n, 5), generator=torch.Generator().manual_seed(1))
    for make, x, y in [(lambda: RingGCN(adj, feat), nodes, labels), (RawTable, ids, (ids < 6).sum(1).gt(2).long())]:
        for route in ("fit", "fit-particles", "svi"):
            pyro.clear_param_store()
            cell = check(pyrobnn.lift(make()), MeanFieldNormal, route, x, y)
            assert cell.status == "pass", (make, route, cell.detail)
        assert pyrobnn.lift(make()).check_inputs(x)[0].dtype == torch.long
    counts = torch.randint(0, 5, (10, 2))  # integer features of a plain MLP are still cast to floats
    assert pyrobnn.lift(nn.Linear(2, 3)).check_inputs(counts)[0].dtype == torch.float32


class RightCensoredWeibull(pyro.distributions.TorchDistribution):
    """A user's survival likelihood with only a log_prob: y = (time, observed), Weibull shape 1.5."""

    arg_constraints: dict = {}
    support = pyro.distributions.constraints.real_vector

    def __init__(self, log_scale):
        self.scale = log_scale.exp()
        super().__init__(log_scale.shape, torch.Size([2]), validate_args=False)

    def log_prob(self, y):
        t, observed = y[..., 0].clamp_min(1e-6) / self.scale, y[..., 1]
        return observed * (math.log(1.5) - self.scale.log() + 0.5 * t.log()) - t ** 1.5


def test_a_custom_distribution_with_only_a_log_prob_trains_and_names_what_it_lacks():
    g = torch.Generator().manual_seed(2)
    times = torch.distributions.Weibull(torch.exp(0.5 * X[:, 0]), 1.5).sample()
    censor = 3 * torch.rand(len(X), generator=g)
    y = torch.stack([torch.minimum(times, censor), (times <= censor).float()], 1)
    survival = pyrobnn.likelihoods.Custom(lambda out: RightCensoredWeibull(out[..., 0]), name="surv")
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)), likelihood=survival)
    pyro.clear_param_store()
    cell = check(bnn, MeanFieldNormal, "svi", X, y)
    assert cell.detail.startswith("NotImplementedError: the likelihood's RightCensoredWeibull has no sample(), so the "
                                  "predictive has no draws of y"), cell.detail  # trained: loss fell, all moved
    guide = MeanFieldNormal(bnn)
    pyrobnn.fit(bnn, guide, (X, y), epochs=40, lr=0.02, progress=False)
    pp = predict(bnn, guide, X, num_samples=20)
    assert torch.isfinite(pp.log_likelihood(y)).all()
    with pytest.raises(NotImplementedError, match=r"^custom likelihood 'surv': its RightCensoredWeibull has no mean"):
        pp.mean()


def test_predict_is_eval_mode_by_default_changes_nothing_and_offers_mc_dropout():
    net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Dropout(0.5), nn.BatchNorm1d(32), nn.Linear(32, 3))
    bnn = pyrobnn.lift(net, priors={"": None, "4": pyrobnn.priors.Normal()})
    guide = MeanFieldNormal(bnn, init_scale=1e-6)  # nearly deterministic weights: spread comes from dropout
    pyrobnn.fit(bnn, guide, (X, Y), epochs=3, lr=0.01, progress=False)
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    assert net.training  # fit leaves the mode as it found it
    pp = predict(bnn, guide, X[:5], num_samples=50)
    mc = predict(bnn, guide, X[:5], num_samples=50, mode="train")
    assert pp.mode == "eval" and mc.mode == "train" and net.training
    assert float(pp.probs.std(0).max()) < 1e-3 < float(mc.probs.std(0).max())
    for k, v in net.state_dict().items():
        assert torch.equal(v, stats[k]), f"predict changed {k}"
    with pytest.raises(ValueError, match="mode must be 'eval'"):
        predict(bnn, guide, X[:5], num_samples=5, mode="mc")


def test_normalisation_parameters_follow_the_priors():
    net = _bn_net()
    assert "stem.1.weight" in pyrobnn.lift(net).site_names
    assert "stem.1.weight" not in pyrobnn.lift(net, priors={"stem.1": None}).site_names


class TabularNet(nn.Module):
    """A user's net of two inputs: numeric columns and a category id through an Embedding."""

    def __init__(self, n_num: int, n_cat: int):
        super().__init__()
        self.emb = nn.Embedding(n_cat, 3)
        self.body = nn.Sequential(nn.Linear(n_num + 3, 16), nn.SiLU(), nn.Linear(16, 1))

    def forward(self, x_num, x_cat):
        return self.body(torch.cat([x_num, self.emb(x_cat)], -1)).squeeze(-1)


class OneTensor(nn.Module):
    """The wrapper the lift error recommends: one tensor in, split into the net's inputs."""

    def __init__(self, net: nn.Module, n_num: int):
        super().__init__()
        self.net, self.n_num = net, n_num

    def forward(self, x):
        return self.net(x[:, :self.n_num], x[:, self.n_num].long())


@pytest.mark.parametrize("guide", ["MeanFieldNormal", "AutoNormal"])
def test_a_two_input_net_is_refused_in_one_line_and_trains_through_the_wrapper(guide):
    """Boston: 12 numeric columns and the highway-access index (9 levels) as a category. The two-input net and a
    tuple X get a one-line error naming the fix; the fix trains on every route (loss falls, every guide tensor moves)
    and both predictives draw."""
    import numpy as np

    from pyrobnn.conformance import ROUTES, check
    from pyrobnn.experiments.conformance import GUIDES
    from tests.conftest import data_file

    table = torch.from_numpy(np.loadtxt(data_file("uci_regression/bostonHousing/data/data.txt"))).float()
    num = torch.cat([table[:, :8], table[:, 9:13]], 1)
    cat = torch.unique(table[:, 8], return_inverse=True)[1]
    x = torch.cat([(num - num.mean(0)) / num.std(0), cat[:, None].float()], 1)
    y = (table[:, 13] - table[:, 13].mean()) / table[:, 13].std()
    lik = pyrobnn.likelihoods.Normal(scale=0.5)
    with pytest.raises(TypeError, match=r"TabularNet.forward takes 2 inputs \(x_num, x_cat\); .* lift a wrapper"):
        pyrobnn.lift(TabularNet(12, 9), likelihood=lik)
    bnn = pyrobnn.lift(OneTensor(TabularNet(12, 9), 12), likelihood=lik)
    with pytest.raises(ValueError, match="X must be one tensor .*got a tuple of 2 arrays"):
        bnn.check_inputs((x[:, :12], cat), y)
    for route in ROUTES:
        torch.manual_seed(0)
        pyro.clear_param_store()
        cell = check(pyrobnn.lift(OneTensor(TabularNet(12, 9), 12), likelihood=lik), GUIDES[guide], route, x, y)
        assert cell.status == "pass", (route, cell.detail)


class BranchingNet(nn.Module):
    """A forward that branches on a tensor's value: vmap cannot batch it over weight draws."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        if h.mean() > 0:
            h = torch.relu(h)
        return self.b(h)


def test_a_branching_net_is_refused_in_one_line_on_batched_routes_and_trains_one_draw_at_a_time():
    bnn = pyrobnn.lift(BranchingNet())
    guide = MeanFieldNormal(bnn)
    with pytest.raises(pyrobnn.errors.Unsupported) as e:
        pyrobnn.fit(bnn, guide, (X, Y), epochs=2, num_particles=4, progress=False)
    assert str(e.value).startswith("the net's forward branches on a tensor's value") and "\n" not in str(e.value)
    with pytest.raises(pyrobnn.errors.Unsupported, match=r"predict\(strategy='loop'\)"):
        predict(bnn, guide, X, num_samples=4, strategy="vectorize")

    start = guide.loc_flat.detach().clone()
    hist = pyrobnn.fit(bnn, guide, (X, Y), epochs=60, lr=0.03, progress=False)  # one draw per step: no vmap
    assert hist.records[-1]["loss"] < hist.records[0]["loss"] and not torch.equal(start, guide.loc_flat)
    assert predict(bnn, guide, X, num_samples=4, strategy="loop").draws.shape == (4, 60)
    obs = pyro.infer.Predictive(bnn.model, guide=guide, num_samples=3, parallel=False)(X)["obs"]
    assert obs.shape == (3, 60)


class _Sign(torch.autograd.Function):
    """A straight-through sign written the old way (no setup_context): functorch transforms refuse it."""

    @staticmethod
    def forward(ctx, x):
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class SignNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(_Sign.apply(self.a(x)))


def test_an_old_style_autograd_function_is_refused_on_batched_routes_naming_the_fix():
    bnn = pyrobnn.lift(SignNet())
    with pytest.raises(pyrobnn.errors.Unsupported, match=r"^the net calls a torch.autograd.Function without "
                                                          r"setup_context: .* run one draw at a time: fit"):
        predict(bnn, MeanFieldNormal(bnn), X, num_samples=4, strategy="vectorize")
    guide = MeanFieldNormal(bnn)
    hist = pyrobnn.fit(bnn, guide, (X, Y), epochs=40, lr=0.03, progress=False)  # one draw per step
    assert hist.records[-1]["loss"] < hist.records[0]["loss"]


class Checkpointed(nn.Module):
    """A block under activation checkpointing (torch.utils.checkpoint, either form)."""

    def __init__(self, reentrant: bool | None):
        super().__init__()
        self.block, self.head, self.reentrant = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16)), \
            nn.Linear(16, 3), reentrant

    def forward(self, x):
        if self.reentrant is None:  # the same net without checkpointing
            return self.head(torch.tanh(self.block(x)))
        return self.head(torch.tanh(torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=self.reentrant)))


@pytest.mark.parametrize("reentrant", [True, False])
def test_activation_checkpointing_under_batched_draws_gives_the_plain_nets_values_and_gradients(reentrant):
    """With vectorised particles the reentrant form was refused as an old-style autograd.Function, the other failed
    in the backward pass ("Recomputed values ... have different metadata")."""
    torch.manual_seed(0)
    net, plain = Checkpointed(reentrant), Checkpointed(None)
    plain.load_state_dict(net.state_dict())
    draws = {k: (v.detach() + 0.1 * torch.randn(4, *v.shape)).requires_grad_() for k, v in net.named_parameters()}
    outs = [pyrobnn.lift(n).forward(X, draws) for n in (net, plain)]
    torch.testing.assert_close(outs[0], outs[1])
    grads = [torch.autograd.grad(o.square().sum(), list(draws.values())) for o in outs]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    pyro.clear_param_store()
    cell = check(pyrobnn.lift(Checkpointed(reentrant)), MeanFieldNormal, "fit-particles", X, Y)
    assert cell.status == "pass", cell.detail


class ReparamLatent(nn.Module):
    """A stochastic layer: a latent drawn with torch.distributions' rsample inside the forward (train mode)."""

    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(2, 4), nn.Linear(2, 3)

    def forward(self, x):
        mu, log_var = self.enc(x).chunk(2, -1)
        return self.dec(torch.distributions.Normal(mu, (0.5 * log_var).exp()).rsample() if self.training else mu)


def test_a_net_that_samples_in_its_forward_draws_its_own_noise_in_each_weight_draw():
    """vmap refused rsample's in-place normal_ ("Cannot ask for different inplace randomness on an unbatched
    tensor")."""
    bnn = pyrobnn.lift(ReparamLatent())
    same = {k: v.detach().expand(3, *v.shape) for k, v in bnn.net.named_parameters()}  # one weight draw, thrice
    out = bnn.forward(X, same)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    x = torch.distributions.Normal(torch.zeros(3), 1.0).rsample((5,))  # untouched outside the batched call
    assert x.shape == (5, 3)
    for route in ("fit-particles", "svi"):
        pyro.clear_param_store()
        cell = check(pyrobnn.lift(ReparamLatent()), MeanFieldNormal, route, X, Y)
        assert cell.status == "pass", (route, cell.detail)


class Tempered(nn.Module):
    """A learned scalar temperature (a parameter of shape ()) before a linear layer."""

    def __init__(self):
        super().__init__()
        self.temperature, self.layer = nn.Parameter(torch.tensor(1.0)), nn.Linear(2, 3)

    def forward(self, x):
        return self.layer(x) / self.temperature.exp()


def test_pyros_parallel_predictive_on_a_net_with_a_scalar_parameter():
    """Pyro reshapes a scalar site's draws to [S, 1] and a matrix's to [S, *shape]: the two broadcast to [S, S]
    ("shape '[6, 60]' is invalid for input of size 2160")."""
    bnn = pyrobnn.lift(Tempered())
    guide = MeanFieldNormal(bnn)
    bnn.eval()
    obs = pyro.infer.Predictive(bnn.model, guide=guide, num_samples=6, parallel=True)(X)["obs"]
    assert obs.shape == (6, len(X))
    pyro.clear_param_store()
    cell = check(pyrobnn.lift(Tempered()), pyrobnn.auto_normal, "svi", X, Y)
    assert cell.status == "pass", cell.detail


def test_boolean_labels_and_a_tensor_dataset_train():
    """Both were refused ("labels must be integers in {0, 1}; got dtype torch.bool"; "data must be an (X, y) pair")."""
    pyro.set_rng_seed(0)
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)), likelihood="bernoulli")
    guide = MeanFieldNormal(bnn)
    hist = pyrobnn.fit(bnn, guide, torch.utils.data.TensorDataset(X, X[:, 0] > 0), epochs=30, lr=0.05, progress=False)
    assert hist.records[-1]["loss"] < hist.records[0]["loss"]
    pp = predict(bnn, guide, X, num_samples=20)
    assert float((pp.predicted_class() == (X[:, 0] > 0).long()).float().mean()) > 0.8


class HandWrittenRunningMean(nn.Module):
    """A user's own running statistic: a buffer moved in place towards each batch's mean activation."""

    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(2, 8), nn.Linear(8, 3)
        self.register_buffer("running", torch.zeros(8))

    def forward(self, x):
        h = self.a(x)
        if self.training:
            with torch.no_grad():
                self.running.mul_(0.9).add_(0.1 * h.mean(0))
        return self.out(torch.relu(h - self.running))


def test_a_buffer_written_from_each_draw_is_refused_on_batched_routes_and_trains_one_draw_at_a_time():
    """Batched, it failed with "output with shape [8] doesn't match the broadcast shape [4, 8]"."""
    bnn = pyrobnn.lift(HandWrittenRunningMean())
    with pytest.raises(pyrobnn.errors.Unsupported, match=r"^the net updates a tensor of shape \[8\] in place from "
                                                          r"each weight draw .* run one draw at a time: fit"):
        pyrobnn.fit(bnn, MeanFieldNormal(bnn), (X, Y), epochs=1, num_particles=4, progress=False)
    pyro.clear_param_store()
    cell = check(pyrobnn.lift(HandWrittenRunningMean()), MeanFieldNormal, "svi", X, Y)  # the checker's ELBO is batched
    assert cell.status == "refused" and "\n" not in cell.detail
    guide = MeanFieldNormal(bnn)
    hist = pyrobnn.fit(bnn, guide, (X, Y), epochs=30, lr=0.03, progress=False)  # one draw per step
    assert hist.records[-1]["loss"] < hist.records[0]["loss"] and bnn.net.running.abs().sum() > 0


def test_predict_with_a_pyro_autoguide_not_yet_run():
    """Its lazy prototype was built without a target ("Continuous inference cannot handle discrete sample site
    'obs'"); now as training builds it, and the draws come from its initial posterior."""
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)))
    pp = predict(bnn, AutoNormal(bnn.model), X, num_samples=5)
    assert pp.outputs.shape == (5, len(X), 3) and torch.isfinite(pp.outputs).all()


def test_predict_and_validation_take_dataloaders():
    from torch.utils.data import DataLoader, TensorDataset
    pyro.set_rng_seed(0)  # its net and loader order, not whatever the tests before it left in torch's generator
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)))
    guide = MeanFieldNormal(bnn)
    pairs = DataLoader(TensorDataset(X, Y), batch_size=25)
    hist = pyrobnn.fit(bnn, guide, pairs, epochs=30, lr=0.03, val_data=pairs, progress=False)
    assert hist.records[-1]["loss"] < hist.records[0]["loss"]
    assert hist.records[-1]["val_accuracy"] > hist.records[0]["val_accuracy"]
    whole = predict(bnn, guide, X, num_samples=6, seed=3)
    for loader in (pairs, DataLoader(TensorDataset(X), batch_size=7)):  # pairs or bare inputs, gathered in order
        torch.testing.assert_close(predict(bnn, guide, loader, num_samples=6, seed=3).outputs, whole.outputs)


class DictOut(nn.Module):
    """A Hugging Face style output: a dict holding the logits and the features under them."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Sequential(nn.Linear(2, 8), nn.Tanh()), nn.Linear(8, 3)

    def forward(self, x):
        h = self.body(x)
        return {"features": h, "logits": self.head(h)}


@pytest.mark.parametrize("route", ["fit", "particles", "local", "svi"])
def test_a_dict_output_trains_on_every_route_through_lift_output(route):
    with pytest.raises(TypeError, match=r"it returned dict \(pass lift\(output=\.\.\.\)"):
        pyrobnn.fit(b := pyrobnn.lift(DictOut()), MeanFieldNormal(b), (X, Y), epochs=1, progress=False)
    wrong = pyrobnn.lift(DictOut(), output="logit")
    with pytest.raises(ValueError, match=r"lift\(output='logit'\): the net's output has no such part \(\['features', "):
        pyrobnn.fit(wrong, MeanFieldNormal(wrong), (X, Y), epochs=1, progress=False)

    bnn = pyrobnn.lift(DictOut(), output="logits")
    guide = MeanFieldNormal(bnn)
    start = guide.loc_flat.detach().clone()
    if route == "svi":
        losses = [SVI(bnn.model, guide, Adam({"lr": 0.03}), Trace_ELBO()).step(X, Y) for _ in range(60)]
        assert sum(losses[-5:]) < sum(losses[:5])
    else:
        kw = {"fit": {}, "particles": {"num_particles": 4}, "local": {"estimator": "local"}}[route]
        hist = pyrobnn.fit(bnn, guide, (X, Y), epochs=60, lr=0.03, progress=False, **kw)
        assert hist.records[-1]["loss"] < hist.records[0]["loss"]
    assert not torch.equal(start, guide.loc_flat)
    assert predict(bnn, guide, X, num_samples=5).outputs.shape == (5, 60, 3)
    assert pyro.infer.Predictive(bnn.model, guide=guide, num_samples=3, parallel=True)(X)["obs"].shape == (3, 60)
