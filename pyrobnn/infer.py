"""fit: stochastic variational inference for a lifted net and a guide.

Each step computes a true Pyro ELBO (``Trace_ELBO`` or ``TraceMeanField_ELBO``, optionally with
vectorised particles) via ``differentiable_loss`` and takes one step of a single torch optimiser
over every trainable tensor (guide parameters, Pyro param-store entries the guide creates, and
the lifted net's deterministic parameters).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from tqdm.auto import tqdm

from .lift import BayesianNet

ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
OPTIMIZERS = ("adam", "clipped_adam")


def resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} requested but no CUDA GPU is available; use device='cpu'")
    return dev


def make_elbo(loss, num_particles: int = 1, vectorize_particles: bool = True):
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

    def append(self, **rec):
        self.records.append(rec)

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def __len__(self):
        return len(self.records)

    @property
    def last(self) -> dict:
        return self.records[-1] if self.records else {}


class _Batches:
    """Minibatches from (X, y) tensors (fast index slicing) or from a DataLoader."""

    def __init__(self, bnn: BayesianNet, data, batch_size, device, generator):
        self.bnn, self.loader, self.device, self.generator = bnn, None, device, generator
        if isinstance(data, torch.utils.data.DataLoader):
            self.loader = data
            self.size = len(data.dataset)
            if self.size == 0:
                raise ValueError("data: the DataLoader's dataset is empty")
            return
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise TypeError("data must be an (X, y) pair of tensors or a torch DataLoader")
        x, y = bnn.check_inputs(*data)
        self.x, self.y = x.to(device), y.to(device)
        self.size = x.shape[0]
        self.batch_size = self.size if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if self.batch_size > self.size:
            raise ValueError(f"batch_size {self.batch_size} is larger than the data ({self.size} rows)")

    def __iter__(self):
        if self.loader is not None:
            for xb, yb in self.loader:
                xb, yb = self.bnn.check_inputs(xb, yb)
                yield xb.to(self.device), yb.to(self.device)
            return
        if self.batch_size == self.size:
            yield self.x, self.y
            return
        perm = torch.randperm(self.size, generator=self.generator).to(self.device)
        for i in range(0, self.size, self.batch_size):
            idx = perm[i:i + self.batch_size]
            yield self.x[idx], self.y[idx]


def _trainable(bnn: BayesianNet, guide, elbo, xb, yb, size) -> list[torch.Tensor]:
    """Every tensor the optimiser must update; runs the ELBO once to create lazy parameters."""
    with poutine.trace(param_only=True) as tr:
        elbo.differentiable_loss(bnn.model, guide, xb, yb, data_size=size)
    tensors = [site["value"].unconstrained() for site in tr.trace.nodes.values()]
    if isinstance(guide, nn.Module):
        tensors += list(guide.parameters())
    tensors += bnn.point_parameters()
    seen, out = set(), []
    for t in tensors:
        if id(t) not in seen and t.requires_grad:
            seen.add(id(t))
            out.append(t)
    return out


def fit(bnn: BayesianNet, guide, data, *, epochs: int = 100, lr: float = 1e-2, batch_size: int | None = None,
        loss="meanfield", num_particles: int = 1, vectorize_particles: bool = True, optimizer: str = "adam",
        clip_norm: float = 10.0, val_data=None, val_every: int = 1, val_samples: int = 100,
        seed: int | None = None, device=None, progress: bool = True, validate_model: bool = False) -> History:
    """Train ``guide`` (and any deterministic parameters of ``bnn``) by SVI on ``data``.

    data: ``(X, y)`` tensors (minibatched with ``batch_size``) or a DataLoader of (x, y) batches.
    loss: ``"meanfield"`` (TraceMeanField_ELBO, analytic KL where available) or ``"trace"``
    (Trace_ELBO), or an ELBO instance. ``num_particles`` > 1 draws that many weight samples per
    step, vectorised by default. ``val_data`` = (X, y) is scored every ``val_every`` epochs.
    Returns a :class:`History` of per-epoch loss (and validation metrics).
    """
    from .metrics import classification_report  # late: metrics imports predictive
    from .predictive import predict

    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
    dev = resolve_device(device)
    if seed is not None:
        pyro.set_rng_seed(seed)
    bnn.to(dev)
    if isinstance(guide, nn.Module):
        guide.to(dev)
    elbo = make_elbo(loss, num_particles, vectorize_particles)
    batches = _Batches(bnn, data, batch_size, dev, generator=None)
    if val_data is not None:
        val_x, val_y = bnn.check_inputs(*val_data, name="val X")
        val_x, val_y = val_x.to(dev), val_y.to(dev)

    history = History()
    bar = tqdm(range(1, int(epochs) + 1), disable=not progress, desc="SVI", leave=False)
    opt = None
    with pyro.validation_enabled(validate_model):
        for epoch in bar:
            t0, total, n = time.perf_counter(), 0.0, 0
            for xb, yb in batches:
                if opt is None:
                    params = _trainable(bnn, guide, elbo, xb, yb, batches.size)
                    if optimizer == "adam":
                        opt = torch.optim.Adam(params, lr=lr)
                    else:
                        opt = ClippedAdam(params, lr=lr, clip_norm=clip_norm)
                loss_t = elbo.differentiable_loss(bnn.model, guide, xb, yb, data_size=batches.size)
                opt.zero_grad(set_to_none=True)
                loss_t.backward()
                opt.step()
                total += float(loss_t.detach())
                n += 1
            rec = {"epoch": epoch, "loss": total / n, "loss_per_datum": total / n / batches.size,
                   "seconds": time.perf_counter() - t0}
            if val_data is not None and (epoch % int(val_every) == 0 or epoch == int(epochs)):
                pp = predict(bnn, guide, val_x, num_samples=val_samples)
                if bnn.likelihood.kind == "classification":
                    rec.update({f"val_{k}": v for k, v in classification_report(pp.mean_probs(), val_y).items()})
                else:
                    rec["val_rmse"] = float(((pp.mean() - val_y) ** 2).mean().sqrt())
            history.append(**rec)
            bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k in ("loss", "val_accuracy", "val_rmse")})
    return history
