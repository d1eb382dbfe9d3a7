"""Posterior predictive speed, measured in one process:

A: egg MLP 2-32-32-3, 5000 draws for 3 inputs, pyrobnn.predict vs Pyro's sequential Predictive
   (timed on --pyro-draws draws and compared per draw).
Then, for A, B (MNIST-size MLP 784-400-400-10, 100 draws x 10,000 inputs), D (LeNet-style CNN, 50 draws x 2000
28x28 images) and E (residual CNN with BatchNorm2d, width 16, 20 draws x 500 images): predict with strategy "loop" (the
draws one after another through the plain net), "vectorize" (vmap over chunks of draws) and "auto" (the default),
each as x (S deterministic passes over the same inputs: the work itself) and auto against the faster of the two.
The machine's roofline is the throughput of one large torch.mm; the sweep at the end finds where looping starts
to beat vectorising (the predictive's LOOP_FLOATS); the last line times B's first layer with the inputs shared
across k draws (one wider GEMM) against one draw's GEMM.

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
from pyrobnn.models.mnist import lenet  # noqa: E402
from pyrobnn.models.zoo import ResidualBNCNN  # noqa: E402
from pyrobnn.predictive import _floats_per_row, choose_strategy  # noqa: E402


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

    print(f"roofline: one 2048x2048 torch.mm at {mm_gflops(args.repeats):.0f} GFLOP/s")
    cases = {"A": (mlp([2, 32, 32, 3]), torch.randn(3, 2), 5000),
             "B": (mlp([784, 400, 400, 10]), torch.randn(10_000, 784), 100),
             "D": (lenet(), torch.rand(2000, 28, 28) * 255, 50),
             "E": (ResidualBNCNN(in_ch=1, width=16, blocks=2, n_out=10), torch.randn(500, 1, 28, 28), 20)}
    print(f"{'net':<4}{'draws x inputs':>16}{'S det passes':>14}{'loop':>9}{'vectorize':>11}{'auto':>9}"
          f"{'auto/best':>11}{'auto/(S det)':>14}  strategy")
    for name, (net, x, s) in cases.items():
        bnn = pyrobnn.lift(net)
        bnn.eval()
        guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
        with torch.no_grad():
            det = median_time(lambda: [net(x) for _ in range(s)], args.repeats)  # S passes back to back
        t = {k: median_time(lambda: pyrobnn.predict(bnn, guide, x, num_samples=s, strategy=k), args.repeats)
             for k in ("loop", "vectorize", "auto")}
        chosen = choose_strategy(x.shape[0], _floats_per_row(bnn, x))
        print(f"{name:<4}{f'{s} x {x.shape[0]}':>16}{det:>13.3f}s{t['loop']:>8.3f}s{t['vectorize']:>10.3f}s"
              f"{t['auto']:>8.3f}s{t['auto'] / min(t['loop'], t['vectorize']):>11.2f}{t['auto'] / det:>14.2f}"
              f"  {chosen}")
    print("sweep (32 draws): loop / vectorize time by inputs N; the activation floats of one pass in brackets")
    for name, make, shape in (("MLP 784-400-400-10", lambda: mlp([784, 400, 400, 10]), (784,)),
                              ("LeNet", lenet, (28, 28))):
        bnn = pyrobnn.lift(make())
        bnn.eval()
        guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
        cells = []
        for n in (1, 8, 64, 512):
            x = torch.rand(n, *shape)
            lo, ve = (median_time(lambda: pyrobnn.predict(bnn, guide, x, num_samples=32, strategy=k), args.repeats)
                      for k in ("loop", "vectorize"))
            cells.append(f"N={n} [{n * _floats_per_row(bnn, x):.0e}]: {lo / ve:.2f}")
        print(f"  {name}: " + ", ".join(cells))
    shared_first_layer(args.repeats)


def shared_first_layer(repeats: int) -> None:
    """B's first layer (10,000 x 784 inputs, 784 -> 400) for k draws at once: the inputs are the same for every draw,
    so k draws' weights stacked make one wider GEMM. Per-draw time of that GEMM against k separate ones."""
    x, w, b = torch.randn(10_000, 784), torch.randn(400, 784), torch.randn(400)
    one = median_time(lambda: torch.nn.functional.linear(x, w, b), repeats)
    cells = []
    for k in (2, 4, 8):
        wk, bk = torch.cat([w] * k), torch.cat([b] * k)
        cells.append(f"k={k}: {median_time(lambda: torch.nn.functional.linear(x, wk, bk), repeats) / k / one:.2f}")
    print(f"B first layer, k draws in one GEMM, per-draw time / one draw's GEMM ({one * 1e3:.1f} ms): "
          + ", ".join(cells))


def mm_gflops(repeats: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / median_time(lambda: a @ b, repeats) / 1e9

if __name__ == "__main__":
    main()
