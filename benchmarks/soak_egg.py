"""Long-run safety: train the egg model by SVI for a fixed wall-clock time and report memory.

    .venv/bin/python benchmarks/soak_egg.py --seconds 600

Prints resident memory (RSS) at the start, every minute, and at the end. A leak shows as RSS that
keeps climbing; a healthy run levels off after the first minute.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro  # noqa: E402
import torch  # noqa: E402

import pyrobnn  # noqa: E402
from pyrobnn.experiments.egg_data import simulate_eggs  # noqa: E402
from pyrobnn.models.egg import EggNet  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--epochs-per-call", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    df = simulate_eggs(seed=0)
    x = torch.tensor(df[["weight", "time"]].to_numpy(), dtype=torch.float32)
    y = torch.tensor(df["outcome"].to_numpy())
    net = EggNet()
    net.standardize.fit(x)
    bnn = pyrobnn.lift(net, likelihood=pyrobnn.likelihoods.Categorical(3))
    guide = pyrobnn.MeanFieldNormal(bnn)
    pyro.set_rng_seed(0)
    start, calls, epochs = time.perf_counter(), 0, 0
    samples = [(0.0, rss_mb())]
    print(f"t=   0 s  RSS {samples[0][1]:7.1f} MB", flush=True)
    next_report = 60.0
    while time.perf_counter() - start < args.seconds:
        h = pyrobnn.fit(bnn, guide, (x, y), epochs=args.epochs_per_call, lr=0.005, batch_size=64,
                        progress=False, val_data=(x[:100], y[:100]), val_every=args.epochs_per_call)
        pyrobnn.predict(bnn, guide, x[:3], num_samples=5000)
        calls, epochs = calls + 1, epochs + args.epochs_per_call
        gc.collect()
        t = time.perf_counter() - start
        if t >= next_report:
            samples.append((t, rss_mb()))
            print(f"t={t:4.0f} s  RSS {samples[-1][1]:7.1f} MB  epochs {epochs}  loss {h.last['loss']:.1f}  "
                  f"val acc {h.last['val_accuracy']:.3f}", flush=True)
            next_report += 60.0
    samples.append((time.perf_counter() - start, rss_mb()))
    first_min = next((r for t, r in samples if t >= 60.0), samples[-1][1])
    print(f"end: {samples[-1][0]:.0f} s, {epochs} epochs in {calls} fit() calls; RSS start {samples[0][1]:.1f} MB, "
          f"after 1 min {first_min:.1f} MB, end {samples[-1][1]:.1f} MB "
          f"(growth after the first minute: {samples[-1][1] - first_min:+.1f} MB)")


if __name__ == "__main__":
    main()
