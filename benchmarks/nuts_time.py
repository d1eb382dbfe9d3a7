"""NUTS on the egg net 2-32-32-3: pyrobnn's lean potential against Pyro's NUTS on the traced ``bnn.model``,
and C batched chains against one; runs alternated in one process, medians and ratios printed.

    .venv/bin/python benchmarks/nuts_time.py [--repeats 2] [--steps 100] [--chains 4] [--threads 2]

Both samplers are Pyro's NUTS with the same settings (max tree depth 6, the same warm-up and draws, the
same start: the net's initial weights, the same seed). Gradient evaluations are counted at Pyro's
``potential_grad`` (every leapfrog step of either run), so "ms per gradient" divides the whole run's wall
time, Pyro's tree building included, by the same count. Data: egg_times.csv if found ($PYROBNN_EGG_CSV or
../shared/data), else the embedded simulator.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro  # noqa: E402
import pyro.ops.integrator as integrator  # noqa: E402
import torch  # noqa: E402
from pyro.infer import MCMC, NUTS  # noqa: E402

import pyrobnn  # noqa: E402
from experiments.egg_data import load_egg_csv, simulate_eggs  # noqa: E402
from pyrobnn.mcmc import nuts  # noqa: E402
from pyrobnn.models.egg import EggNet  # noqa: E402

DEPTH = 6
_calls = [0]
_potential_grad = integrator.potential_grad


def _counted_potential_grad(potential_fn, z):
    _calls[0] += 1
    return _potential_grad(potential_fn, z)


integrator.potential_grad = _counted_potential_grad  # velocity_verlet looks it up here at every step


def egg_data():
    default = Path(__file__).resolve().parents[2] / "shared/data/egg_times/egg_times.csv"
    path = os.environ.get("PYROBNN_EGG_CSV") or default
    df = load_egg_csv(path) if Path(path).is_file() else simulate_eggs()
    x = torch.tensor(df[["weight", "time"]].to_numpy(), dtype=torch.float32)
    return x, torch.tensor(df["outcome"].to_numpy()), ("egg_times.csv" if Path(path).is_file() else "SIMULATED eggs")


def timed(fn):
    _calls[0] = 0
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, _calls[0], out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100, help="warm-up steps and draws per chain (each)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y, source = egg_data()
    torch.manual_seed(0)
    net = EggNet((32, 32))
    net.standardize.fit(x)
    bnn = pyrobnn.lift(net)
    init = {k: v.clone() for k, v in bnn.initial_values().items()}
    n = args.steps

    def pyro_traced():
        pyro.set_rng_seed(0)
        mcmc = MCMC(NUTS(bnn.model, max_tree_depth=DEPTH), num_samples=n, warmup_steps=n, initial_params=init,
                    disable_progbar=True)
        mcmc.run(x, y)

    def lean(chains):
        return lambda: nuts(bnn, (x, y), n, n, num_chains=chains, max_tree_depth=DEPTH, seed=0, progress=False)

    rows: dict[str, list] = {"pyro": [], "lean": [], "batched": []}
    for _ in range(args.repeats):  # alternated
        rows["pyro"].append(timed(pyro_traced))
        rows["lean"].append(timed(lean(1)))
        rows["batched"].append(timed(lean(args.chains)))
    print(f"# NUTS on the egg net 2-32-32-3 ({sum(p.numel() for p in net.parameters() if p.requires_grad)} "
          f"weights), {len(x)} rows of {source}; {n} warm-up + {n} draws, tree depth <= {DEPTH}, "
          f"{args.threads} threads, medians of {args.repeats}")
    ms = {k: statistics.median(1e3 * t / c for t, c, _ in v) for k, v in rows.items()}
    wall = {k: statistics.median(t for t, _, _ in v) for k, v in rows.items()}
    evals = {k: statistics.median(c for _, c, _ in v) for k, v in rows.items()}
    print("| run | wall s | gradient evaluations | ms per gradient | Pyro traced / this |")
    print("|---|---|---|---|---|")
    labels = {"pyro": "Pyro NUTS(bnn.model)", "lean": "pyrobnn.mcmc.nuts, 1 chain",
              "batched": f"pyrobnn.mcmc.nuts, {args.chains} batched chains"}
    for k, label in labels.items():
        print(f"| {label} | {wall[k]:.1f} | {evals[k]:.0f} | {ms[k]:.3f} | {ms['pyro'] / ms[k]:.2f}x |")
    print(f"\n{args.chains} batched chains / 1 chain, wall time: {wall['batched'] / wall['lean']:.2f}x")
    one, many = rows["lean"][-1][2], rows["batched"][-1][2]
    print(f"step size: 1 chain {one.stats()['step_size'][0]:.4f}, {args.chains} batched "
          f"{many.stats()['step_size'][0]:.4f}; gradient evaluations per draw (warm-up included): "
          f"{evals['lean'] / (2 * n):.1f} and {evals['batched'] / (2 * n):.1f}")


if __name__ == "__main__":
    main()
