"""Automatic guides for a lifted net.

``MeanFieldNormal`` puts an independent Normal on every weight and declares each site as that
Normal, so ``TraceMeanField_ELBO`` uses the closed-form KL to a Normal prior (zero-variance KL).
``auto_normal`` wires Pyro's ``AutoNormal`` in with non-symmetric initial means; note that it
samples in unconstrained space and puts a Delta at the site, so its KL is always estimated by
sampling.
``low_rank`` (a Normal over all weights whose covariance is low-rank plus diagonal) and ``structured`` (a
full-covariance Normal on chosen layers, by default the last, mean-field elsewhere) are Pyro's
``AutoLowRankMultivariateNormal`` and ``AutoStructured`` wired in the same way.
"""
from __future__ import annotations

from typing import Any, Callable, Union

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoGuide, AutoLowRankMultivariateNormal, AutoNormal, AutoStructured
from pyro.infer.autoguide.initialization import init_to_sample, init_to_value
from torch import nn
from torch.nn.functional import softplus

from .lift import BayesianNet
from .paramstore import expose

#: Initial guide means: ``"net"`` (the net's weights), ``"prior"`` (a prior draw) or tensors by site name.
Init = Union[str, dict[str, Any]]


def _inv_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def _init_locs(bnn: BayesianNet, init: Init) -> dict[str, torch.Tensor]:
    """Initial means: "net" = the net's current weights (its own init, or trained deterministic
    weights), "prior" = one draw from the prior, or a dict of tensors by site name."""
    if isinstance(init, dict):
        missing = [k for k in bnn.site_names if k not in init]
        if missing:
            raise ValueError(f"init: no initial value for site(s) {missing}")
        return {k: torch.as_tensor(init[k], dtype=bnn.dtype).detach().clone() for k in bnn.site_names}
    if init == "net":
        return {k: v.clone() for k, v in bnn.initial_values().items()}
    if init == "prior":
        return {k: bnn.prior_distribution(k).sample() for k in bnn.site_names}
    raise ValueError(f"init must be 'net', 'prior' or a dict of tensors; got {init!r}")


class MeanFieldNormal(nn.Module):
    """q(w) = prod_i Normal(w_i; loc_i, softplus(rho_i)), one Normal site per lifted parameter.

    All means live in one flat parameter and all rho in another (per-site tensors are views), so a
    training step updates two tensors however many layers the net has.
    A Pyro citizen: each call declares the two tensors as param sites ``"meanfield$$$loc_flat"`` and
    ``"meanfield$$$rho_flat"`` (:func:`pyrobnn.paramstore.expose`), so ``pyro.infer.SVI`` with any Pyro
    optimiser trains it; the module owns them, so its ``state_dict`` is the checkpoint.
    init: "net" (default), "prior" or a dict of tensors; init_scale: initial std of every weight
    (Pyro's advice: about 0.1 for small nets, 0.01 for large ones).
    """

    def __init__(self, bnn: BayesianNet, init: Init = "net", init_scale: float = 0.1):
        super().__init__()
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0; got {init_scale!r}")
        self.sites = bnn.site_names
        locs = _init_locs(bnn, init)
        self.shapes = {k: bnn.shapes[k] for k in self.sites}
        self.offsets, total = {}, 0
        for k in self.sites:
            n = self.shapes[k].numel()
            self.offsets[k] = (total, total + n)
            total += n
        flat = torch.cat([locs[k].reshape(-1).to(bnn.device, bnn.dtype) for k in self.sites])
        self.loc_flat = nn.Parameter(flat)
        self.rho_flat = nn.Parameter(torch.full_like(flat, float(_inv_softplus(torch.tensor(float(init_scale))))))

    def site_view(self, flat: torch.Tensor, site: str) -> torch.Tensor:
        """The part of a flat ``[..., total]`` tensor that belongs to ``site``, shaped like it."""
        a, b = self.offsets[site]
        return flat[..., a:b].reshape(tuple(flat.shape[:-1]) + tuple(self.shapes[site]))

    def split_sites(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every site's part of a flat ``[..., total]`` tensor, by name: one split, whose gradient is one
        concatenation (per-site slices would each scatter into a zero tensor of the full size)."""
        sizes = [self.shapes[k].numel() for k in self.sites]
        lead = tuple(flat.shape[:-1])
        return {k: part.reshape(lead + tuple(self.shapes[k]))
                for k, part in zip(self.sites, flat.split(sizes, dim=-1))}

    @property
    def loc(self) -> dict[str, torch.Tensor]:
        """Means by site name (views of the flat parameter)."""
        return {k: self.site_view(self.loc_flat, k) for k in self.sites}

    def scale(self, site: str) -> torch.Tensor:
        """Posterior std of every weight of ``site``, shaped like it."""
        return softplus(self.site_view(self.rho_flat, site))

    def distribution(self, site: str) -> dist.TorchDistribution:
        """q of one site: independent Normals, the parameter's shape as event shape."""
        loc = self.site_view(self.loc_flat, site)
        return dist.Normal(loc, self.scale(site)).to_event(loc.dim())

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The guide: one ``pyro.sample`` per site (the model's arguments are ignored)."""
        expose("meanfield", self.named_parameters())
        return {k: pyro.sample(k, self.distribution(k)) for k in self.sites}

    @torch.no_grad()
    def sample_posterior(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``num_samples`` weight sets at once, ``[num_samples, *shape]`` per site."""
        scale, out = softplus(self.rho_flat), {}
        for k in self.sites:  # site by site: each draw tensor is contiguous
            a, b = self.offsets[k]
            eps = torch.empty((num_samples, b - a), device=scale.device, dtype=scale.dtype).normal_(generator=generator)
            out[k] = eps.mul_(scale[a:b]).add_(self.loc_flat[a:b]).reshape(num_samples, *self.shapes[k])
        return out

    @torch.no_grad()
    def pruned_means(self, fraction: float) -> dict[str, torch.Tensor]:
        """Posterior means with the ``fraction`` of weights of lowest ``|mu| / sigma`` set to zero
        (Blundell et al. 2015), by site; ``bnn.forward(x, guide.pruned_means(f))`` runs the pruned net."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must lie in [0, 1]; got {fraction!r}")
        loc = self.loc_flat.detach().clone()
        k = round(fraction * loc.numel())
        if k:
            snr = loc.abs() / softplus(self.rho_flat)
            loc[torch.argsort(snr)[:k]] = 0.0
        return {s: self.site_view(loc, s) for s in self.sites}

    @torch.no_grad()
    def signal_to_noise(self) -> dict[str, torch.Tensor]:
        """``|mu| / sigma`` per weight (Blundell 2015), for pruning and diagnostics."""
        snr = self.loc_flat.abs() / softplus(self.rho_flat)
        return {k: self.site_view(snr, k) for k in self.sites}


def auto_normal(bnn: BayesianNet, init: Init = "net", init_scale: float = 0.1) -> AutoNormal:
    """Pyro's AutoNormal on ``bnn.model``, initialised off zero (from the net or a prior draw) so
    hidden units are not symmetric."""
    loc_fn = _loc_fn(bnn, init, init_scale)
    # Built on the weights-only model: the observation site is not the guide's business (an
    # unobserved discrete "obs" at prediction time would otherwise break AutoNormal's setup).
    return AutoNormal(bnn.sample_weights, init_loc_fn=loc_fn, init_scale=init_scale)


def _loc_fn(bnn: BayesianNet, init: Init, init_scale: float):
    if not init_scale > 0:
        raise ValueError(f"init_scale must be > 0; got {init_scale!r}")
    return init_to_sample if init == "prior" else init_to_value(values=_init_locs(bnn, init))


def low_rank(bnn: BayesianNet, rank: int = 10, init: Init = "net", init_scale: float = 0.1) -> AutoGuide:
    """Pyro's ``AutoLowRankMultivariateNormal`` over every weight at once: covariance ``W W^T + diag``
    with ``W`` of ``rank`` columns (correlations between all weights, at ``rank`` times the mean-field cost)."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1; got {rank!r}")
    return AutoLowRankMultivariateNormal(bnn.sample_weights, rank=rank, init_loc_fn=_loc_fn(bnn, init, init_scale),
                                         init_scale=init_scale)


def last_layer(bnn: BayesianNet) -> list[str]:
    """The sites of the net's last parametrised module (e.g. the output layer's weight and bias)."""
    owners = [k.rpartition(".")[0] for k in bnn.net_sites]
    return [k for k, o in zip(bnn.net_sites, owners) if o == owners[-1]]


def structured(bnn: BayesianNet, full: list[str] | None = None, init: Init = "net",
               init_scale: float = 0.1) -> AutoGuide:
    """Pyro's ``AutoStructured``: a full-covariance Normal on each site in ``full`` (default: the last layer's,
    :func:`last_layer`), an independent Normal on every other weight."""
    full = last_layer(bnn) if full is None else list(full)
    unknown = [k for k in full if k not in bnn.site_names]
    if unknown:
        raise ValueError(f"structured: {unknown[0]!r} is not a site of the net; sites are {bnn.site_names}")
    conditionals: dict[str, str | Callable[..., Any]] = {k: ("mvn" if k in full else "normal") for k in bnn.site_names}
    return AutoStructured(bnn.sample_weights, conditionals=conditionals, init_loc_fn=_loc_fn(bnn, init, init_scale),
                          init_scale=init_scale)


GUIDES: dict[str, Callable[..., Any]] = {
    "meanfield": MeanFieldNormal, "autonormal": auto_normal, "lowrank": low_rank, "structured": structured}


def make_guide(name: str, bnn: BayesianNet, **kwargs: Any) -> MeanFieldNormal | AutoGuide:
    """An automatic guide by name: ``"meanfield"``, ``"autonormal"``, ``"lowrank"`` or ``"structured"``."""
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}; choose one of {sorted(GUIDES)}")
    return GUIDES[name](bnn, **kwargs)
