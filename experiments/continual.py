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

With ``coreset > 0`` (VCL with a random coreset) that many images of every task are held back from its propagating
posterior above; before scoring after task t, a multi-head net (the body and heads 0..t, each image routed to its
task's head) is trained on the union of the coresets so far, its prior and start the propagating posterior, and the
tasks are scored with that. The coreset posterior is for prediction only: it is never the next task's prior. For
a fair comparison the fine-tuned net is also scored after the same replay (a copy of it trained on the coresets).
"""
from __future__ import annotations

import copy
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
KEYS = {"vcl": "VCL", "vcl_coreset": "VCL + coreset", "fine_tuning": "fine-tuning",
        "fine_tuning_coreset": "fine-tuning + replay"}


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
    coreset: int = option(40, "random coreset images per task, replayed before scoring (0: plain VCL only)",
                          minimum=0)
    coreset_epochs: int = option(50, "epochs of the coreset fit before each scoring", minimum=1)
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


class MultiHead(nn.Module):
    """The shared body and several heads; an input row is an image with its task index appended as the last
    feature, and goes to that task's head (parameter names ``body.*`` and ``heads.<s>.*``)."""

    def __init__(self, body: nn.Module, heads):
        super().__init__()
        self.body, self.heads = body, nn.ModuleList(heads)

    def forward(self, x):
        features = self.body(x[..., :-1])
        out = torch.stack([h(features) for h in self.heads], -2)  # [N, T, 2]
        task = x[..., -1].long()[:, None, None].expand(-1, 1, out.shape[-1])
        return out.gather(-2, task).squeeze(-2)


def with_task(x, t: int):
    """Images [N, 28, 28] -> rows [N, 785] for :class:`MultiHead`: flattened, task index appended."""
    return torch.cat([x.flatten(1), torch.full((len(x), 1), float(t))], 1)


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


def coresets(cfg: ContinualConfig, tasks) -> list[torch.Tensor]:
    """The indices of each task's random coreset among its training images (seeded by ``cfg.seed``)."""
    g = torch.Generator().manual_seed(cfg.seed + 7)
    return [torch.randperm(len(yt), generator=g)[:cfg.coreset] for (_, yt), _ in tasks]


def replay_data(tasks, cores, t: int):
    """The union of the coresets of tasks 0..t as :class:`MultiHead` rows and labels."""
    xs = [with_task(tasks[s][0][0][cores[s]], s) for s in range(t + 1)]
    return torch.cat(xs), torch.cat([tasks[s][0][1][cores[s]] for s in range(t + 1)])


def _accuracy(net, tasks) -> list[float]:
    with torch.no_grad():
        return [float((net(with_task(xs, s)).argmax(1) == ys).float().mean()) for s, (_, (xs, ys)) in enumerate(tasks)]


def fine_tuning(cfg: ContinualConfig, tasks, cores) -> tuple[list[list[float]], list[list[float]]]:
    """The baseline: one deterministic body and heads trained task after task on all their images; accuracy
    [t_trained][t_scored], plain and (with a coreset) after a copy of the net is trained on the coresets so far."""
    torch.manual_seed(cfg.seed)
    body, heads = Body(cfg.hidden), nn.ModuleList(nn.Linear(cfg.hidden[-1], 2) for _ in TASKS)
    g, g_replay = torch.Generator().manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed + 50)
    rows, replayed = [], []
    for t, ((xt, yt), _) in enumerate(tasks):
        train_plain(TaskNet(body, heads[t]), xt, yt, cfg.epochs, cfg.lr, cfg.batch_size, g)
        net = MultiHead(body, heads[:t + 1])
        rows.append(_accuracy(net, tasks[:t + 1]))
        if cfg.coreset:
            net = train_plain(copy.deepcopy(net), *replay_data(tasks, cores, t), cfg.coreset_epochs, cfg.lr,
                              cfg.batch_size, g_replay)
            replayed.append(_accuracy(net, tasks[:t + 1]))
    return rows, replayed


def _copy_sites(dst, src, prefix: str, dst_prefix: str | None = None) -> None:
    """Copy the guide means and rho of every site of ``src`` starting with ``prefix`` to ``dst`` (where the site's
    name starts with ``dst_prefix`` instead, if given)."""
    with torch.no_grad():
        for site in src.sites:
            if site.startswith(prefix):
                (a, b), (c, d) = dst.offsets[(dst_prefix or prefix) + site[len(prefix):]], src.offsets[site]
                dst.loc_flat[a:b] = src.loc_flat[c:d]
                dst.rho_flat[a:b] = src.rho_flat[c:d]


def multihead_posterior(cfg: ContinualConfig, body, heads, guides, posteriors):
    """The lifted :class:`MultiHead` of tasks 0..t and a guide that is the propagating posterior (the body's after
    task t, head s's after task s); its priors are those same posteriors (``posteriors[s]``: task s's
    ``from_posterior``)."""
    t = len(guides) - 1
    layer_priors = {k: p for k, p in posteriors[t].items() if k.startswith("body.")}
    for s in range(t + 1):
        layer_priors.update({f"heads.{s}." + k[5:]: p for k, p in posteriors[s].items() if k.startswith("head.")})
    bnn = pyrobnn.lift(MultiHead(body, heads[:t + 1]), prior=priors.Normal(0.0, cfg.prior_scale),
                       priors=layer_priors, likelihood=pyrobnn.likelihoods.Categorical(2), n_features=785)
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=cfg.init_scale)
    _copy_sites(guide, guides[t], "body.")
    for s in range(t + 1):
        _copy_sites(guide, guides[s], "head.", f"heads.{s}.")
    return bnn, guide


def _lift(net: TaskNet, previous, prior_scale: float):
    """The lifted task net: N(0, prior_scale) priors (VCL's N(0, 1)), the body's replaced by the previous posterior
    (if any)."""
    layer_priors = {k: p for k, p in (previous or {}).items() if k.startswith("body.")}
    return pyrobnn.lift(net, prior=priors.Normal(0.0, prior_scale), priors=layer_priors,
                        likelihood=pyrobnn.likelihoods.Categorical(2))


def _rows(run_dir: Path, name: str, resume: bool) -> list:
    path = run_dir / name
    return json.loads(path.read_text()) if resume and path.is_file() else []


def vcl(cfg: ContinualConfig, tasks, cores, run_dir: Path, resume: bool) -> tuple[list[list[float]], list[list[float]]]:
    """Variational continual learning; accuracy[t_trained][t_scored], plain and (with a coreset) after the coreset
    fit."""
    torch.manual_seed(cfg.seed + 1)
    body = Body(cfg.hidden)
    heads = [nn.Linear(cfg.hidden[-1], 2) for _ in TASKS]
    if cfg.mle_init:  # VCL's start: the first task's means from a maximum-likelihood fit
        train_plain(TaskNet(body, heads[0]), *tasks[0][0], cfg.epochs, cfg.lr, cfg.batch_size,
                    torch.Generator().manual_seed(cfg.seed + 1))
    guides: list = []  # the propagating posterior after each task (head t's lives in guides[t])
    posteriors: list = []  # the same as per-parameter Normal priors
    rows, replayed = _rows(run_dir, "vcl_accuracy.json", resume), _rows(run_dir, "vcl_coreset_accuracy.json", resume)
    for t, ((xt, yt), _) in enumerate(tasks):
        pyro.clear_param_store()
        done = run_dir / f"task_{t}.pt"
        if t < len(rows) and done.is_file():  # finished before the interruption: reload it, priors included
            ck = read_checkpoint(done)
            bnn = _lift(TaskNet(body, heads[t]), saved_priors(ck), cfg.prior_scale)
            guide = pyrobnn.MeanFieldNormal(bnn, init_scale=cfg.init_scale)
            load_posterior(done, bnn, guide, xt[:1])
        else:
            keep = torch.ones(len(yt), dtype=torch.bool)
            keep[cores[t]] = False  # the coreset is not in the propagating posterior
            bnn = _lift(TaskNet(body, heads[t]), posteriors[-1] if posteriors else None, cfg.prior_scale)
            guide = pyrobnn.MeanFieldNormal(bnn, init_scale=cfg.init_scale)
            if guides:  # start where the previous posterior ended
                _copy_sites(guide, guides[-1], "body.")
            hist = pyrobnn.fit(bnn, guide, (xt[keep], yt[keep]), epochs=cfg.epochs,
                               lr=cfg.vi_lr if t == 0 else cfg.vi_lr_later, batch_size=cfg.batch_size,
                               num_particles=cfg.num_particles, seed=cfg.seed + t, device=cfg.device,
                               progress=cfg.progress, checkpoint=run_dir / "train_state.pt", resume=resume,
                               callback=EpochLog(run_dir, f"history_task{t}"))
            stop_if_interrupted(hist, run_dir)
            save_posterior(done, bnn, guide, xt[:1], meta={"experiment": "continual", "task": t})
            (run_dir / "train_state.pt").unlink(missing_ok=True)
        guides.append(guide)
        posteriors.append(priors.from_posterior(bnn, guide))
        if t == len(rows):
            rows.append(score(cfg, tasks[:t + 1], *multihead_posterior(cfg, body, heads, guides, posteriors)))
            write_json(run_dir / "vcl_accuracy.json", rows)
        if cfg.coreset and t == len(replayed):
            replayed.append(coreset_score(cfg, tasks, cores, run_dir, body, heads, guides, posteriors))
            write_json(run_dir / "vcl_coreset_accuracy.json", replayed)
    return rows, replayed


def coreset_score(cfg: ContinualConfig, tasks, cores, run_dir: Path, body, heads, guides, posteriors) -> list[float]:
    """Train the multi-head posterior on the coresets of tasks 0..t (prior and start: the propagating posterior)
    and score tasks 0..t with it."""
    t = len(guides) - 1
    pyro.clear_param_store()
    bnn, guide = multihead_posterior(cfg, body, heads, guides, posteriors)
    xc, yc = replay_data(tasks, cores, t)
    hist = pyrobnn.fit(bnn, guide, (xc, yc), epochs=cfg.coreset_epochs, lr=cfg.vi_lr_later,
                       batch_size=min(cfg.batch_size, len(yc)), num_particles=cfg.num_particles, seed=cfg.seed + 50 + t,
                       device=cfg.device, progress=False, callback=EpochLog(run_dir, f"history_coreset{t}"))
    stop_if_interrupted(hist, run_dir)
    return score(cfg, tasks[:t + 1], bnn, guide)


def score(cfg: ContinualConfig, tasks, bnn, guide) -> list[float]:
    """Accuracy on each task of a lifted :class:`MultiHead` under its posterior (``num_samples`` draws)."""
    out = []
    for s, (_, (xs, ys)) in enumerate(tasks):
        pp = pyrobnn.predict(bnn, guide, with_task(xs, s), num_samples=cfg.num_samples, seed=cfg.seed)
        out.append(float((pp.mean_probs().argmax(1) == ys.to(pp.outputs.device)).float().mean()))
    return out


def run(cfg: ContinualConfig, resume_dir=None) -> dict:
    tasks, root = load(cfg)
    run_dir = open_run_dir(cfg, cfg.out, "continual", resume_dir)
    cores = coresets(cfg, tasks)
    baseline, baseline_replayed = fine_tuning(cfg, tasks, cores)
    ours, ours_replayed = vcl(cfg, tasks, cores, run_dir, resume=resume_dir is not None)
    res = {"source": f"IDX t10k files in {root}", "tasks": [list(c) for c in TASKS],
           "n_train": [len(a[1]) for a, _ in tasks], "n_test": [len(b[1]) for _, b in tasks],
           "coreset_per_task": cfg.coreset, "vcl": ours, "fine_tuning": baseline}
    curves = {"VCL (posterior as prior)": ours, "fine-tuning": baseline}
    if cfg.coreset:
        res.update(vcl_coreset=ours_replayed, fine_tuning_coreset=baseline_replayed)
        curves.update({"VCL + coreset": ours_replayed, "fine-tuning + coreset replay": baseline_replayed})
    res.update({k + "_average": sum(res[k][-1]) / len(res[k][-1]) for k in KEYS if k in res})
    fig = plots.continual_accuracy(curves, [f"{a}/{b}" for a, b in TASKS],
                                   "Split MNIST, multi-head: accuracy as tasks arrive")
    fig.savefig(run_dir / "continual_accuracy.png", dpi=110)
    plots.plt.close(fig)
    write_results(run_dir, res)
    return {**res, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """What ``pyrobnn run continual`` prints when the run is done."""
    names = [f"{a}/{b}" for a, b in res["tasks"]]
    print(f"data: {res['source']}; per task {res['n_train']} train / {res['n_test']} test images")
    print("accuracy on each task after the last (" + ", ".join(names) + ") and the average:")
    for key, label in KEYS.items():
        if key in res:
            accs = "  ".join(f"{a:.3f}" for a in res[key][-1])
            print(f"  {label:<24}{accs}   average {res[key + '_average']:.3f}")
    print(f"run directory: {res['run_dir']}")
