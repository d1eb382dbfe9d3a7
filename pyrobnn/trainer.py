"""The loop behind :func:`pyrobnn.fit`: one :class:`Trainer` per call, one method per named step.

    set-up (Trainer.__init__)
    for each epoch: train_epoch (steps, divergence guard, retries), record, validate (keep-best), log, checkpoint
    finish

On the default path a step reads nothing back to the host: the loss and its KL / NLL parts accumulate in a device
tensor and the divergence guard (:mod:`pyrobnn.guard`) keeps its verdict on the device; both are read once per epoch,
or every ``sync_every`` steps (progress bar and an earlier guard check), and whenever a signal stops training.
"""
from __future__ import annotations

import contextlib
import copy
import json
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from tqdm.auto import tqdm

from . import rng
from .batches import Batches
from .checkpoint import atomic_save, model_state, read_checkpoint, restore_model_state
from .distributed import sum_gradients, world
from .fastelbo import MeanFieldELBO
from .guard import DivergenceError, StepGuard, bad_site
from .history import History
from .klweight import KLWeight, ScaleLatents, schedule
from .lift import BayesianNet
from .paramstore import unique

BEST_METRICS = {"nll": 1, "ece": 1, "brier": 1, "rmse": 1, "accuracy": -1}  # +1: lower is better
STATE_FORMAT = "pyrobnn-train/1"


@dataclass
class LoopOptions:
    """What the loop needs of fit's options (validated by fit)."""

    epochs: int
    lr: float
    optimizer: str = "adam"
    clip_norm: float = 10.0
    lr_decay: float = 1.0
    val_every: int = 1
    val_samples: int = 100
    checkpoint: Any = None
    checkpoint_every: int = 1
    resume: bool = False
    max_retries: int = 2
    retry_lr_factor: float = 0.5
    keep_best: str | None = None
    callback: Callable | None = None
    progress: bool = True
    validate_model: bool = False
    sync_every: int | None = None
    kl_weight: KLWeight = None


class StopSignal:
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


def trainable(bnn: BayesianNet, guide, elbo, xb, yb, size) -> dict[str, torch.Tensor]:
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


def parts_by_tracing(bnn: BayesianNet, guide, xb, yb, size) -> dict[str, float]:
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


class Trainer:
    """The state of one fit call and its named steps."""

    def __init__(self, bnn: BayesianNet, guide, elbo, batches: Batches, device: torch.device, opts: LoopOptions,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None, carry=None):
        self.bnn, self.guide, self.elbo, self.batches, self.device, self.o = bnn, guide, elbo, batches, device, opts
        self.val, self.carry = val, carry
        self.rank, self.world_size = world()
        with rng.preserved():
            _, self.x1, y1, _ = next(batches.iterate(None))
        self.params = trainable(bnn, guide, elbo, self.x1, y1, batches.size)
        if opts.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(list(self.params.values()), lr=opts.lr, foreach=True)
        else:
            self.opt = ClippedAdam(list(self.params.values()), lr=opts.lr, clip_norm=opts.clip_norm,
                                   lrd=opts.lr_decay)
        self.lr, self.retries = opts.lr, int(opts.max_retries)
        self.history, self.guard = History(), StepGuard(device)
        self.epoch0, self.step0, self.order, self.totals = 1, 0, None, (0.0, 0)
        self.best: dict = {}  # with keep_best: {"epoch", "value", "params"} of the best validated epoch so far
        self.last_batch: tuple | None = None
        self.kl_fn = schedule(opts.kl_weight)
        self.kl_weights: list[float] = []  # this epoch's, for the record
        if opts.resume and Path(opts.checkpoint).is_file():
            self._resume(read_checkpoint(opts.checkpoint, STATE_FORMAT))

    def _resume(self, st: dict) -> None:
        restore_model_state(st, self.bnn, self.guide, self.x1)
        self.opt.load_state_dict(st["optimizer"])
        self.history.records = st["history"]
        self.epoch0, self.step0, self.order, self.lr = st["epoch"], st["step"], st["order"], st["lr"]
        self.totals = tuple(st["totals"])
        rng.set_state(st["rng"])
        self.best = st.get("best") or {}
        self.history.events.append(f"resumed at epoch {self.epoch0} step {self.step0}")

    # --- the loop ------------------------------------------------------------------------------------------------

    def run(self):
        o = self.o
        bar = tqdm(range(self.epoch0, int(o.epochs) + 1), disable=not o.progress, desc="SVI", leave=False)
        self.bar = bar
        with pyro.validation_enabled(o.validate_model), StopSignal() as self.stop, \
                self.carry or contextlib.nullcontext():
            for epoch in bar:
                t0 = time.perf_counter()
                if not self.train_epoch(epoch):  # stopped by a signal: the state is saved
                    break
                rec = self.record(epoch, t0)
                self.validate(epoch, rec)
                self.log(rec)
                if epoch % int(o.checkpoint_every) == 0 or epoch == int(o.epochs):
                    self.save(epoch + 1, 0, None, (0.0, 0))
        return self.finish()

    def train_epoch(self, epoch: int) -> bool:
        """One epoch of steps, guarded: repeated from its starting state at a lower learning rate while a step
        goes non-finite (DivergenceError when the retries are spent). False when a signal stopped it."""
        while True:
            if self.step0 == 0:
                self.order, self.totals = self.batches.new_order(), (0.0, 0)
            start = self.snapshot()
            stopped_at = self.steps(epoch)
            bad = self.guard.verdict()
            if bad is None:
                self.step0 = 0
                if stopped_at is not None:
                    self.interrupted(epoch, stopped_at)
                    return False
                return True
            self.recover(epoch, start, *bad)
            if self.stop.received:  # the restored start of this epoch is what gets saved
                self.interrupted(epoch, self.step0 - 1)
                return False

    def steps(self, epoch: int) -> int | None:
        """The epoch's minibatch steps from ``step0``; the last step taken when a signal arrived, else None."""
        total, n = self.totals
        self.sums = torch.tensor([total, 0.0, 0.0], dtype=torch.float64, device=self.device)
        self.n = n
        self.guard.reset()
        self.kl_weights = []
        k = self.o.sync_every
        for step, xb, yb, weight in self.batches.iterate(self.order, self.step0):
            self.step(epoch, step, xb, yb, weight)
            self.last_batch = (xb, yb)
            if self.stop.received:
                return step
            if k and self.n % k == 0:
                if self.guard.verdict() is not None:
                    return None
                self.bar.set_postfix({"loss": f"{float(self.sums[0]) / self.n:.4g}"})
        return None

    def loss(self, epoch: int, step: int, xb, yb) -> torch.Tensor:
        """The step's loss, ``w * KL + NLL`` with the KL weight of this epoch and step (1: the ELBO)."""
        model, guide = self.bnn.model, self.guide
        if self.kl_fn is not None:
            w = float(self.kl_fn(epoch, step, self.batches.steps_per_epoch))
            self.kl_weights.append(w)
            if isinstance(self.elbo, MeanFieldELBO):
                self.elbo.kl_weight = w
            else:
                model, guide = ScaleLatents(w)(model), ScaleLatents(w)(guide)
        return self.elbo.differentiable_loss(model, guide, xb, yb, data_size=self.batches.size)

    def step(self, epoch: int, step: int, xb, yb, weight: float) -> None:
        """One optimiser step; the loss and its parts are added to ``self.sums`` on the device."""
        loss = self.loss(epoch, step, xb, yb)
        self.opt.zero_grad(set_to_none=True)
        parts = getattr(self.elbo, "last_parts", None)
        values = torch.stack([loss.detach(), *(parts["kl"], parts["nll"])]) if parts else \
            torch.stack([loss.detach(), torch.zeros_like(loss), torch.zeros_like(loss)])
        if self.world_size > 1:  # this process's share of the global step; gradients and values summed
            (loss * weight).backward()
            sum_gradients(self.params.values())
            shared = torch.cat([values * weight, torch.tensor([float(self.stop.received is not None)],
                                                              device=values.device)])
            torch.distributed.all_reduce(shared)
            values = shared[:3]
            if bool(shared[3]) and not self.stop.received:
                self.stop.received = "SIGTERM (another process)"
        else:
            loss.backward()
        self.guard.observe(step, values[0], [p.grad for p in self.params.values() if p.grad is not None])
        self.opt.step()
        self.sums += values.to(torch.float64)
        self.n += 1

    # --- the divergence guard's recovery ----------------------------------------------------------------------

    def snapshot(self) -> dict:
        """What an epoch restarts from: parameters, optimiser, buffers, RNG, position."""
        return {"params": {k: t.detach().clone() for k, t in self.params.items()},
                "opt": copy.deepcopy(self.opt.state_dict()),
                "buffers": {k: b.clone() for k, b in self.bnn.named_buffers()},
                "rng": rng.get_state(), "step0": self.step0, "totals": self.totals}

    def restore(self, start: dict) -> None:
        with torch.no_grad():
            for k, t in self.params.items():
                t.copy_(start["params"][k])
            for k, b in self.bnn.named_buffers():
                b.copy_(start["buffers"][k])
        self.opt.load_state_dict(start["opt"])
        self.step0, self.totals = start["step0"], start["totals"]

    def recover(self, epoch: int, start: dict, bad_step: int, bad_loss: float) -> None:
        """Back to the epoch's start; replay up to the bad step to name the site; lower the learning rate."""
        site = self.diagnose(epoch, start, bad_step)
        self.restore(start)
        msg = (f"ELBO/gradient went non-finite (loss={bad_loss}) at epoch {epoch} step {bad_step}: {site}; "
               f"restored the state from the start of the epoch")
        if self.retries <= 0:
            raise DivergenceError(msg)
        self.retries -= 1
        self.lr *= self.o.retry_lr_factor
        for g in self.opt.param_groups:
            g["lr"] = self.lr
        self.history.events.append(msg + f"; retrying with lr={self.lr:g}")

    def diagnose(self, epoch: int, start: dict, bad_step: int) -> str:
        """Replay the epoch from its start (same batches, same random draws) to the bad step and name what
        went non-finite there; the random stream continues from where the epoch left it."""
        after = rng.get_state()
        self.restore(start)
        rng.set_state(start["rng"])
        site = "no single site identified"
        for step, xb, yb, _ in self.batches.iterate(self.order, start["step0"]):
            loss = self.loss(epoch, step, xb, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if step == bad_step:
                site = bad_site(self.bnn, self.guide, xb, yb, self.batches.size, self.params)
                if torch.isfinite(loss) and site == "no single site identified":
                    site += " (the replay stayed finite)"
                break
            self.opt.step()
        rng.set_state(after)
        return site

    # --- after each epoch -------------------------------------------------------------------------------------

    def record(self, epoch: int, t0: float) -> dict:
        """The epoch's record; the one host read of the epoch's sums."""
        total, kl, nll = self.sums.tolist()
        n = self.n
        rec = {"epoch": epoch, "loss": total / n, "loss_per_datum": total / n / self.batches.size,
               "seconds": time.perf_counter() - t0, "lr": self.opt.param_groups[0]["lr"]}
        if self.kl_weights:
            rec["kl_weight"] = sum(self.kl_weights) / len(self.kl_weights)
        if getattr(self.elbo, "last_parts", None):  # the fast path reports the ELBO's two parts
            rec.update(nll=nll / n, kl=kl / n)
        else:  # Pyro's ELBOs do not: a one-draw estimate on the epoch's last minibatch
            assert self.last_batch is not None
            xb, yb = self.last_batch
            rec.update(parts_by_tracing(self.bnn, self.guide, xb, yb, self.batches.size))
        return rec

    def validate(self, epoch: int, rec: dict) -> None:
        """Score the validation data (eval mode) every ``val_every`` epochs; keep the best posterior so far."""
        from .metrics import classification_report  # late: metrics imports predictive
        from .predictive import predict

        o = self.o
        if self.val is None or not (epoch % int(o.val_every) == 0 or epoch == int(o.epochs)):
            return
        val_x, val_y = self.val
        pp = predict(self.bnn, self.guide, val_x, num_samples=o.val_samples)
        if self.bnn.likelihood.kind == "classification":
            rec.update({f"val_{k}": v for k, v in classification_report(pp.mean_probs(), val_y).items()})
        else:
            rec["val_rmse"] = float(((pp.mean() - val_y) ** 2).mean().sqrt())
        if o.keep_best is not None:
            sign, value = BEST_METRICS[o.keep_best], rec[f"val_{o.keep_best}"]
            if not self.best or sign * value < sign * self.best["value"]:
                self.best = {"epoch": epoch, "value": value,
                             "params": {k: t.detach().clone() for k, t in self.params.items()}}

    def log(self, rec: dict) -> None:
        self.history.append(**rec)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items()
                              if k in ("loss", "nll", "kl", "val_accuracy", "val_ece", "val_rmse")})
        if self.o.callback is not None:
            self.o.callback(rec)

    # --- checkpoints and the end ------------------------------------------------------------------------------

    def save(self, epoch: int, step: int, order, totals) -> None:
        """Write the training state (rank 0, with ``checkpoint=``), atomically."""
        if self.o.checkpoint is None or self.rank != 0:
            return
        payload = {"best": self.best or {}, "format": STATE_FORMAT, "meta": json.dumps({"epoch": epoch, "step": step}),
                   "history": json.dumps(self.history.records), **model_state(self.bnn, self.guide, self.x1),
                   "optimizer": self.opt.state_dict(), "epoch": epoch, "step": step, "order": order,
                   "totals": list(totals), "lr": self.lr, "rng": rng.get_state()}
        atomic_save(self.o.checkpoint, payload)

    def interrupted(self, epoch: int, step: int) -> None:
        self.history.interrupted = True
        self.history.events.append(f"{self.stop.received} at epoch {epoch} after step {step}")
        self.save(epoch, step + 1, self.order, (float(self.sums[0]), self.n) if step + 1 > self.step0 else
                  self.totals)

    def finish(self):
        cb = self.o.callback
        if hasattr(cb, "close"):  # e.g. EpochLog flushes its TensorBoard events
            cb.close()  # type: ignore[union-attr]
        if self.best and not self.history.interrupted:
            with torch.no_grad():
                for k, t in self.params.items():
                    t.copy_(self.best["params"][k])
            self.history.best_epoch = self.best["epoch"]
            self.history.events.append(f"restored epoch {self.best['epoch']} "
                                       f"(best validation {self.o.keep_best} {self.best['value']:.4g})")
        restored = self.history.best_epoch is not None  # keep_best already returns the best validated epoch
        rose = None if self.history.interrupted or restored else self.history.loss_rose()
        if rose:  # a run that went backwards says so, in the history and as a warning
            self.history.events.append(rose)
            warnings.warn("pyrobnn.fit: " + rose, RuntimeWarning, stacklevel=4)
        return self.history
