"""The log joint of a lifted net as one flat function, for samplers (NUTS/HMC) and MAP fits.

``Potential(bnn, x, y)`` computes U(w) = -(log prior(w) + log p(y | x, w)) over the full data set, with every
sample site of the net laid end to end in one vector ``w`` (``[D]``, or ``[C, D]`` for C independent copies,
e.g. chains, whose potentials add up). It never goes through Pyro's tracing: the value and its gradient
are traced once into one graph of tensor operations (``make_fx`` of ``grad_and_value``), which then runs
without the net's module calls or the re-parametrisation ``functional_call`` does on every call, and, where
TorchScript can take it, in TorchScript's interpreter (a forward that needs concrete values, such as packed
sequence lengths, runs call by call instead: ``traced`` is False). The test suite checks the value and the gradient
against the log joint of Pyro's trace of ``bnn.model``.

The net runs in eval mode (dropout off, BatchNorm on its running statistics), parameters kept
deterministic stay at their current values, and the data are part of the traced graph.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch.func import grad_and_value
from torch.fx.experimental.proxy_tensor import make_fx

from .lift import BayesianNet

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class FlatLayout:
    """Where each sample site of ``bnn`` lives in the flat vector: ``split``/``join`` between the two."""

    def __init__(self, bnn: BayesianNet):
        self.sites = list(bnn.site_names)
        self.shapes = {k: torch.Size(bnn.shapes[k]) for k in self.sites}
        self.sizes = [self.shapes[k].numel() for k in self.sites]
        self.dim = sum(self.sizes)

    def split(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[*lead, D]`` to ``{site: [*lead, *shape]}``."""
        lead = w.shape[:-1]
        return {k: t.reshape(lead + self.shapes[k]) for k, t in zip(self.sites, w.split(self.sizes, -1))}

    def join(self, values: dict[str, torch.Tensor], lead: tuple[int, ...] = ()) -> torch.Tensor:
        """``{site: [*lead, *shape]}`` to ``[*lead, D]``."""
        return torch.cat([values[k].reshape(*lead, n) for k, n in zip(self.sites, self.sizes)], -1)


def _normal_terms(bnn: BayesianNet, layout: FlatLayout, like: torch.Tensor):
    """Flat ``(loc, 1/scale, log normaliser)`` of the Normal priors, zero where a site has another prior."""
    loc, inv, const = (torch.zeros(layout.dim, dtype=like.dtype, device=like.device) for _ in range(3))
    start = 0
    for k, n in zip(layout.sites, layout.sizes):
        normal = bnn.normal_prior(k)
        if normal is not None:  # a learned prior sigma is taken at its current value
            p_loc, p_scale = (torch.as_tensor(v, dtype=like.dtype, device=like.device).detach() for v in normal)
            scale = p_scale.expand(layout.shapes[k])
            loc[start:start + n] = p_loc.expand(layout.shapes[k]).reshape(-1)
            inv[start:start + n] = 1 / scale.reshape(-1)
            const[start:start + n] = -scale.reshape(-1).log() - _HALF_LOG_2PI
        start += n
    return loc, inv, const.sum()


def log_joint(bnn: BayesianNet, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              normal_terms: tuple | None = None) -> torch.Tensor:
    """log prior + full-data log-likelihood at flat weights ``w`` (``[D]`` or ``[C, D]``), ``[]`` or ``[C]``.
    Plain autograd-able tensor code (what :class:`Potential` traces); Normal priors in closed form over the
    whole vector at once."""
    layout = FlatLayout(bnn)
    lead = w.shape[:-1]
    values = layout.split(w)
    loc, inv, const = normal_terms if normal_terms is not None else _normal_terms(bnn, layout, w)
    z = (w - loc) * inv
    total = const - 0.5 * (z * z).sum(-1)
    for k, p in bnn.priors.items():
        if bnn.normal_prior(k) is None:
            total = total + p.distribution(bnn.shapes[k], w.device, w.dtype).log_prob(values[k])
    out = bnn.forward(x, values)
    latents = {k: v for k, v in values.items() if k not in bnn.net_sites}
    log_lik = bnn.likelihood.distribution(out, latents).log_prob(y)
    return total + log_lik.reshape(*lead, -1).sum(-1)


class _ValueWithGrad(torch.autograd.Function):
    """A scalar whose gradient was computed with its value (the traced graph returns both)."""

    @staticmethod
    def forward(ctx, w, fn):
        grad, value = fn(w)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


class Potential:
    """U(w) = -log joint of ``bnn`` on the full data ``(x, y)``, traced for ``[C, D]`` weights (or ``[D]``
    when ``chains`` is None). ``value_and_grad(w)`` returns ``(grad, U)``; ``potential_fn`` is the form Pyro's
    HMC/NUTS take (a dict ``{"w": ...}`` to a differentiable scalar, the sum over copies)."""

    def __init__(self, bnn: BayesianNet, x: torch.Tensor, y: torch.Tensor, chains: int | None = None,
                 script: bool = True):
        self.bnn, self.layout, self.chains = bnn, FlatLayout(bnn), chains
        self.traced = True  # False: the net's forward could not be traced into one graph and runs call by call
        self.x, self.y = x, y
        example = torch.zeros((chains, self.layout.dim) if chains else (self.layout.dim,), device=x.device,
                              dtype=next(iter(bnn.parameters())).dtype)
        was = bnn.training
        try:
            bnn.eval()
            with bnn.frozen_buffers(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._fn = self._trace(example, script)
        finally:
            bnn.train(was)

    def _trace(self, example: torch.Tensor, script: bool):
        terms = _normal_terms(self.bnn, self.layout, example)

        def energy(w):
            return -log_joint(self.bnn, w, self.x, self.y, terms).sum()

        validate = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)  # no value checks inside a trace
        try:
            graph = make_fx(grad_and_value(energy))(example)
        except Exception:  # noqa: BLE001 - a forward that needs concrete values (packed sequence lengths, .item())
            self.traced = False
            return self._eager(energy)
        finally:
            torch.distributions.Distribution.set_default_validate_args(validate)
        if not script:
            return graph
        try:  # TorchScript runs the same graph with less per-operation overhead
            return torch.jit.trace(graph, (example,), check_trace=False)
        except Exception:  # noqa: BLE001 - an op TorchScript cannot take: the traced graph serves
            return graph

    def _eager(self, energy):
        """``(dU/dw, U)`` by plain autograd, call by call (eval mode, buffers kept), for nets ``make_fx`` cannot
        trace."""
        def run(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            was = self.bnn.training
            try:
                self.bnn.eval()
                with self.bnn.frozen_buffers(), torch.enable_grad():
                    w = w.detach().requires_grad_()
                    u = energy(w)
                    return torch.autograd.grad(u, w)[0], u.detach()
            finally:
                self.bnn.train(was)
        return run

    def value_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dU/dw, U)`` at ``w`` (no autograd graph is built)."""
        with torch.no_grad():
            return self._fn(w.detach())

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """U(w), differentiable with respect to ``w``."""
        return _ValueWithGrad.apply(w, self._fn)

    def potential_fn(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pyro's form: ``{"w": weights} -> U``."""
        return self(z["w"])
