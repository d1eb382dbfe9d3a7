"""Median milliseconds per SVI training step (optimiser included), pyrobnn against references,
measured in one process with the implementations alternated; prints a table with ratios.

    .venv/bin/python benchmarks/step_time.py [--repeats 7] [--steps 60] [--threads 2]

Nets: A = egg MLP 2-32-32-3, batch 64; B = MNIST-size MLP 784-400-400-10, batch 128.
"""
from __future__ import annotations

import argparse
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
from benchmarks.bbb import BBBMLP  # noqa: E402
from benchmarks.bbb import loss as bbb_loss
from pyrobnn.fastelbo import MeanFieldELBO  # noqa: E402

NETS = {"A": ([2, 32, 32, 3], 64, 1000), "B": ([784, 400, 400, 10], 128, 10000)}


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


def makers(sizes, batch, n, particles):
    x = torch.randn(batch, sizes[0])
    y = torch.randint(0, sizes[-1], (batch,))

    def deterministic():
        net = mlp(sizes)
        return adam_step(net.parameters(), lambda: nn.functional.cross_entropy(net(x), y))

    def bbb():
        model = BBBMLP(sizes)
        return adam_step(model.parameters(), lambda: bbb_loss(model, x, y, n))

    def pyrobnn_step(elbo_factory):
        def make():
            pyro.clear_param_store()
            bnn = pyrobnn.lift(mlp(sizes))
            guide = pyrobnn.MeanFieldNormal(bnn)
            elbo = elbo_factory()
            return adam_step(guide.parameters(), lambda: elbo.differentiable_loss(bnn.model, guide, x, y, data_size=n))
        return make

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
        "pyrobnn via Pyro TraceMeanField_ELBO": pyrobnn_step(lambda: TraceMeanField_ELBO(**vec)),
        "pyrobnn via Pyro Trace_ELBO": pyrobnn_step(lambda: Trace_ELBO(**vec)),
        "pyrobnn fast mean-field ELBO (default)": pyrobnn_step(lambda: MeanFieldELBO(num_particles=particles)),
        "pyrobnn fast, 8 vectorised particles": pyrobnn_step(lambda: MeanFieldELBO(num_particles=8)),
        "pyrobnn fast, local reparameterisation": pyrobnn_step(
            lambda: MeanFieldELBO(num_particles=particles, estimator="local")),
        **others,
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
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    return args


def main(argv=None):
    args = parse_bench_args(__doc__, argv, repeats=7, steps=60, particles=1)
    for net, (sizes, batch, n) in NETS.items():
        impls = makers(sizes, batch, n, args.particles)
        steps = {name: make() for name, make in impls.items()}
        times = {name: [] for name in impls}
        for _ in range(args.repeats):  # alternate implementations, repeat, take medians
            for name, step in steps.items():
                times[name].append(time_steps(step, args.steps if net == "A" else max(5, args.steps // 6)))
        med = {k: statistics.median(v) for k, v in times.items()}
        ref = med["hand-written BBB (torch)"]
        print(f"\nnet {net}: MLP {'-'.join(map(str, sizes))}, batch {batch}, {args.particles} particle(s), "
              f"{args.threads} thread(s); median of {args.repeats}")
        print(f"{'implementation':<44}{'ms/step':>10}{'x BBB':>8}")
        for k, v in med.items():
            print(f"{k:<44}{v:>10.3f}{v / ref:>8.2f}")
        one = med["pyrobnn fast mean-field ELBO (default)"]
        print(f"8 vectorised particles cost {med['pyrobnn fast, 8 vectorised particles'] / one:.2f}x one particle"
              if args.particles == 1 else "")


if __name__ == "__main__":
    main()
