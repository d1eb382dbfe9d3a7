"""Milliseconds per training step through ``pyrobnn.fit`` itself (fresh shuffled minibatches every epoch, the
path users run), from tensors and from a DataLoader, against the same loop written by hand around a
deterministic net and around hand-written Bayes-by-Backprop (``benchmarks/bbb.py``). One process, the
implementations alternated, medians; every row also as x deterministic.

    .venv/bin/python benchmarks/fit_time.py [--repeats 5] [--epochs 2] [--threads 2] [--nets A B C D E]

Nets: A egg MLP 2-32-32-3, batch 64; B MLP 784-400-400-10, batch 128; C LSTM(1 -> 10) + Linear on 21-step
sequences, batch 64, Gaussian likelihood; D LeNet-style CNN on 28x28, batch 128; E residual CNN with BatchNorm2d
(width 16, two blocks), batch 128. Each epoch is 20 steps (10 for E).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import pyrobnn  # noqa: E402
from benchmarks.bbb import BBBMLP, BBBNet  # noqa: E402
from benchmarks.bbb import loss as bbb_loss  # noqa: E402
from benchmarks.step_time import mlp, parse_bench_args  # noqa: E402
from pyrobnn.models.mnist import lenet  # noqa: E402
from pyrobnn.models.sequence import LSTMForecaster  # noqa: E402
from pyrobnn.models.zoo import ResidualBNCNN  # noqa: E402

LR = 1e-3


def nets():
    """name -> (make net, hand-written BBB of it, inputs, targets, batch size, regression?)"""
    def images(n):
        return torch.rand(n, 28, 28) * 255, torch.randint(0, 10, (n,))
    return {
        "A": (lambda: mlp([2, 32, 32, 3]), lambda: BBBMLP([2, 32, 32, 3]),
              torch.randn(1280, 2), torch.randint(0, 3, (1280,)), 64, False),
        "B": (lambda: mlp([784, 400, 400, 10]), lambda: BBBMLP([784, 400, 400, 10]),
              torch.randn(2560, 784), torch.randint(0, 10, (2560,)), 128, False),
        "C": (lambda: LSTMForecaster(10), lambda: BBBNet(LSTMForecaster(10)),
              torch.randn(1280, 21, 1), torch.randn(1280), 64, True),
        "D": (lenet, lambda: BBBNet(lenet()), *images(2560), 128, False),
        "E": (lambda: ResidualBNCNN(1, 16, 2, 10), lambda: BBBNet(ResidualBNCNN(1, 16, 2, 10)),
              torch.randn(1280, 1, 28, 28), torch.randint(0, 10, (1280,)), 128, False),
    }


def minibatches(x, y, batch, loader):
    """Every epoch's minibatches: a DataLoader, or a fresh permutation of the tensors."""
    if loader is not None:
        return iter(loader)
    perm = torch.randperm(x.shape[0])
    return ((x[i], y[i]) for i in perm.split(batch))


def hand_loop(model, loss_fn, x, y, batch, loader):
    """The loop a user writes by hand: Adam (foreach), shuffled minibatches, one step per minibatch."""
    opt = torch.optim.Adam(model.parameters(), lr=LR, foreach=True)

    def train(epochs):
        model.train()
        for _ in range(epochs):
            for xb, yb in minibatches(x, y, batch, loader):
                loss = loss_fn(model, xb, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return train


def rows(make, make_bbb, x, y, batch, regression):
    n = x.shape[0]
    likelihood = pyrobnn.likelihoods.Normal(scale=1.0) if regression else pyrobnn.likelihoods.Categorical()

    def det_loss(net, xb, yb):
        out = net(xb)
        return 0.5 * ((out.reshape(yb.shape) - yb) ** 2).mean() if regression else nn.functional.cross_entropy(out, yb)

    def bbb(model, xb, yb):
        return bbb_loss(model, xb, yb, n, regression=regression)

    def through_fit(loader):
        pyro.clear_param_store()
        bnn = pyrobnn.lift(make(), likelihood=likelihood)
        guide = pyrobnn.MeanFieldNormal(bnn)
        data = loader if loader is not None else (x, y)
        return lambda epochs: pyrobnn.fit(bnn, guide, data, epochs=epochs, lr=LR, batch_size=batch, progress=False)

    out = {}
    for source in ("tensors", "DataLoader"):
        loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True) if source == "DataLoader" else None
        out[("deterministic torch loop", source)] = hand_loop(make(), det_loss, x, y, batch, loader)
        out[("hand-written BBB loop", source)] = hand_loop(make_bbb(), bbb, x, y, batch, loader)
        out[("pyrobnn.fit (default path)", source)] = through_fit(loader)
    return out


def main(argv=None):
    args = parse_bench_args(__doc__, argv, repeats=5, epochs=2, nets=("A", "B", "C", "D", "E"))
    for name, (make, make_bbb, x, y, batch, regression) in nets().items():
        if name not in args.nets:
            continue
        impls = rows(make, make_bbb, x, y, batch, regression)
        steps = args.epochs * -(-x.shape[0] // batch)
        for train in impls.values():  # warm-up: one epoch each
            train(1)
        times = {k: [] for k in impls}
        for _ in range(args.repeats):
            for k, train in impls.items():
                t0 = time.perf_counter()
                train(args.epochs)
                times[k].append((time.perf_counter() - t0) / steps * 1e3)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\nnet {name}: {steps} steps of batch {batch} per timing, {args.threads} thread(s), "
              f"median of {args.repeats}")
        print(f"{'implementation':<30}{'data':<12}{'ms/step':>9}{'x BBB':>8}{'x det':>8}")
        for (impl, source), v in med.items():
            ref, det = med[("hand-written BBB loop", source)], med[("deterministic torch loop", source)]
            print(f"{impl:<30}{source:<12}{v:>9.2f}{v / ref:>8.2f}{v / det:>8.2f}")


if __name__ == "__main__":
    main()
