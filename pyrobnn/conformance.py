"""Does my net work with pyrobnn? One cell of the conformance matrix, for any net.

:func:`check` lifts a fresh net, builds a guide, trains it by one route, and asks both predictives
for draws. The cell passes when training lowered the loss (the ELBO estimated on the same random
draws before and after, so noise cancels) **and** moved every parameter of the guide, and both
``pyrobnn.predict`` and ``pyro.infer.Predictive(bnn.model, guide=..., parallel=True)`` returned
draws of the right shape. It is *refused* when pyrobnn raises :class:`pyrobnn.errors.Unsupported` (one line
naming the combination), and fails otherwise, with the first line of what went wrong.

Routes: ``"fit"`` (defaults), ``"fit-trace"`` (``loss="trace"``), ``"fit-particles"`` (4 vectorised
particles), ``"svi"`` (a plain ``pyro.infer.SVI`` loop with ``pyro.optim.Adam`` and ``Trace_ELBO``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.optim import Adam  # type: ignore[attr-defined]  # made at import by pyro.optim
from torch import nn

from . import rng
from .errors import Unsupported
from .infer import fit
from .lift import BayesianNet
from .paramstore import unique
from .predictive import predict

ROUTES = ("fit", "fit-trace", "fit-particles", "svi")


@dataclass
class Cell:
    """The outcome of one check: ``status`` is ``"pass"``, ``"refused"`` or ``"fail"``."""

    status: str
    detail: str = ""
    loss_before: float = float("nan")
    loss_after: float = float("nan")


def guide_tensors(bnn: BayesianNet, guide: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor the guide is made of, by name: its module parameters and the Pyro param-store
    entries it reads (creating lazy ones)."""
    with rng.preserved(), poutine.trace(param_only=True) as tr, torch.no_grad(), bnn.frozen_buffers():
        guide(x)
    store = dict(pyro.get_param_store().named_parameters())
    named = list(guide.named_parameters()) if isinstance(guide, nn.Module) else []
    return unique([(f"guide {n}", p) for n, p in named] + [(f"param {n}", store[n]) for n in tr.trace.nodes])


def elbo_loss(bnn: BayesianNet, guide: Any, x: torch.Tensor, y: torch.Tensor, seed: int = 12345,
              particles: int = 8) -> float:
    """The Trace_ELBO loss with ``particles`` vectorised draws from a fixed seed (common random numbers
    for before/after comparisons); RNG state and BatchNorm statistics untouched."""
    with rng.preserved(), bnn.frozen_buffers():
        pyro.set_rng_seed(seed)
        elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
        return float(elbo.loss(bnn.model, guide, x, y))


def train(route: str, bnn: BayesianNet, guide: Any, x: torch.Tensor, y: torch.Tensor, steps: int,
          lr: float) -> None:
    """Train by ``route`` for ``steps`` full-batch steps."""
    if route == "svi":
        svi = SVI(bnn.model, guide, Adam({"lr": lr}), Trace_ELBO(max_plate_nesting=1))
        for _ in range(steps):
            svi.step(x, y)
        return
    kwargs: dict[str, dict[str, Any]] = {"fit": {}, "fit-trace": {"loss": "trace"},
                                         "fit-particles": {"num_particles": 4}}
    if route not in kwargs:
        raise ValueError(f"unknown route {route!r}; choose one of {list(ROUTES)}")
    fit(bnn, guide, (x, y), epochs=steps, lr=lr, progress=False, **kwargs[route])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def check(bnn: BayesianNet, make_guide: Callable[[BayesianNet], Any], route: str, x: torch.Tensor,
          y: torch.Tensor, steps: int = 6, lr: float = 0.02, num_samples: int = 6) -> Cell:
    """One conformance cell for a freshly lifted ``bnn`` (see the module docstring)."""
    cell = Cell("fail")
    try:
        guide = make_guide(bnn)
        cell.loss_before = elbo_loss(bnn, guide, x, y)
        before = {n: t.detach().clone() for n, t in guide_tensors(bnn, guide, x).items()}
        train(route, bnn, guide, x, y, steps, lr)
        cell.loss_after = elbo_loss(bnn, guide, x, y)
        now = guide_tensors(bnn, guide, x)
        stuck = [n for n, t in before.items() if n in now and torch.equal(t, now[n].detach())]
        if not before or stuck:
            cell.detail = f"guide parameters did not move: {stuck or 'the guide has none'}"
            return cell
        if not cell.loss_after < cell.loss_before:
            cell.detail = f"loss did not fall: {cell.loss_before:.4g} -> {cell.loss_after:.4g}"
            return cell
        want = (num_samples, *bnn.check_inputs(x, y)[1].shape)  # the targets as the likelihood sees them
        pp = predict(bnn, guide, x, num_samples=num_samples)
        if tuple(pp.draws.shape) != want:
            cell.detail = f"pyrobnn.predict drew {tuple(pp.draws.shape)}, expected {want}"
            return cell
        was = bnn.training
        bnn.eval()
        try:
            obs = Predictive(bnn.model, guide=guide, num_samples=num_samples, parallel=True)(x)["obs"]
        finally:
            bnn.train(was)
        if tuple(obs.shape) != want:
            cell.detail = f"pyro Predictive drew {tuple(obs.shape)}, expected {want}"
            return cell
        cell.status = "pass"
    except Unsupported as e:  # its line (Pyro appends the trace's shapes to what a model raises)
        cell.status, cell.detail = "refused", (str(e).splitlines() or [""])[0]
    except Exception as e:  # a conformance failure, reported as one line
        cell.detail = _first_line(e)
    return cell
