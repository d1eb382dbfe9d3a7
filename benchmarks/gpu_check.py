"""The GPU check (run by ``benchmarks/gpu.sh``): training and prediction on CUDA against the CPU, in one process.

1. Nets B (MLP 784-400-400-10) and D (LeNet-style CNN on 28x28) train for one epoch through ``pyrobnn.fit`` on a
   synthetic 10-class problem (Gaussian classes around random centres, 10,000 training and 2,000 test rows,
   batch 128) on each device, with seeds 0..k-1; the epoch time and the test accuracy and NLL of each run are kept.
   The devices draw different random numbers, so the check compares distributions: for accuracy and NLL,
   |mean on CUDA - mean on CPU| must stay within max(absolute tolerance, 4 standard errors of the difference),
   absolute tolerances 0.02 (accuracy) and 0.05 (NLL).
2. Host synchronisations per training step on CUDA, counted with ``torch.cuda.set_sync_debug_mode("warn")`` over
   one more epoch of B (fit reads the device once per epoch, so this should be far below one).
3. Predictive time: the egg net (2-32-32-3) with 5000 draws for 3 inputs, and B with 100 draws for 10,000 inputs,
   on each device (CUDA timed with synchronisation), median of 3.

Writes ``benchmarks/gpu.json`` (or ``--out``) and prints a table; exit status 1 when a check fails.

    python benchmarks/gpu_check.py [--seeds 3] [--devices cpu cuda] [--out benchmarks/gpu.json]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after an installed pyrobnn (gpu.sh on a bare machine)

import pyro  # noqa: E402
import torch  # noqa: E402

import pyrobnn  # noqa: E402
from benchmarks.step_time import mlp  # noqa: E402
from pyrobnn.models.mnist import lenet  # noqa: E402

TOLERANCE = {"accuracy": 0.02, "nll": 0.05}
SEPARATION = {"rows": 0.1, "images": 0.4}
LR = 3e-3


def synthetic(kind: str, n: int, seed: int = 123):
    """A 10-class problem one epoch can partly learn: rows drawn around a random centre per class with unit noise,
    or 28x28 images in [0, 255] around a blocky (7x7 upsampled) random pattern per class."""
    g = torch.Generator().manual_seed(seed)
    if kind == "images":
        centres = torch.randn(10, 1, 7, 7, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3).reshape(10, 784)
    else:
        centres = torch.randn(10, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = SEPARATION[kind] * centres[y] + torch.randn(n, 784, generator=g)
    if kind == "images":
        x = ((x.clamp(-3, 3) + 3) / 6 * 255).reshape(n, 28, 28)  # pixels in [0, 255]
    return x[:10_000], y[:10_000], x[10_000:], y[10_000:]


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def train_once(make, data, device, seed):
    xtr, ytr, xte, yte = data
    pyro.clear_param_store()
    torch.manual_seed(seed)
    net = make()  # the MNIST experiment's recipe: fan-in scaled priors, posteriors started narrow
    bnn = pyrobnn.lift(net, priors=pyrobnn.priors.fan_in_normal(net)).to(device)
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=1e-3)
    sync(device)
    t0 = time.perf_counter()
    pyrobnn.fit(bnn, guide, (xtr, ytr), epochs=1, lr=LR, batch_size=128, seed=seed, device=device, progress=False)
    sync(device)
    seconds = time.perf_counter() - t0
    pp = pyrobnn.predict(bnn, guide, xte.to(device), num_samples=100, seed=seed)
    probs = pp.mean_probs().cpu()
    acc = float((probs.argmax(1) == yte).float().mean())
    nll = float(-probs.clamp_min(1e-12).log().gather(1, yte[:, None]).mean())
    return {"seconds": seconds, "accuracy": acc, "nll": nll}, (bnn, guide)


def compare(a: list[float], b: list[float], tol: float) -> dict:
    k = len(a)
    se = math.sqrt((statistics.variance(a) + statistics.variance(b)) / k) if k > 1 else 0.0
    diff = statistics.mean(b) - statistics.mean(a)
    bound = max(tol, 4 * se)
    return {"mean_first": statistics.mean(a), "mean_second": statistics.mean(b), "difference": diff,
            "bound": bound, "ok": abs(diff) <= bound}


def syncs_per_step(bnn, guide, data, device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    xtr, ytr = data[0], data[1]
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pyrobnn.fit(bnn, guide, (xtr, ytr), epochs=1, lr=LR, batch_size=128, device=device, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    n_sync = sum("synchroniz" in str(w.message).lower() for w in caught)
    return n_sync / -(-xtr.shape[0] // 128)


def predictive_time(make, x, draws, device, repeats=3):
    bnn = pyrobnn.lift(make()).to(device)
    guide = pyrobnn.MeanFieldNormal(bnn)
    x = x.to(device)
    times = []
    for i in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        pyrobnn.predict(bnn, guide, x, num_samples=draws, seed=i)
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first call warms up


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--devices", nargs=2, default=["cpu", "cuda"], help="the reference and the device checked")
    ap.add_argument("--out", default=str(Path(__file__).with_name("gpu.json")))
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error("--seeds must be >= 2 (the check compares spreads)")
    pyro.enable_validation(False)
    first, second = args.devices
    report: dict = {"torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
                    "cpu_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "devices": args.devices, "seeds": args.seeds, "tolerance": TOLERANCE, "training": {},
                    "predictive_seconds": {}}
    ok = True
    for name, make, kind in (("B", lambda: mlp([784, 400, 400, 10]), "rows"), ("D", lenet, "images")):
        data = synthetic(kind, 12_000)
        runs: dict = {"reference": [], "checked": []}  # on `first` and on `second`
        for seed in range(args.seeds):
            for role, device in (("reference", first), ("checked", second)):
                res, last = train_once(make, data, device, seed)
                runs[role].append(res)
        entry = {"runs": runs, "epoch_seconds": {r: statistics.median(x["seconds"] for x in runs[r]) for r in runs}}
        for metric, tol in TOLERANCE.items():
            entry[metric] = compare([r[metric] for r in runs["reference"]], [r[metric] for r in runs["checked"]], tol)
            ok &= entry[metric]["ok"]
        if name == "B":
            entry["host_syncs_per_step"] = syncs_per_step(*last, data, second)
        report["training"][name] = entry
    egg_x, mnist_x = torch.randn(3, 2), torch.randn(10_000, 784)
    for role, device in (("reference", first), ("checked", second)):
        report["predictive_seconds"][role] = {
            "egg 5000 draws x 3": predictive_time(lambda: mlp([2, 32, 32, 3]), egg_x, 5000, device),
            "B 100 draws x 10000": predictive_time(lambda: mlp([784, 400, 400, 10]), mnist_x, 100, device)}
    report["ok"] = ok
    Path(args.out).write_text(json.dumps(report, indent=1))

    print(f"torch {report['torch']}, pyro {report['pyro']}, GPU {report['gpu']}, {report['cpu_threads']} CPU threads")
    print(f"{'net':<5}{'epoch s ' + first:>16}{'epoch s ' + second:>16}{'acc ' + first:>12}{'acc ' + second:>12}"
          f"{'nll ' + first:>12}{'nll ' + second:>12}  same distribution")
    for name, e in report["training"].items():
        print(f"{name:<5}{e['epoch_seconds']['reference']:>16.3f}{e['epoch_seconds']['checked']:>16.3f}"
              f"{e['accuracy']['mean_first']:>12.3f}{e['accuracy']['mean_second']:>12.3f}"
              f"{e['nll']['mean_first']:>12.3f}{e['nll']['mean_second']:>12.3f}  "
              f"{e['accuracy']['ok'] and e['nll']['ok']}")
    syncs = report["training"]["B"].get("host_syncs_per_step")
    if syncs is not None:
        print(f"host synchronisations per training step on {second} (net B, one epoch): {syncs:.3f}")
    for role, rows in report["predictive_seconds"].items():
        times = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in rows.items())
        print(f"predictive on {args.devices[role == 'checked']}: {times}")
    print(f"wrote {args.out}; checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
