"""Choose the prior gain of the image experiment on training-side data only.

For each gain, the Bayesian net is trained on the training images less 5000 set aside (a fixed
shuffle), with the learning rate decaying to a tenth; the 5000 validation images give accuracy, NLL,
ECE and the referral gain at 5%, and they are scored against the first 5000 out-of-distribution
images (the image experiment's ``--ood-val-size 5000`` keeps those out of its test AUROC)::

    .venv/bin/python -m pyrobnn.experiments.prior_gain_sweep --data-dir /usr/share/datasets/fashion-mnist \\
        --ood-dir ../shared/data/mnist --arch cnn --epochs 10 --gains 1 2 4 8
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyro
import torch

import pyrobnn
from pyrobnn import metrics, priors
from pyrobnn.models.mnist import lenet, mlp

from .mnist import read_set


def score_gain(gain: float, data: tuple, x_ood: torch.Tensor, arch: str, epochs: int, seed: int) -> dict:
    x_tr, y_tr, x_va, y_va = data
    torch.manual_seed(seed)
    net = lenet() if arch == "cnn" else mlp((100,))
    pyro.clear_param_store()
    bnn = pyrobnn.lift(net, priors=priors.fan_in_normal(net, gain), likelihood=pyrobnn.likelihoods.Categorical(10))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=1e-3)
    steps = epochs * -(-len(y_tr) // 128)
    hist = pyrobnn.fit(bnn, guide, (x_tr, y_tr), epochs=epochs, lr=3e-3, batch_size=128, seed=seed, progress=False,
                       optimizer="clipped_adam", lr_decay=0.1 ** (1 / steps), clip_norm=1e9)
    pp_ood = pyrobnn.predict(bnn, guide, x_ood, num_samples=100)
    pp = pyrobnn.predict(bnn, guide, x_va, num_samples=100)
    probs, ent, mi = pp.mean_probs(), pp.predictive_entropy(), pp.mutual_information()
    by_ent = metrics.referral_curve(probs, y_va, ent, [0.0, 0.05])
    return {"gain": gain, **{f"val_{k}": v for k, v in metrics.classification_report(probs, y_va).items()},
            "val_referral_gain_5pct": by_ent[1] - by_ent[0], "elbo_loss": hist.last["loss"],
            "ood_val_auroc_entropy": metrics.auroc(ent, pp_ood.predictive_entropy()),
            "ood_val_auroc_mi": metrics.auroc(mi, pp_ood.mutual_information())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="IDX folder with train-* files (e.g. Fashion-MNIST)")
    ap.add_argument("--ood-dir", required=True, help="IDX folder whose first n-val t10k images are the OOD validation")
    ap.add_argument("--arch", choices=("mlp", "cnn"), default="cnn")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--gains", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-val", type=int, default=5000, help="validation (and OOD validation) images")
    ap.add_argument("--n-train", type=int, default=None, help="training images (default: all the others)")
    args = ap.parse_args(argv)
    x, y = read_set(Path(args.data_dir), "train")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))
    va, tr = perm[:args.n_val], perm[args.n_val:][:args.n_train]
    data = (x[tr].float(), y[tr], x[va].float(), y[va])
    x_ood = read_set(Path(args.ood_dir), "t10k")[0][:args.n_val].float()
    for gain in args.gains:
        print(json.dumps(score_gain(gain, data, x_ood, args.arch, args.epochs, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
