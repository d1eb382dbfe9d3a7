"""Seed 002: a Bayes-by-Backprop MLP on MNIST-format images that knows when it does not know.

Reports accuracy, NLL, Brier and ECE for the Bayesian net and the same net trained
deterministically, the accuracy-vs-referral curves (ranked by predictive entropy and by mutual
information, with oracle and random baselines), a gallery of the most uncertain test images with
their posterior class histograms, reliability diagrams, and pruning by signal-to-noise ratio.
Data: IDX files from a folder (``t10k-images-idx3-ubyte[.gz]`` and labels), split with a fixed seed;
without a folder, scikit-learn's bundled 8x8 digits (the embedded default).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from torch.nn.functional import cross_entropy

import pyrobnn
from pyrobnn import metrics, plots, priors
from pyrobnn.data import read_idx
from pyrobnn.models.mnist import lenet, mlp
from pyrobnn.runs import EpochLog, write_json

from . import conformal_eval, open_run_dir, print_model_table, stop_if_interrupted, write_results
from .options import device_option, option, out_option, seed_option

FRACTIONS = [i / 100 for i in range(0, 55, 5)]
PRUNE = [0.0, 0.5, 0.75, 0.95, 0.98]


@dataclass
class MNISTConfig:
    # an IDX folder: t10k-* (and train-* if present), e.g. Fashion-MNIST's
    data_dir: str | None = option(None, "folder with the t10k IDX files (default: $PYROBNN_MNIST_DIR, else "
                                        "scikit-learn's 8x8 digits)")
    n_train: int | None = option(None, "training images (default: all train-*, or 8000 of t10k)", minimum=1)
    n_test: int | None = option(None, "test images (default: all of t10k, or 2000)", minimum=1)
    ood_dir: str | None = option(None, "IDX folder whose t10k images are scored as out-of-distribution")
    ood_val_size: int = option(0, "the first N out-of-distribution images are scored against the validation images "
                                  "and reported apart; the test images are scored against the rest")
    arch: str = option("mlp", "network (cnn: LeNet-style)", choices=("mlp", "cnn"))
    hidden: tuple = (100,)
    epochs: int = option(100, "SVI epochs", minimum=1)
    det_epochs: int = option(10, "baseline epochs", minimum=1)
    batch_size: int = 128
    lr: float = option(3e-3, "learning rate")
    final_lr: float | None = option(None, "decay the learning rate geometrically to this by the last step "
                                          "(default: constant)")
    val_size: int = option(0, "training images set aside to validate on after every epoch")
    keep_best: str | None = option(None, "with --val-size: keep the epoch that scored best on this validation "
                                         "metric", choices=("nll", "ece", "brier", "accuracy"))
    val_samples: int = 30
    temperature_scale: bool = option(False, "with --val-size: divide every draw's logits by the temperature that "
                                            "fits the validation images best (post-hoc calibration)")
    init_scale: float = 1e-3
    # larger gains score a better validation NLL but detect out-of-distribution images worse
    # (docs/results.md: experiments/prior_gain_sweep.py)
    prior_gain: float = option(1.0, "priors N(0, gain / sqrt(fan_in)) on every layer")
    num_samples: int = option(100, "posterior draws", minimum=1)
    conformal: float = option(0.0, "split-conformal level, e.g. 0.9: prediction sets calibrated on --conformal-size "
                                   "training images kept out of training (0 = off)", minimum=0, below=1)
    conformal_size: int = option(1000, "training images reserved for --conformal", minimum=1)
    conformal_score: str = option("aps", "conformal score", choices=("aps", "lac"))
    seed: int = seed_option()
    device: str = device_option()
    out: str = out_option()
    progress: bool = True


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_set(folder: Path, part: str):
    """(images [N, 28, 28], labels [N]) of ``part`` ("t10k" or "train") in an IDX folder."""
    img, lab = _find(folder, f"{part}-images-idx3-ubyte"), _find(folder, f"{part}-labels-idx1-ubyte")
    if img is None or lab is None:
        raise FileNotFoundError(f"no {part}-images-idx3-ubyte[.gz] / {part}-labels-idx1-ubyte[.gz] in {folder}")
    x, y = read_idx(img), read_idx(lab).long()
    if x.dim() != 3 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{img.name}: images {tuple(x.shape)} and labels {tuple(y.shape)} do not match")
    return x, y


def digits_as_mnist(seed: int, side: int = 8):
    """The embedded default: scikit-learn's bundled 8x8 digits (1797 images, values 0-16) scaled to
    0-255, kept at 8x8 for the MLP (whose fan-in priors assume distinct pixels) or resized to 28x28
    for the LeNet CNN; 360 test images."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    if side != 8:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    x = x[:, 0]
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    te, tr = perm[:360], perm[360:]
    return x[tr], y[tr], x[te], y[te]


def load_split(cfg: MNISTConfig):
    root = cfg.data_dir or os.environ.get("PYROBNN_MNIST_DIR")
    if not root:
        return digits_as_mnist(cfg.seed, 8 if cfg.arch == "mlp" else 28)
    folder = Path(root)
    g = torch.Generator().manual_seed(cfg.seed)
    x_te, y_te = read_set(folder, "t10k")
    if _find(folder, "train-images-idx3-ubyte") is not None:
        x_tr, y_tr = read_set(folder, "train")
        tr = torch.randperm(len(y_tr), generator=g)[:cfg.n_train]
        te = torch.randperm(len(y_te), generator=g)[:cfg.n_test]
        return x_tr[tr].float(), y_tr[tr], x_te[te].float(), y_te[te]
    n_train, n_test = cfg.n_train or 8000, cfg.n_test or 2000
    if n_train + n_test > len(y_te):
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {len(y_te)} images")
    perm = torch.randperm(len(y_te), generator=g)
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    return x_te[tr].float(), y_te[tr], x_te[te].float(), y_te[te]


def run(cfg: MNISTConfig, resume_dir=None) -> dict:
    x_tr, y_tr, x_te, y_te = load_split(cfg)
    if cfg.final_lr is not None and not 0 < cfg.final_lr <= cfg.lr:
        raise ValueError(f"final_lr must lie in (0, lr={cfg.lr}]; got {cfg.final_lr}")
    if (cfg.keep_best or cfg.temperature_scale or cfg.ood_val_size) and not cfg.val_size:
        raise ValueError("keep_best, temperature_scale and ood_val_size need a validation set: set val_size "
                         "(--val-size)")
    if not 0 <= cfg.val_size < len(y_tr):
        raise ValueError(f"val_size must lie in [0, {len(y_tr)}) (the training images); got {cfg.val_size}")
    val = None
    if cfg.val_size:  # the first val_size images of a fixed shuffle of the training set
        perm = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(cfg.seed + 1))
        x_tr, y_tr, val = x_tr[perm[cfg.val_size:]], y_tr[perm[cfg.val_size:]], (x_tr[perm[:cfg.val_size]],
                                                                                  y_tr[perm[:cfg.val_size]])
    cal = None
    if cfg.conformal:  # after the validation images: a random conformal_size of the remaining training images
        keep, c = conformal_eval.reserve(len(y_tr), cfg.conformal, size=cfg.conformal_size, seed=cfg.seed)
        x_tr, y_tr, cal = x_tr[keep], y_tr[keep], (x_tr[c], y_tr[c])
    run_dir = open_run_dir(cfg, cfg.out, "mnist", resume_dir)
    if cfg.arch not in ("mlp", "cnn"):
        raise ValueError(f"unknown arch {cfg.arch!r}; choose mlp or cnn")
    torch.manual_seed(cfg.seed)
    net = mlp(cfg.hidden, side=x_tr.shape[-1]) if cfg.arch == "mlp" else lenet()
    bayes_net = copy.deepcopy(net)

    # deterministic baseline
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.det_epochs):
        perm = torch.randperm(len(y_tr), generator=g)
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = cross_entropy(net(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        det_probs = torch.softmax(net(x_te), -1)

    # Bayes by Backprop: mean-field Normal (softplus sigma), closed-form KL, fan-in scaled priors
    pyro.clear_param_store()
    bnn = pyrobnn.lift(bayes_net, priors=priors.fan_in_normal(bayes_net, cfg.prior_gain),
                       likelihood=pyrobnn.likelihoods.Categorical(10))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=cfg.init_scale)
    decay = {}
    if cfg.final_lr is not None:  # ClippedAdam with a per-step decay; clipping off
        steps = cfg.epochs * -(-len(y_tr) // cfg.batch_size)
        decay = {"optimizer": "clipped_adam", "lr_decay": (cfg.final_lr / cfg.lr) ** (1 / steps), "clip_norm": 1e9}
    hist = pyrobnn.fit(bnn, guide, (x_tr, y_tr), epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                       val_data=val, val_samples=cfg.val_samples, keep_best=cfg.keep_best, **decay,
                       seed=cfg.seed, device=cfg.device, progress=cfg.progress,
                       checkpoint=run_dir / "train_state.pt", resume=resume_dir is not None,
                       callback=EpochLog(run_dir))
    stop_if_interrupted(hist, run_dir)
    pv = None  # the validation predictive, when the temperature or the OOD validation needs it
    if val is not None and (cfg.temperature_scale or (cfg.ood_dir and cfg.ood_val_size)):
        pv = pyrobnn.predict(bnn, guide, val[0], num_samples=cfg.num_samples, seed=cfg.seed)
    temperature = pyrobnn.fit_temperature(pv, val[1]) if cfg.temperature_scale and pv is not None else 1.0

    def posterior_predictive(x):
        return pyrobnn.predict(bnn, guide, x, num_samples=cfg.num_samples, seed=cfg.seed).with_temperature(temperature)

    pp = posterior_predictive(x_te)
    probs = pp.mean_probs()

    root = cfg.data_dir or os.environ.get("PYROBNN_MNIST_DIR")
    res = {"source": f"IDX files in {root}" if root else "scikit-learn's 8x8 digits (embedded default)",
           "deterministic": metrics.classification_report(det_probs, y_te),
           "bayesian": metrics.classification_report(probs, y_te), "n_train": len(y_tr), "n_test": len(y_te),
           "n_val": cfg.val_size, "best_epoch": hist.best_epoch, "temperature": temperature}
    if temperature != 1.0:
        res["bayesian_before_temperature"] = metrics.classification_report(pp.with_temperature(1 / temperature)
                                                                           .mean_probs(), y_te)
    entropy, mi = pp.predictive_entropy(), pp.mutual_information()
    curves = {
        "predictive entropy": metrics.referral_curve(probs, y_te, entropy, FRACTIONS),
        "mutual information": metrics.referral_curve(probs, y_te, mi, FRACTIONS),
        "deterministic softmax entropy": metrics.referral_curve(
            det_probs, y_te, -(det_probs * det_probs.clamp_min(1e-30).log()).sum(-1), FRACTIONS),
        "oracle": metrics.oracle_referral_curve(probs, y_te, FRACTIONS),
        "random": [res["bayesian"]["accuracy"]] * len(FRACTIONS),
    }
    res["referral"] = {"fractions": FRACTIONS, **curves}
    if cal is not None:
        res["conformal"] = conformal_eval.classification(posterior_predictive(cal[0]), cal[1], pp, y_te, cfg.conformal,
                                                         cfg.conformal_score, seed=cfg.seed)
        kind = "MLP" if cfg.arch == "mlp" else "CNN"
        conformal_eval.classification_figure(run_dir, res["conformal"],
                                             f"Bayesian {kind}: conformal prediction sets ({cfg.conformal_score})")
    i5 = FRACTIONS.index(0.05)
    res["gain_at_5pct_entropy"] = curves["predictive entropy"][i5] - curves["predictive entropy"][0]
    res["gain_at_5pct_mi"] = curves["mutual information"][i5] - curves["mutual information"][0]
    with torch.no_grad():
        res["pruning"] = [{"fraction": f, "accuracy": metrics.accuracy(
            torch.softmax(bnn.forward(x_te, guide.pruned_means(f)), -1), y_te)} for f in PRUNE]

    if cfg.ood_dir:
        x_all = read_set(Path(cfg.ood_dir), "t10k")[0].float()
        if not 0 <= cfg.ood_val_size < len(x_all):
            raise ValueError(f"ood_val_size must lie in [0, {len(x_all)}); got {cfg.ood_val_size}")
        x_ood = x_all[cfg.ood_val_size:cfg.ood_val_size + len(y_te)]
        pp_ood = posterior_predictive(x_ood)
        scores = {"predictive entropy": (entropy, pp_ood.predictive_entropy()),
                  "mutual information": (mi, pp_ood.mutual_information())}
        res["ood_auroc"] = {k: metrics.auroc(a, b) for k, (a, b) in scores.items()}
        res["n_ood"] = len(x_ood)
        if pv is not None and cfg.ood_val_size:  # validation images vs the held-apart OOD images
            pvt, po = pv.with_temperature(temperature), posterior_predictive(x_all[:cfg.ood_val_size])
            res["ood_auroc_validation"] = {
                "predictive entropy": metrics.auroc(pvt.predictive_entropy(), po.predictive_entropy()),
                "mutual information": metrics.auroc(pvt.mutual_information(), po.mutual_information())}
        in_name = Path(cfg.data_dir or os.environ.get("PYROBNN_MNIST_DIR", "")).name or "test"
        fig = plots.score_histograms(scores, f"{in_name} test (in distribution)",
                                     f"{Path(cfg.ood_dir).name} (out of distribution)")
        fig.savefig(run_dir / "ood_scores.png", dpi=100)

    names = [str(c) for c in range(10)]
    kind = "MLP" if cfg.arch == "mlp" else "CNN"
    tempered = f", temperature {temperature:.2f}" if temperature != 1.0 else ""
    top = torch.argsort(entropy, descending=True)[:8]
    figs = {
        "referral.png": plots.referral_curves(FRACTIONS, curves, "Accuracy vs fraction referred"),
        "reliability_bayesian.png": plots.reliability_diagram(
            metrics.reliability_bins(probs, y_te), f"Bayesian {kind}{tempered} (ECE {res['bayesian']['ece']:.3f})"),
        "reliability_deterministic.png": plots.reliability_diagram(
            metrics.reliability_bins(det_probs, y_te), f"Deterministic {kind} (ECE {res['deterministic']['ece']:.3f})"),
        "uncertain_gallery.png": plots.uncertain_gallery(x_te[top], pp.class_frequencies()[top], y_te[top], names,
                                                         "Most uncertain test images (predictive entropy)"),
        "pruning.png": plots.pruning_curve(PRUNE, [p["accuracy"] for p in res["pruning"]],
                                           "Pruning by signal-to-noise ratio"),
    }
    for name, fig in figs.items():
        fig.savefig(run_dir / name, dpi=100)
    plots.plt.close("all")
    write_json(run_dir / "history.json", hist.records)
    write_results(run_dir, res)
    return {**res, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """What ``pyrobnn run mnist`` prints when the run is done."""
    print(f"data: {res['source']}  ({res['n_train']} train / {res['n_val']} validation / {res['n_test']} test images)")
    if res["best_epoch"] is not None:
        print(f"kept epoch {res['best_epoch']} (best on the validation images)")
    if res["temperature"] != 1.0:
        print(f"logits divided by the temperature {res['temperature']:.3f} fitted on the validation images; "
              f"Bayesian ECE before: {res['bayesian_before_temperature']['ece']:.3f}")
    print_model_table(res)
    print(f"referring the 5% most uncertain: +{res['gain_at_5pct_entropy']:.3f} accuracy (entropy), "
          f"+{res['gain_at_5pct_mi']:.3f} (mutual information)")
    print("pruning: " + ", ".join(f"{p['fraction']:.0%} -> {p['accuracy']:.3f}" for p in res["pruning"]))
    if "ood_auroc" in res:
        print("out-of-distribution AUROC: " + ", ".join(f"{k} {v:.3f}" for k, v in res["ood_auroc"].items()))
    if "conformal" in res:
        print(conformal_eval.summary_line(res["conformal"]))
    if "ood_auroc_validation" in res:
        print("  on the validation images: " + ", ".join(
            f"{k} {v:.3f}" for k, v in res["ood_auroc_validation"].items()))
    print(f"run directory: {res['run_dir']}")
