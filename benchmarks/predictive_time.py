"""Posterior predictive speed, measured in one process:

A: egg MLP 2-32-32-3, 5000 draws for 3 inputs, pyrobnn.predict vs Pyro's sequential Predictive
   (timed on --pyro-draws draws and compared per draw).
B: MNIST-size MLP 784-400-400-10, 100 draws over 10,000 inputs, pyrobnn.predict vs the machine's
   matmul roofline: the same three layer products as plain batched matmuls on ready-made weights.

    .venv/bin/python benchmarks/predictive_time.py [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from pyro.infer import Predictive  # noqa: E402

import pyrobnn  # noqa: E402
from benchmarks.step_time import mlp, parse_bench_args  # noqa: E402


def median_time(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None):
    args = parse_bench_args(__doc__, argv, repeats=5, pyro_draws=500)

    bnn = pyrobnn.lift(mlp([2, 32, 32, 3]))
    guide = pyrobnn.MeanFieldNormal(bnn)
    xa = torch.randn(3, 2)
    fast = median_time(lambda: pyrobnn.predict(bnn, guide, xa, num_samples=5000), args.repeats)
    pred = Predictive(bnn.model, guide=guide, num_samples=args.pyro_draws, return_sites=["obs"])
    slow = median_time(lambda: pred(xa), max(1, args.repeats // 2))
    print(f"A, 5000 draws x 3 inputs: pyrobnn {fast * 1e3:.1f} ms; Pyro sequential Predictive "
          f"{slow / args.pyro_draws * 5000:.2f} s for 5000 (timed on {args.pyro_draws}); "
          f"{slow / args.pyro_draws * 5000 / fast:.0f}x")

    sizes = [784, 400, 400, 10]
    bnn = pyrobnn.lift(mlp(sizes))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
    xb = torch.randn(10_000, 784)
    s = 100
    fast = median_time(lambda: pyrobnn.predict(bnn, guide, xb, num_samples=s), args.repeats)
    ws = [torch.randn(s, a, b) * 0.05 for a, b in zip(sizes[:-1], sizes[1:])]
    xs = xb.expand(s, *xb.shape)

    def roofline():
        h = xs
        for w in ws:
            h = torch.bmm(h, w)

    roof = median_time(roofline, args.repeats)
    flops = 2 * s * xb.shape[0] * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    print(f"B, 100 draws x 10,000 inputs: pyrobnn {fast:.3f} s; plain batched matmuls of the same "
          f"{flops / 1e9:.0f} GFLOP {roof:.3f} s ({flops / roof / 1e9:.0f} GFLOP/s); ratio {fast / roof:.2f}")


if __name__ == "__main__":
    main()
