"""Variational continual learning (Nguyen et al. 2018) on split MNIST: the posterior after one task is the prior
for the next.

Five tasks of two digits each (0/1, 2/3, 4/5, 6/7, 8/9), a shared MLP body with one two-way head per task
(multi-head). As in VCL the first task's posterior means start from a deterministic fit. Task t trains the body
and head t by the mean-field ELBO (4 particles; a lower learning rate after the first task) whose prior on the
body is the posterior after task t - 1
(``priors.from_posterior``), the guide starting from that posterior; head t has the
N(0, 1) prior. After every task each task seen so far is scored with the latest body and its own head. The baseline
fine-tunes the same deterministic net task after task (Adam, the same epochs and batches, no prior). Each finished
task's posterior goes to ``task_<t>.pt`` (with the tensor priors it was trained against), so an interrupted run
resumes from the task it was in.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from torch import nn

import pyrobnn
from pyrobnn import plots, priors
from pyrobnn.checkpoint import load_posterior, read_checkpoint, save_posterior, saved_priors
from pyrobnn.runs import EpochLog, write_json

from . import open_run_dir, stop_if_interrupted, train_plain, write_results
from .mnist import read_set
from .options import device_option, option, out_option, seed_option

TASKS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


@dataclass
class ContinualConfig:
    data_dir: str | None = option(None, "MNIST-format IDX folder with the t10k files (default: $PYROBNN_MNIST_DIR)")
    n_test: int = option(2000, "t10k images held out for testing; the rest train", minimum=10)
    hidden: tuple = option((100, 100), "hidden units of the shared body", minimum=1)
    epochs: int = option(20, "epochs per task", minimum=1)
    batch_size: int = 128
    lr: float = option(1e-3, "learning rate of the deterministic fits (the fine-tuning baseline, VCL's start)")
    init_scale: float = option(0.01, "initial posterior std of every weight")
    prior_scale: float = option(1.0, "std of the Normal prior before the first task (VCL's N(0, 1))")
    mle_init: bool = option(True, "do not start the first task's posterior means from a deterministic fit "
                                  "(VCL does)", flag="--no-mle-init")
    vi_lr: float = option(1e-2, "learning rate of the first task's variational fit")
    vi_lr_later: float = option(3e-3, "learning rate of the later tasks' fits (they start at the previous posterior)")
    num_particles: int = option(4, "ELBO particles (vectorised)", minimum=1)
    num_samples: int = option(100, "posterior draws for scoring", minimum=1)
    seed: int = seed_option()
    device: str = device_option()
    out: str = out_option()
    progress: bool = True


class Body(nn.Module):
    """Images [N, 28, 28] in 0-255 -> features: a ReLU MLP."""

    def __init__(self, hidden):
        super().__init__()
        sizes, layers = [784, *hidden], []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x.flatten(1) / 255.0)


class TaskNet(nn.Module):
    """The net for one task: the shared body and that task's head (parameter names ``body.*`` and ``head.*``)."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x):
        return self.head(self.body(x))


def task_data(x, y, classes):
    keep = (y == classes[0]) | (y == classes[1])
    return x[keep], (y[keep] == classes[1]).long()


def load(cfg: ContinualConfig):
    root = cfg.data_dir or os.environ.get("PYROBNN_MNIST_DIR")
    if not root:
        raise ValueError("continual needs --data-dir (an MNIST IDX folder with t10k-images/labels) or "
                         "$PYROBNN_MNIST_DIR")
    x, y = read_set(Path(root), "t10k")
    if not 0 < cfg.n_test < len(y) - 100:
        raise ValueError(f"n_test must leave training images: between 1 and {len(y) - 101}; got {cfg.n_test}")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))
    te, tr = perm[:cfg.n_test], perm[cfg.n_test:]
    x = x.float()
    return [(task_data(x[tr], y[tr], c), task_data(x[te], y[te], c)) for c in TASKS], root


def fine_tuning(cfg: ContinualConfig, tasks) -> list[list[float]]:
    """The baseline: one deterministic body and heads trained task after task; accuracy[t_trained][t_scored]."""
    torch.manual_seed(cfg.seed)
    body, heads = Body(cfg.hidden), nn.ModuleList(nn.Linear(cfg.hidden[-1], 2) for _ in TASKS)
    g = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for t, ((xt, yt), _) in enumerate(tasks):
        train_plain(TaskNet(body, heads[t]), xt, yt, cfg.epochs, cfg.lr, cfg.batch_size, g)
        with torch.no_grad():
            rows.append([float((TaskNet(body, heads[s])(xs).argmax(1) == ys).float().mean())
                         for s, (_, (xs, ys)) in enumerate(tasks[:t + 1])])
    return rows


def _copy_sites(dst, src, prefix: str) -> None:
    """Copy the guide means and rho of every site starting with ``prefix`` from ``src`` to ``dst``."""
    with torch.no_grad():
        for site in dst.sites:
            if site.startswith(prefix):
                (a, b), (c, d) = dst.offsets[site], src.offsets[site]
                dst.loc_flat[a:b] = src.loc_flat[c:d]
                dst.rho_flat[a:b] = src.rho_flat[c:d]


def _lift(net: TaskNet, previous, prior_scale: float):
    """The lifted task net: N(0, prior_scale) priors (VCL's N(0, 1)), the body's replaced by the previous posterior
    (if any)."""
    layer_priors = {k: p for k, p in (previous or {}).items() if k.startswith("body.")}
    return pyrobnn.lift(net, prior=priors.Normal(0.0, prior_scale), priors=layer_priors,
                        likelihood=pyrobnn.likelihoods.Categorical(2))


def vcl(cfg: ContinualConfig, tasks, run_dir: Path, resume: bool) -> list[list[float]]:
    """Variational continual learning; accuracy[t_trained][t_scored]."""
    torch.manual_seed(cfg.seed + 1)
    body = Body(cfg.hidden)
    heads = [nn.Linear(cfg.hidden[-1], 2) for _ in TASKS]
    if cfg.mle_init:  # VCL's start: the first task's means from a maximum-likelihood fit
        train_plain(TaskNet(body, heads[0]), *tasks[0][0], cfg.epochs, cfg.lr, cfg.batch_size,
                    torch.Generator().manual_seed(cfg.seed + 1))
    guides: list = []  # the guide after each task (head t's posterior lives in guides[t])
    prior_next = None
    rows = json.loads((run_dir / "vcl_accuracy.json").read_text()) if resume and \
        (run_dir / "vcl_accuracy.json").is_file() else []
    for t, ((xt, yt), _) in enumerate(tasks):
        pyro.clear_param_store()
        done = run_dir / f"task_{t}.pt"
        if t < len(rows) and done.is_file():  # finished before the interruption: reload it, priors included
            ck = read_checkpoint(done)
            bnn = _lift(TaskNet(body, heads[t]), saved_priors(ck), cfg.prior_scale)
            guide = pyrobnn.MeanFieldNormal(bnn, init_scale=cfg.init_scale)
            load_posterior(done, bnn, guide, xt[:1])
        else:
            bnn = _lift(TaskNet(body, heads[t]), prior_next, cfg.prior_scale)
            guide = pyrobnn.MeanFieldNormal(bnn, init_scale=cfg.init_scale)
            if guides:  # start where the previous posterior ended
                _copy_sites(guide, guides[-1], "body.")
            hist = pyrobnn.fit(bnn, guide, (xt, yt), epochs=cfg.epochs, lr=cfg.vi_lr if t == 0 else cfg.vi_lr_later,
                               batch_size=cfg.batch_size,
                               num_particles=cfg.num_particles,
                               seed=cfg.seed + t, device=cfg.device, progress=cfg.progress,
                               checkpoint=run_dir / "train_state.pt", resume=resume,
                               callback=EpochLog(run_dir, f"history_task{t}"))
            stop_if_interrupted(hist, run_dir)
            save_posterior(done, bnn, guide, xt[:1], meta={"experiment": "continual", "task": t})
            (run_dir / "train_state.pt").unlink(missing_ok=True)
            rows.append(score(cfg, tasks[:t + 1], body, heads, [*guides, guide]))
            write_json(run_dir / "vcl_accuracy.json", rows)
        guides.append(guide)
        prior_next = priors.from_posterior(bnn, guide)
    return rows


def score(cfg: ContinualConfig, tasks, body, heads, guides) -> list[float]:
    """Accuracy on each task so far: the latest body posterior with that task's head posterior."""
    out = []
    for s, (_, (xs, ys)) in enumerate(tasks):
        bnn = _lift(TaskNet(body, heads[s]), None, cfg.prior_scale)
        guide = pyrobnn.MeanFieldNormal(bnn, init_scale=cfg.init_scale)
        _copy_sites(guide, guides[-1], "body.")
        _copy_sites(guide, guides[s], "head.")
        pp = pyrobnn.predict(bnn, guide, xs, num_samples=cfg.num_samples, seed=cfg.seed)
        out.append(float((pp.mean_probs().argmax(1) == ys.to(pp.outputs.device)).float().mean()))
    return out


def run(cfg: ContinualConfig, resume_dir=None) -> dict:
    tasks, root = load(cfg)
    run_dir = open_run_dir(cfg, cfg.out, "continual", resume_dir)
    baseline = fine_tuning(cfg, tasks)
    ours = vcl(cfg, tasks, run_dir, resume=resume_dir is not None)
    res = {"source": f"IDX t10k files in {root}", "tasks": [list(c) for c in TASKS],
           "n_train": [len(a[1]) for a, _ in tasks], "n_test": [len(b[1]) for _, b in tasks],
           "vcl": ours, "fine_tuning": baseline,
           "vcl_average": sum(ours[-1]) / len(ours[-1]), "fine_tuning_average": sum(baseline[-1]) / len(baseline[-1])}
    fig = plots.continual_accuracy({"VCL (posterior as prior)": ours, "fine-tuning": baseline},
                                   [f"{a}/{b}" for a, b in TASKS], "Split MNIST, multi-head: accuracy as tasks arrive")
    fig.savefig(run_dir / "continual_accuracy.png", dpi=110)
    plots.plt.close(fig)
    write_results(run_dir, res)
    return {**res, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """What ``pyrobnn run continual`` prints when the run is done."""
    names = [f"{a}/{b}" for a, b in res["tasks"]]
    print(f"data: {res['source']}; per task {res['n_train']} train / {res['n_test']} test images")
    print("accuracy on each task after the last (" + ", ".join(names) + ") and the average:")
    for key, label in (("vcl", "VCL"), ("fine_tuning", "fine-tuning")):
        accs = "  ".join(f"{a:.3f}" for a in res[key][-1])
        print(f"  {label:<12}{accs}   average {res[key + '_average']:.3f}")
    print(f"run directory: {res['run_dir']}")
