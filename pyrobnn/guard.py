"""The divergence guard: a non-finite ELBO or gradient is noticed on the device, without a host read per step.

Each step adds a few device operations (is the loss finite, is every gradient finite; the first bad step and its
loss are kept in device tensors); ``fit`` reads the verdict once per epoch, or every ``sync_every`` steps, before any
state is recorded, checkpointed or returned. On a bad verdict it restores the epoch's starting state, replays the
epoch up to the bad step to name the site, and retries at a lower learning rate (``pyrobnn.trainer``).
"""
from __future__ import annotations

import pyro
import torch
from pyro import poutine

from . import rng
from .lift import BayesianNet


class DivergenceError(ValueError):
    """The ELBO or a gradient stayed non-finite after the allowed retries; the last good state is in place."""


class StepGuard:
    """Device-side record of the first non-finite step since :meth:`reset`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.bad_loss = torch.zeros((), device=self.device)

    def observe(self, step: int, loss: torch.Tensor, grads: list[torch.Tensor]) -> None:
        """Note whether this step's loss and gradients are finite (device operations only): one sum in float64,
        which no finite float32 gradient overflows and any NaN or inf makes non-finite (float32 on Apple's MPS,
        which has no float64)."""
        wide = torch.float32 if loss.device.type == "mps" else torch.float64
        total = loss.detach().to(wide)
        for g in grads:
            total = total + g.sum(dtype=wide)
        ok = torch.isfinite(total)
        first = (self.bad_step < 0) & ~ok
        self.bad_step = torch.where(first, torch.full_like(self.bad_step, step), self.bad_step)
        self.bad_loss = torch.where(first, loss.to(self.bad_loss.dtype), self.bad_loss)

    def verdict(self) -> tuple[int, float] | None:
        """(first bad step, its loss), or None when every step so far was finite. One host read."""
        step, loss = torch.stack([self.bad_step.to(self.bad_loss.dtype), self.bad_loss]).tolist()
        return None if step < 0 else (int(step), loss)


def bad_site(bnn: BayesianNet, guide, xb, yb, size, params: dict[str, torch.Tensor]) -> str:
    """Name what went non-finite: a parameter, its gradient, or a sample site's value/density."""
    for name, t in params.items():
        if not torch.isfinite(t).all():
            return f"{name} holds NaN/inf"
    with rng.preserved(), torch.no_grad(), bnn.frozen_buffers(), pyro.validation_enabled(False):
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
