"""The Laplace approximation: a Normal at the MAP whose precision is the curvature of the log joint there.

``LaplaceGuide(bnn)`` is a MAP guide while it trains (a point mass at every weight, so ``fit`` maximises
log prior + log-likelihood), then ``approximate((x, y), mode)`` puts a Normal around that point:

- ``"full"``: the exact Hessian of -log joint over every sample site (D x D; nets up to ``MAX_FULL`` weights);
- ``"last_layer"``: the exact Hessian over the last layer's sites, the diagonal elsewhere;
- ``"diagonal"``: per weight, the prior precision plus the empirical Fisher (sum over rows of the squared
  per-row gradient of the log-likelihood), for nets of any size.

``LaplaceGuide(bnn, linearized=True)`` makes :func:`pyrobnn.predict` use the net linearised at the MAP (the "GLM
predictive"): each draw's output is ``f(x, w*) + J(x) (w - w*)``, a Jacobian-vector product per draw (no Jacobian is
built). Linearised, the Gaussian over the weights is the posterior of a model it fits; the plain net run on Laplace
draws is known to under-fit (Immer et al. 2021). Pyro's ``Predictive`` and the guide's own Delta sites keep the
plain net.

Away from an exact optimum, and for ReLU nets in general, the likelihood's Hessian can have directions of negative
curvature; they are set to zero before the (Normal) prior's own curvature is added, so no direction is wider than
the prior. A site whose prior is not Normal (Laplace, scale mixture) keeps its exact curvature in the first part.
"""
from __future__ import annotations

import warnings
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.func import grad, hessian, jvp, vmap

from ._types import ArrayLike
from .autoguides import Init, _init_locs, last_layer
from .lift import BayesianNet
from .paramstore import expose
from .potential import FlatLayout, _normal_terms, log_joint
from .transformable import transformable

MODES = ("full", "last_layer", "diagonal")
MAX_FULL = 5000  # weights for which the full D x D Hessian is built


class LaplaceGuide(nn.Module):
    """A point mass at ``loc`` (trained by ``fit``), then, after :meth:`approximate`, the Normal
    ``loc + diag * eps`` with the sites of ``block_index`` drawn jointly as ``loc[idx] + block @ eps``."""

    block: torch.Tensor
    block_index: torch.Tensor
    diag: torch.Tensor

    def __init__(self, bnn: BayesianNet, init: Init = "net", linearized: bool = False):
        super().__init__()
        self.layout = FlatLayout(bnn)
        self.linearized = bool(linearized)
        self.loc = nn.Parameter(self.layout.join(_init_locs(bnn, init)).detach().clone())
        self.register_buffer("diag", torch.zeros(0))
        self.register_buffer("block", torch.zeros(0, 0))
        self.register_buffer("block_index", torch.zeros(0, dtype=torch.long))

    @property
    def approximated(self) -> bool:
        """True once :meth:`approximate` has put a Normal around the MAP."""
        return self.diag.numel() > 0

    def sample_flat(self, n: int) -> torch.Tensor:
        """``[n, D]`` draws (all equal to the MAP before :meth:`approximate`)."""
        loc = self.loc.detach()
        if not self.approximated:
            return loc.expand(n, -1).clone()
        draws = loc + torch.randn(n, loc.numel(), device=loc.device, dtype=loc.dtype) * self.diag
        if self.block_index.numel():
            eps = torch.randn(n, self.block_index.numel(), device=loc.device, dtype=loc.dtype)
            draws[:, self.block_index] = loc[self.block_index] + eps @ self.block.T
        return draws

    def sample_posterior(self, num_samples: int) -> dict[str, torch.Tensor]:
        """``{site: [n, *shape]}``."""
        return self.layout.split(self.sample_flat(num_samples))

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """A Pyro guide: Delta sites at the MAP (while fitting) or at one draw of the approximation. ``loc`` is
        declared as the param site ``"laplace$$$loc"``, so a plain ``pyro.infer.SVI`` loop trains it too."""
        expose("laplace", self.named_parameters())
        w = self.loc if not self.approximated else self.sample_flat(1)[0]
        return {k: pyro.sample(k, dist.Delta(v, event_dim=v.dim())) for k, v in self.layout.split(w).items()}

    def linearized_outputs(self, bnn: BayesianNet, x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """The net linearised at the MAP for each draw: ``f(x, w*) + J(x) (w - w*)``, ``[n, N, ...]``."""
        at = {k: v for k, v in self.layout.split(self.loc.detach()).items() if k in bnn.net_sites}
        tangents = {k: draws[k] - at[k] for k in at}

        def push(t):
            return jvp(lambda values: bnn.forward(x, values), (at,), (t,))[1]

        with warnings.catch_warnings(), transformable(bnn.net):  # (forward-mode AD warns of its own internals)
            warnings.simplefilter("ignore", DeprecationWarning)
            return bnn.forward(x, at) + vmap(push)(tangents)

    def adopt_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take a saved state whatever its mode (what ``load_posterior`` calls)."""
        if set(state) != set(self.state_dict()) or state["loc"].shape != self.loc.shape:
            raise ValueError(f"checkpoint does not match the guide: not a LaplaceGuide of a net with "
                             f"{self.loc.numel()} weights")
        with torch.no_grad():
            self.loc.copy_(state["loc"])
        for name in ("diag", "block", "block_index"):
            setattr(self, name, state[name].clone().to(self.loc.device))

    @torch.no_grad()
    def approximate(self, bnn: BayesianNet, data: tuple[ArrayLike, ArrayLike], mode: str = "full") -> LaplaceGuide:
        """Put the Normal around the current ``loc`` from the full data ``(x, y)``; returns self."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if mode == "full" and self.layout.dim > MAX_FULL:
            raise ValueError(f"a full Hessian of {self.layout.dim:,} weights needs {self.layout.dim ** 2:.2g} "
                             f"numbers (MAX_FULL={MAX_FULL}); use mode='last_layer' or 'diagonal'")
        x, y = bnn.check_inputs(*data)
        x, y = x.to(bnn.device), y.to(bnn.device)
        w = self.loc.detach()
        loc_p, inv_p, _ = _normal_terms(bnn, self.layout, w)
        prior_prec = inv_p ** 2
        was = bnn.training
        try:
            bnn.eval()
            with bnn.frozen_buffers(), torch.enable_grad(), transformable(bnn.net):
                index = torch.arange(self.layout.dim, device=w.device) if mode == "full" else \
                    self._sites_index(last_layer(bnn) if mode == "last_layer" else [])
                prec = (prior_prec + self._fisher_diag(bnn, w, x, y)).clamp_min(1e-6) if mode != "full" else None
                block = self._block_factor(bnn, w, x, y, index, prior_prec) if index.numel() else torch.zeros(0, 0)
        finally:
            bnn.train(was)
        diag = torch.zeros_like(w) if prec is None else prec.rsqrt()
        diag[index] = 0.0
        self.diag, self.block, self.block_index = diag, block.to(w), index
        return self

    def _sites_index(self, sites: list[str]) -> torch.Tensor:
        start, idx = 0, []
        for k, n in zip(self.layout.sites, self.layout.sizes):
            if k in sites:
                idx.append(torch.arange(start, start + n))
            start += n
        return torch.cat(idx).to(self.loc.device) if idx else torch.zeros(0, dtype=torch.long, device=self.loc.device)

    def _block_factor(self, bnn, w, x, y, index, prior_prec) -> torch.Tensor:
        """``A`` with ``A A^T`` the inverse of the precision over ``w[index]`` (the rest held at the MAP): the Hessian
        of -log joint with the part beyond the Normal priors' own curvature made positive semi-definite
        (negative eigenvalues set to zero), plus that prior curvature, so no direction is wider than the prior."""
        def energy(sub):
            return -log_joint(bnn, w.index_put((index,), sub), x, y)

        with warnings.catch_warnings():  # torch's forward-mode AD announces a deprecation of its own internals
            warnings.simplefilter("ignore", DeprecationWarning)
            h = hessian(energy)(w[index].clone()).double()
        p = prior_prec[index].double()
        rest = 0.5 * (h + h.T) - torch.diag(p)
        evals, evecs = torch.linalg.eigh(rest)
        precision = (evecs * evals.clamp_min(0.0)) @ evecs.T + torch.diag(p)
        if not (p > 0).all():  # a site without a Normal prior: keep its precision positive
            precision += torch.eye(len(p), dtype=p.dtype) * 1e-6 * float(precision.diagonal().mean())
        chol = torch.linalg.cholesky(precision)
        eye = torch.eye(len(p), dtype=p.dtype)
        return torch.linalg.solve_triangular(chol.T, eye, upper=True).to(w.dtype)

    @staticmethod
    def _fisher_diag(bnn, w, x, y, chunk: int = 256) -> torch.Tensor:
        """Sum over rows of the squared per-row gradient of the log-likelihood, ``[D]``."""
        layout = FlatLayout(bnn)

        def row_log_lik(wv, xr, yr):
            values = layout.split(wv)
            out = bnn.forward(xr[None], values)
            latents = {k: v for k, v in values.items() if k not in bnn.net_sites}
            return bnn.likelihood.distribution(out, latents).log_prob(yr[None]).sum()

        per_row = vmap(grad(row_log_lik), in_dims=(None, 0, 0))
        total = torch.zeros_like(w)
        try:
            for i in range(0, x.shape[0], chunk):
                total += per_row(w, x[i:i + chunk], y[i:i + chunk]).pow(2).sum(0)
        except RuntimeError:  # a forward whose shapes depend on each row (packed sequence lengths): row by row
            total = sum((grad(row_log_lik)(w, x[i], y[i]).pow(2) for i in range(x.shape[0])), torch.zeros_like(w))
        return total
