"""Median milliseconds per SVI training step (optimiser included), pyrobnn against references,
measured in one process with the implementations alternated; prints a table with ratios.

    .venv/bin/python benchmarks/step_time.py [--repeats 7] [--steps 60] [--threads 2]

Nets: A = egg MLP 2-32-32-3, batch 64; B = MNIST-size MLP 784-400-400-10, batch 128;
C = LSTM(1 -> 10) + Linear(10 -> 1) on sequences of 21 steps, batch 64, Gaussian likelihood.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO  # noqa: E402
from torch import nn  # noqa: E402

import pyrobnn  # noqa: E402
from benchmarks.bbb import BBBMLP, BBBNet  # noqa: E402
from benchmarks.bbb import loss as bbb_loss
from pyrobnn.fastelbo import MeanFieldELBO  # noqa: E402
from pyrobnn.models.sequence import LSTMForecaster  # noqa: E402

NETS = {"A": ([2, 32, 32, 3], 64, 1000), "B": ([784, 400, 400, 10], 128, 10000), "C": (None, 64, 2700)}
SEQ_LEN = 21


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def adam_step(parameters, loss_fn):
    """One training step: loss, backward, one foreach Adam update."""
    opt = torch.optim.Adam(list(parameters), lr=1e-3, foreach=True)

    def step():
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def relu_stack(layers, h, unpack=False):
    """Run Bayesian layers with ReLU between them; ``unpack``: layers return (out, kl)."""
    kl = 0.0
    for i, layer in enumerate(layers):
        h = layer(h)
        if unpack:
            h, k = h
            kl = kl + k
        h = torch.relu(h) if i < len(layers) - 1 else h
    return h, kl


def pyrobnn_rows(make_net, likelihood, x, y, n, particles, vec) -> dict:
    """The pyrobnn rows for one net: through Pyro's ELBOs, and the fast path with 1 and 8 particles."""
    def step(elbo_factory):
        def make():
            pyro.clear_param_store()
            bnn = pyrobnn.lift(make_net(), likelihood=likelihood)
            guide = pyrobnn.MeanFieldNormal(bnn)
            elbo = elbo_factory()
            return adam_step(guide.parameters(), lambda: elbo.differentiable_loss(bnn.model, guide, x, y, data_size=n))
        return make

    return {
        "pyrobnn via Pyro TraceMeanField_ELBO": step(lambda: TraceMeanField_ELBO(**vec)),
        "pyrobnn via Pyro Trace_ELBO": step(lambda: Trace_ELBO(**vec)),
        "pyrobnn fast mean-field ELBO (default)": step(lambda: MeanFieldELBO(num_particles=particles)),
        "pyrobnn fast, 8 vectorised particles": step(lambda: MeanFieldELBO(num_particles=8)),
        **({"pyrobnn fast, local reparameterisation": step(
            lambda: MeanFieldELBO(num_particles=particles, estimator="local"))} if x.dim() == 2 else {}),
    }


def tyxe_row(make_net, make_likelihood, svi_args, vec) -> dict:
    """TyXe's VariationalBNN with its AutoNormal guide (benchmark environment only). TyXe calls
    ``pyro.util.deep_getattr``, which pyro 1.9 removed: a one-line equivalent is put back."""
    try:
        import tyxe
    except ImportError as e:
        print(f"note: TyXe row skipped ({e})")
        return {}

    def make():
        pyro.clear_param_store()
        if not hasattr(pyro.util, "deep_getattr"):
            pyro.util.deep_getattr = lambda obj, name: functools.reduce(getattr, name.split("."), obj)
        bnn = tyxe.VariationalBNN(make_net(), tyxe.priors.IIDPrior(pyro.distributions.Normal(0.0, 1.0)),
                                  make_likelihood(tyxe), tyxe.guides.AutoNormal)
        svi = pyro.infer.SVI(bnn.model, bnn.guide, pyro.optim.Adam({"lr": 1e-3}), TraceMeanField_ELBO(**vec))
        return lambda: svi.step(*svi_args)
    return {"TyXe 0.1.x (AutoNormal, shim for pyro 1.9)": make}


def makers(sizes, batch, n, particles):
    x = torch.randn(batch, sizes[0])
    y = torch.randint(0, sizes[-1], (batch,))

    def deterministic():
        net = mlp(sizes)
        return adam_step(net.parameters(), lambda: nn.functional.cross_entropy(net(x), y))

    def bbb():
        model = BBBMLP(sizes)
        return adam_step(model.parameters(), lambda: bbb_loss(model, x, y, n))

    vec = dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    others = {}
    try:  # BLiTZ (benchmark environment only)
        from blitz.modules import BayesianLinear
        from blitz.utils import variational_estimator

        def blitz():
            @variational_estimator
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.layers = nn.ModuleList(BayesianLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

                def forward(self, h):
                    return relu_stack(self.layers, h)[0]

            net, crit = Net(), nn.CrossEntropyLoss(reduction="sum")
            return adam_step(net.parameters(), lambda: net.sample_elbo(
                inputs=x, labels=y, criterion=crit, sample_nbr=particles, complexity_cost_weight=x.shape[0] / n))
        others["BLiTZ 0.2.8"] = blitz
    except ImportError as e:
        print(f"note: BLiTZ row skipped ({e})")
    try:  # bayesian-torch (benchmark environment only)
        from bayesian_torch.layers import LinearReparameterization

        def bayesian_torch():
            layers = nn.ModuleList(LinearReparameterization(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

            def loss():
                h, kl = relu_stack(layers, x, unpack=True)
                return nn.functional.cross_entropy(h, y, reduction="sum") * (n / x.shape[0]) + kl
            return adam_step(layers.parameters(), loss)
        others["bayesian-torch 0.5.0 (reparameterisation)"] = bayesian_torch
    except ImportError as e:
        print(f"note: bayesian-torch row skipped ({e})")
    return {
        "deterministic torch": deterministic,
        "hand-written BBB (torch)": bbb,
        **pyrobnn_rows(lambda: mlp(sizes), pyrobnn.likelihoods.Categorical(), x, y, n, particles, vec),
        **others,
        **tyxe_row(lambda: mlp(sizes), lambda tyxe: tyxe.likelihoods.Categorical(n), (x, y), vec),
    }


def lstm_makers(batch, n, particles):
    """Net C: the stock forecaster of seed 003."""
    x, y = torch.randn(batch, SEQ_LEN, 1), torch.randn(batch)
    vec = dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)

    def deterministic():
        net = LSTMForecaster(10)
        return adam_step(net.parameters(), lambda: 0.5 * ((net(x).squeeze(-1) - y) ** 2).sum())

    def bbb():
        model = BBBNet(LSTMForecaster(10))
        return adam_step(model.parameters(), lambda: bbb_loss(model, x, y, n, regression=True))


    others = {}
    try:
        from blitz.modules import BayesianLSTM
        from blitz.utils import variational_estimator

        def blitz():
            @variational_estimator
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.lstm, self.head = BayesianLSTM(1, 10), nn.Linear(10, 1)

                def forward(self, h):
                    return self.head(self.lstm(h)[0][:, -1]).squeeze(-1)

            net = Net()
            crit = lambda a, b: 0.5 * ((a - b) ** 2).sum()  # noqa: E731
            return adam_step(net.parameters(), lambda: net.sample_elbo(
                inputs=x, labels=y, criterion=crit, sample_nbr=particles, complexity_cost_weight=x.shape[0] / n))
        others["BLiTZ 0.2.8"] = blitz
    except ImportError as e:
        print(f"note: BLiTZ row skipped ({e})")
    try:
        from bayesian_torch.layers import LSTMReparameterization

        def bayesian_torch():
            lstm, head = LSTMReparameterization(1, 10), nn.Linear(10, 1)

            def loss():
                h, _, kl = lstm(x)
                return 0.5 * ((head(h[:, -1]).squeeze(-1) - y) ** 2).sum() * (n / batch) + kl
            return adam_step(list(lstm.parameters()) + list(head.parameters()), loss)
        others["bayesian-torch 0.5.0 (reparameterisation)"] = bayesian_torch
    except ImportError as e:
        print(f"note: bayesian-torch row skipped ({e})")
    return {
        "deterministic torch": deterministic,
        "hand-written BBB (torch)": bbb,
        **pyrobnn_rows(lambda: LSTMForecaster(10), pyrobnn.likelihoods.Normal(scale=1.0), x, y, n, particles, vec),
        **others,
        **tyxe_row(lambda: LSTMForecaster(10), lambda tyxe: tyxe.likelihoods.HomoskedasticGaussian(n, scale=1.0),
                   (x, y.unsqueeze(-1)), vec),
    }


def time_steps(step, n_steps):
    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    return (time.perf_counter() - t0) / n_steps * 1e3


def parse_bench_args(doc, argv, repeats, **extra):
    """The options every benchmark shares (--repeats, --threads) plus ``extra`` int options; sets the
    thread count and turns Pyro's validation off, as training does."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--threads", type=int, default=2)
    for name, default in extra.items():
        if isinstance(default, tuple):  # a choice of several, e.g. --nets A C
            ap.add_argument(f"--{name.replace('_', '-')}", nargs="+", choices=default, default=list(default))
        else:
            ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    return args


def main(argv=None):
    args = parse_bench_args(__doc__, argv, repeats=7, steps=60, particles=1, nets=("A", "B", "C"))
    for net, (sizes, batch, n) in NETS.items():
        if args.nets and net not in args.nets:
            continue
        impls = makers(sizes, batch, n, args.particles) if sizes else lstm_makers(batch, n, args.particles)
        steps = {name: make() for name, make in impls.items()}
        times = {name: [] for name in impls}
        for _ in range(args.repeats):  # alternate implementations, repeat, take medians
            for name, step in steps.items():
                times[name].append(time_steps(step, max(5, args.steps // 6) if net == "B" else args.steps))
        med = {k: statistics.median(v) for k, v in times.items()}
        ref = med["hand-written BBB (torch)"]
        kind = f"MLP {'-'.join(map(str, sizes))}" if sizes else f"LSTM(1->10)+Linear, {SEQ_LEN} steps"
        print(f"\nnet {net}: {kind}, batch {batch}, {args.particles} particle(s), "
              f"{args.threads} thread(s); median of {args.repeats}")
        print(f"{'implementation':<44}{'ms/step':>10}{'x BBB':>8}")
        for k, v in med.items():
            print(f"{k:<44}{v:>10.3f}{v / ref:>8.2f}")
        one = med["pyrobnn fast mean-field ELBO (default)"]
        print(f"8 vectorised particles cost {med['pyrobnn fast, 8 vectorised particles'] / one:.2f}x one particle"
              if args.particles == 1 else "")


if __name__ == "__main__":
    main()
