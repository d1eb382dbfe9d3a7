"""fit: stochastic variational inference for a lifted net and a guide.

Each step computes a true Pyro ELBO (``Trace_ELBO`` or ``TraceMeanField_ELBO``, optionally with
vectorised particles) via ``differentiable_loss`` and takes one step of a single torch optimiser
over every trainable tensor (guide parameters, Pyro param-store entries the guide creates, and
the lifted net's deterministic parameters).

Reliability: with ``checkpoint=path`` the full training state (posterior, optimiser, epoch and
position inside it, RNG states, history) is written atomically every ``checkpoint_every`` epochs
and when SIGINT/SIGTERM arrives; ``resume=True`` continues from it and reproduces the
uninterrupted run exactly. A non-finite ELBO or gradient restores the state at the start of the
epoch, names the step and the site that went bad, and retries with a lower learning rate
(``max_retries`` times) before raising :class:`DivergenceError`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from tqdm.auto import tqdm

from . import rng
from .checkpoint import atomic_save, model_state, read_checkpoint, restore_model_state
from .distributed import shard, sum_gradients, sum_values, world
from .errors import Unsupported
from .fastelbo import MeanFieldELBO, supports
from .lift import BayesianNet
from .paramstore import unique
from .recurrent import CarriedState

ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
OPTIMIZERS = ("adam", "clipped_adam")
BEST_METRICS = {"nll": 1, "ece": 1, "brier": 1, "rmse": 1, "accuracy": -1}  # +1: lower is better
STATE_FORMAT = "pyrobnn-train/1"


class DivergenceError(ValueError):
    """Training produced a NaN/inf ELBO or gradient and retries (if any) did not help."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device to train on (CPU when None); a clear error when CUDA is asked for and absent."""
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} requested but no CUDA GPU is available; use device='cpu'")
    return dev


def make_elbo(loss, num_particles: int = 1, vectorize_particles: bool = True):
    """A Pyro ELBO from its name (``"trace"``, ``"meanfield"``); an ELBO instance is returned as is."""
    if not isinstance(loss, str):
        return loss
    if loss not in ELBOS:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(ELBOS)}")
    if int(num_particles) < 1:
        raise ValueError(f"num_particles must be >= 1; got {num_particles}")
    return ELBOS[loss](num_particles=int(num_particles), vectorize_particles=bool(vectorize_particles)
                       and num_particles > 1, max_plate_nesting=1)


@dataclass
class History:
    """Per-epoch records: ``loss`` is the mean minibatch ELBO loss (scaled to the full data)."""

    records: list[dict] = field(default_factory=list)
    interrupted: bool = False
    events: list[str] = field(default_factory=list)
    best_epoch: int | None = None  # with fit(keep_best=...): the epoch whose posterior was restored

    def append(self, **rec) -> None:
        """Add one epoch's record."""
        self.records.append(rec)

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def __len__(self):
        return len(self.records)

    @property
    def last(self) -> dict:
        """The latest epoch's record ({} before the first)."""
        return self.records[-1] if self.records else {}


class _Batches:
    """Minibatches from (X, y) tensors (index slicing, resumable mid-epoch) or from a DataLoader.

    With ``tbptt=k`` (truncated BPTT), X is ``[N, T, ...]`` sequences and y ``[N, T]`` per-step
    targets: each minibatch of sequences is visited chunk by chunk (k steps each, in order, the
    recurrent state carried by ``carry``), y flattened to rows, and the data size is N*T steps,
    so the KL counts once per minibatch and truncated sequence (Fortunato et al. 2017: 1/(B*C)).
    """

    def __init__(self, bnn: BayesianNet, data, batch_size, device, tbptt: int | None = None, carry=None):
        self.bnn, self.loader, self.device, self.tbptt, self.carry = bnn, None, device, tbptt, carry
        self.rank, self.world = world()
        if isinstance(data, torch.utils.data.DataLoader):
            if self.world > 1:
                raise ValueError("under torch.distributed pass (X, y) tensors (each process takes its shard of "
                                 "every minibatch), not a DataLoader")
            self.loader = data
            self.size = len(data.dataset)  # type: ignore[arg-type]  # map-style datasets have a length
            if self.size == 0:
                raise ValueError("data: the DataLoader's dataset is empty")
            return
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise TypeError("data must be an (X, y) pair of tensors or a torch DataLoader")
        if tbptt:
            x, y = self._sequences(*data)
        else:
            x, y = bnn.check_inputs(*data)
        self.x, self.y = x.to(device), y.to(device)
        self.size = self.n_rows = x.shape[0]
        self.batch_size = self.size if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if self.batch_size > self.size:
            raise ValueError(f"batch_size {self.batch_size} is larger than the data ({self.size} rows)")
        if tbptt:
            self.size = x.shape[0] * x.shape[1]  # the likelihood's rows are time steps

    def _sequences(self, x, y):
        x = self.bnn.check_inputs(x)[0]
        y = torch.as_tensor(y)
        if x.dim() < 2 or y.dim() != 2 or tuple(y.shape) != tuple(x.shape[:2]):
            raise ValueError(f"tbptt needs X [sequences, steps, ...] and y [sequences, steps]; got X "
                             f"{tuple(x.shape)} and y {tuple(y.shape)}")
        if self.tbptt is None or not 1 <= self.tbptt <= x.shape[1]:
            raise ValueError(f"tbptt must lie in [1, {x.shape[1]}] (the sequence length); got {self.tbptt}")
        return x, self.bnn.likelihood.check(y.reshape(-1), y.numel(), self.bnn.row_shape(x)).reshape(y.shape)

    def new_order(self):
        if self.loader is not None or self.batch_size == self.n_rows:
            return None
        return torch.randperm(self.n_rows)

    def iterate(self, order, start: int = 0):
        """(step, x, y, weight) from step ``start`` on, in ``order`` (a permutation, or None = as
        stored); ``weight`` is this process's share of the global minibatch (1 in one process)."""
        if self.loader is not None:
            for i, (xb, yb) in enumerate(self.loader):
                if i >= start:
                    xb, yb = self.bnn.check_inputs(xb, yb)
                    yield i, xb.to(self.device), yb.to(self.device), 1.0
            return
        k = self.tbptt or 0
        chunks: range | list[None] = range(0, self.x.shape[1], k) if k else [None]
        i = -1
        for lo in range(0, self.n_rows, self.batch_size):
            idx = torch.arange(lo, min(lo + self.batch_size, self.n_rows)) if order is None \
                else order[lo:lo + self.batch_size]
            mine = shard(idx, self.rank, self.world)
            weight = len(mine) / len(idx)
            if len(mine) == 0:  # fewer rows than processes: a zero-weight stand-in keeps every process in step
                mine = idx[:1]
            mine = mine.to(self.device)
            xb, yb = self.x[mine], self.y[mine]
            for c in chunks:
                i += 1
                if i < start:
                    continue
                if c is None:
                    yield i, xb, yb, weight
                    continue
                if c == 0:
                    self.carry.reset()
                yield i, xb[:, c:c + k], yb[:, c:c + k].reshape(-1), weight


def _trainable(bnn: BayesianNet, guide, elbo, xb, yb, size) -> dict[str, torch.Tensor]:
    """Every tensor the optimiser must update, by name; runs the ELBO once (RNG untouched) so
    that lazily created parameters exist."""
    with rng.preserved(), poutine.trace(param_only=True) as tr, pyro.validation_enabled(False), \
            bnn.frozen_buffers():
        elbo.differentiable_loss(bnn.model, guide, xb, yb, data_size=size)
    store = dict(pyro.get_param_store().named_parameters())  # unconstrained tensors, by name
    named: list[tuple[str, torch.Tensor]] = \
        [(f"guide {n}", p) for n, p in guide.named_parameters()] if isinstance(guide, nn.Module) else []
    point = {id(p) for p in bnn.point_parameters()}
    named += [(f"bnn {n}", p) for n, p in bnn.named_parameters() if id(p) in point]
    named += [(f"param {n}", store[n]) for n in tr.trace.nodes]
    return unique(named)


def _bad_site(bnn: BayesianNet, guide, xb, yb, size, params: dict[str, torch.Tensor]) -> str:
    """Name what went non-finite: a parameter, its gradient, or a sample site's value/density."""
    for name, t in params.items():
        if not torch.isfinite(t).all():
            return f"{name} holds NaN/inf"
    with rng.preserved(), torch.no_grad(), bnn.frozen_buffers():
        gtr = poutine.trace(guide).get_trace(xb, yb, data_size=size)
        mtr = poutine.trace(poutine.replay(bnn.model, trace=gtr)).get_trace(xb, yb, data_size=size)
        for where, tr in (("guide", gtr), ("model", mtr)):
            for name, site in tr.nodes.items():
                if site["type"] != "sample" or name == "data":
                    continue
                value, fn = site["value"], site["fn"]
                assert value is not None and hasattr(fn, "log_prob")
                if not torch.isfinite(value).all():
                    return f"{where} site {name!r} has NaN/inf values"
                if not torch.isfinite(fn.log_prob(value)).all():
                    return f"{where} site {name!r} has a NaN/inf log-density"
    for name, t in params.items():
        if t.grad is not None and not torch.isfinite(t.grad).all():
            return f"gradient of {name} is NaN/inf"
    return "no single site identified"


def _parts_by_tracing(bnn: BayesianNet, guide, xb, yb, size) -> dict[str, float]:
    """One-draw estimate of the ELBO's two parts on a minibatch, for ELBOs that do not report them:
    nll = -(scaled) log p(y | w), kl = log q(w) - log p(w), from one guide trace and the model replayed
    on it (RNG untouched, no gradient)."""
    with rng.preserved(), torch.no_grad(), bnn.frozen_buffers():
        gtr = poutine.trace(guide).get_trace(xb, yb, data_size=size)
        mtr = poutine.trace(poutine.replay(bnn.model, trace=gtr)).get_trace(xb, yb, data_size=size)
        obs = float(mtr.log_prob_sum(lambda name, site: site["is_observed"]))
        log_p = float(mtr.log_prob_sum()) - obs
        log_q = float(gtr.log_prob_sum())
    return {"nll": -obs, "kl": log_q - log_p}


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked after each step (main thread only)."""

    def __init__(self):
        self.received = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _save_state(path, bnn, guide, opt, x1, history, epoch, step, order, totals, lr, best):
    payload = {"best": best or {}, "format": STATE_FORMAT, "meta": json.dumps({"epoch": epoch, "step": step}),
               "history": json.dumps(history.records), **model_state(bnn, guide, x1),
               "optimizer": opt.state_dict(), "epoch": epoch, "step": step, "order": order,
               "totals": list(totals), "lr": lr, "rng": rng.get_state()}
    atomic_save(path, payload)


def fit(bnn: BayesianNet, guide, data, *, epochs: int = 100, lr: float = 1e-2, batch_size: int | None = None,
        loss="meanfield", num_particles: int = 1, vectorize_particles: bool = True, optimizer: str = "adam",
        clip_norm: float = 10.0, val_data=None, val_every: int = 1, val_samples: int = 100,
        seed: int | None = None, device=None, progress: bool = True, validate_model: bool = False,
        checkpoint=None, checkpoint_every: int = 1, resume: bool = False, max_retries: int = 2,
        retry_lr_factor: float = 0.5, lr_decay: float = 1.0, fast: bool = True,
        estimator: str = "reparam", tbptt: int | None = None, callback=None, keep_best: str | None = None) -> History:
    """Train ``guide`` (and any deterministic parameters of ``bnn``) by SVI on ``data``.

    The net trains in train mode (BatchNorm batch statistics, Dropout on) and is left in the mode it
    was in; validation predicts in eval mode.

    data: ``(X, y)`` tensors (minibatched with ``batch_size``) or a DataLoader of (x, y) batches.
    loss: ``"meanfield"`` (TraceMeanField_ELBO, analytic KL where available) or ``"trace"``
    (Trace_ELBO), or an ELBO instance. ``num_particles`` > 1 draws that many weight samples per
    step, vectorised by default (the multi-sample ELBO). ``val_data`` = (X, y) is scored every
    ``val_every`` epochs. ``optimizer="clipped_adam"`` clips gradients to ``clip_norm`` and multiplies
    the learning rate by ``lr_decay`` after every step.
    fast: with ``loss="meanfield"``, a MeanFieldNormal guide and Normal priors, compute the same
    estimator as TraceMeanField_ELBO without Pyro's tracing (:mod:`pyrobnn.fastelbo`).
    estimator: ``"reparam"`` (whole weight sets), ``"local"`` (local reparameterisation) or
    ``"flipout"`` for Linear/Conv nets (:mod:`pyrobnn.estimators`).
    tbptt: truncated backpropagation through time in chunks of this many steps, for a recurrent net
    on ``(X [N, T, ...], y [N, T])`` whose output has one row per (sequence, step) in row-major order
    (e.g. ``logits.reshape(-1, C)``); one weight sample per minibatch and chunk, the recurrent state
    carried across the chunks of a minibatch (detached), the KL weighted once per minibatch and
    chunk. Needs one particle and the plain estimator.
    keep_best: a validation metric (``"nll"``, ``"ece"``, ``"brier"``, ``"accuracy"`` for classifiers,
    ``"rmse"`` for regression): at the end, restore the posterior of the validated epoch that scored
    best on it (early stopping; ``history.best_epoch`` names it). Needs ``val_data``.
    callback: called with each epoch's record (a dict: loss, its nll and kl parts — per-step means on
    the fast path, a one-draw estimate on the epoch's last minibatch with Pyro's ELBOs — and validation
    metrics), e.g. :class:`pyrobnn.runs.EpochLog` writing CSV and TensorBoard scalars.
    Under ``torchrun`` (torch.distributed initialised) each process trains on its shard of every
    minibatch and the result equals one process on the same batches (:mod:`pyrobnn.distributed`);
    pass the same ``seed`` everywhere; rank 0 writes the checkpoint.
    checkpoint / checkpoint_every / resume: see the module docstring. Returns a :class:`History`
    (``history.interrupted`` is True if a signal stopped training; the state is then saved).
    """
    from .metrics import classification_report  # late: metrics imports predictive
    from .predictive import predict

    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
    if lr_decay != 1.0 and optimizer != "clipped_adam":
        raise ValueError("lr_decay needs optimizer='clipped_adam'")
    if not 0 < lr_decay <= 1:
        raise ValueError(f"lr_decay must lie in (0, 1]; got {lr_decay!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path of the training state>")
    if keep_best is not None:
        allowed = ["rmse"] if bnn.likelihood.kind == "regression" else ["accuracy", "brier", "ece", "nll"]
        if val_data is None or keep_best not in allowed:
            raise ValueError(f"keep_best needs val_data and, for this likelihood, one of {allowed}; got {keep_best!r}")
    dev = resolve_device(device)
    rank, world_size = world()
    if world_size > 1 and seed is None:
        raise ValueError("fit under torch.distributed needs seed=... (every process must draw the same weights)")
    if seed is not None:
        pyro.set_rng_seed(seed)
    bnn.to(dev)
    was_training = bnn.training
    bnn.train()  # BatchNorm batch statistics, Dropout on; validation predicts in eval mode
    if isinstance(guide, nn.Module):
        guide.to(dev)
    elbo = make_elbo(loss, num_particles, vectorize_particles)
    if estimator != "reparam" and not (loss == "meanfield" and supports(bnn, guide)):
        raise Unsupported(f"estimator={estimator!r} needs loss='meanfield', a MeanFieldNormal guide and Normal priors")
    if estimator != "reparam" or (
            fast and loss == "meanfield" and (vectorize_particles or num_particles == 1) and supports(bnn, guide)):
        elbo = MeanFieldELBO(num_particles, estimator)  # the same estimator without Pyro's tracing (tested equal)
    carry = None
    if tbptt is not None:
        if num_particles != 1 or estimator != "reparam" or isinstance(data, torch.utils.data.DataLoader):
            raise Unsupported("tbptt needs num_particles=1, estimator='reparam' and (X, y) tensors")
        carry = CarriedState(bnn.net)
    batches = _Batches(bnn, data, batch_size, dev, tbptt, carry)
    if val_data is not None:
        if tbptt is not None:  # sequences scored whole, per-step targets as rows
            val_x, val_y = bnn.check_inputs(val_data[0], name="val X")[0], torch.as_tensor(val_data[1]).reshape(-1)
            val_y = bnn.likelihood.check(val_y, val_y.numel(), bnn.row_shape(val_x))
        else:
            val_x, val_y = bnn.check_inputs(*val_data, name="val X")
        val_x, val_y = val_x.to(dev), val_y.to(dev)

    with rng.preserved():
        _, x1, y1, _ = next(batches.iterate(None))
    params = _trainable(bnn, guide, elbo, x1, y1, batches.size)
    opt_cls = torch.optim.Adam if optimizer == "adam" else ClippedAdam
    extra = {"foreach": True} if optimizer == "adam" else {"clip_norm": clip_norm, "lrd": lr_decay}
    opt = opt_cls(list(params.values()), lr=lr, **extra)
    history, epoch0, step0, order, totals = History(), 1, 0, None, (0.0, 0)
    best: dict = {}  # with keep_best: {"epoch", "value", "params"} of the best validated epoch so far
    if resume and Path(checkpoint).is_file():
        st = read_checkpoint(checkpoint, STATE_FORMAT)
        restore_model_state(st, bnn, guide, x1)
        opt.load_state_dict(st["optimizer"])
        history.records = st["history"]
        epoch0, step0, order, totals, lr = st["epoch"], st["step"], st["order"], tuple(st["totals"]), st["lr"]
        rng.set_state(st["rng"])
        best = st.get("best") or {}
        history.events.append(f"resumed at epoch {epoch0} step {step0}")

    def copy_params():
        return {k: t.detach().clone() for k, t in params.items()}

    def snapshot():
        return copy_params(), copy.deepcopy(opt.state_dict())

    retries = int(max_retries)
    bar = tqdm(range(epoch0, int(epochs) + 1), disable=not progress, desc="SVI", leave=False)
    with pyro.validation_enabled(validate_model), _StopSignal() as stop, carry or contextlib.nullcontext():
        for epoch in bar:
            while True:  # one epoch; repeated (at a lower lr) if the divergence guard fires
                t0 = time.perf_counter()
                if step0 == 0:
                    order, totals = batches.new_order(), (0.0, 0)
                good = snapshot()
                total, n = totals
                kl_total = nll_total = 0.0
                diverged = None
                for step, xb, yb, weight in batches.iterate(order, step0):
                    loss_t = elbo.differentiable_loss(bnn.model, guide, xb, yb, data_size=batches.size)
                    opt.zero_grad(set_to_none=True)
                    value = float(loss_t.detach())
                    parts = getattr(elbo, "last_parts", {})
                    if world_size > 1:  # this process's share of the global step; gradients summed
                        (loss_t * weight).backward()
                        sum_gradients(params.values())
                        value, kl, nll, stopping = sum_values(
                            [value * weight, parts.get("kl", 0.0) * weight, parts.get("nll", 0.0) * weight,
                             float(stop.received is not None)], dev)
                        parts = {"kl": kl, "nll": nll} if parts else {}
                        if stopping and not stop.received:
                            stop.received = "SIGTERM (another process)"
                    elif math.isfinite(value):
                        loss_t.backward()
                    if not math.isfinite(value) or not all(
                            p.grad is None or torch.isfinite(p.grad).all() for p in params.values()):
                        diverged = (step, value, _bad_site(bnn, guide, xb, yb, batches.size, params))
                        break
                    opt.step()
                    total, n = total + value, n + 1
                    if parts:
                        kl_total, nll_total = kl_total + parts["kl"], nll_total + parts["nll"]
                    if stop.received:
                        break
                step0 = 0
                if diverged is None:
                    break
                with torch.no_grad():  # back to the last good state
                    for k, t in params.items():
                        t.copy_(good[0][k])
                    opt.load_state_dict(good[1])
                step, value, site = diverged
                msg = (f"ELBO/gradient went non-finite (loss={value}) at epoch {epoch} step {step}: {site}; "
                       f"restored the state from the start of the epoch")
                if retries <= 0:
                    raise DivergenceError(msg)
                retries -= 1
                lr *= retry_lr_factor
                for g in opt.param_groups:
                    g["lr"] = lr
                history.events.append(msg + f"; retrying with lr={lr:g}")
            if stop.received:
                history.interrupted = True
                history.events.append(f"{stop.received} at epoch {epoch} after step {step}")
                if checkpoint is not None and rank == 0:
                    _save_state(checkpoint, bnn, guide, opt, x1, history, epoch, step + 1, order, (total, n), lr,
                                best)
                break
            rec = {"epoch": epoch, "loss": total / n, "loss_per_datum": total / n / batches.size,
                   "seconds": time.perf_counter() - t0, "lr": opt.param_groups[0]["lr"]}
            if getattr(elbo, "last_parts", None):  # the fast path reports the ELBO's two parts
                rec.update(nll=nll_total / n, kl=kl_total / n)
            else:  # Pyro's ELBOs do not: a one-draw estimate on the epoch's last minibatch
                rec.update(_parts_by_tracing(bnn, guide, xb, yb, batches.size))
            if val_data is not None and (epoch % int(val_every) == 0 or epoch == int(epochs)):
                pp = predict(bnn, guide, val_x, num_samples=val_samples)
                if bnn.likelihood.kind == "classification":
                    rec.update({f"val_{k}": v for k, v in classification_report(pp.mean_probs(), val_y).items()})
                else:
                    rec["val_rmse"] = float(((pp.mean() - val_y) ** 2).mean().sqrt())
                if keep_best is not None:
                    sign, value = BEST_METRICS[keep_best], rec[f"val_{keep_best}"]
                    if not best or sign * value < sign * best["value"]:
                        best = {"epoch": epoch, "value": value, "params": copy_params()}
            history.append(**rec)
            bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items()
                             if k in ("loss", "nll", "kl", "val_accuracy", "val_ece", "val_rmse")})
            if callback is not None:
                callback(rec)
            if checkpoint is not None and rank == 0 and (epoch % int(checkpoint_every) == 0 or epoch == int(epochs)):
                _save_state(checkpoint, bnn, guide, opt, x1, history, epoch + 1, 0, None, (0.0, 0), lr, best)
    if hasattr(callback, "close"):  # e.g. EpochLog flushes its TensorBoard events
        callback.close()
    if best and not history.interrupted:
        with torch.no_grad():
            for k, t in params.items():
                t.copy_(best["params"][k])
        history.best_epoch = best["epoch"]
        history.events.append(f"restored epoch {best['epoch']} (best validation {keep_best} {best['value']:.4g})")
    bnn.train(was_training)
    return history
