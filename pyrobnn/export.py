"""Export a fitted posterior to ArviZ: ``to_inference_data(bnn, guide, x, y)``.

ArviZ is optional (``pip install 'pyrobnn[arviz]'``). The weight draws come from pyrobnn's
vectorised machinery (``guide.sample_posterior`` or one guide trace under a plate) and go through
the net in batched calls, never Pyro's sequential ``Predictive``. The same draws feed every group,
so draw ``i`` of ``posterior_predictive`` was sampled under weight draw ``i`` of ``posterior``.
"""
from __future__ import annotations

import warnings
from typing import Any

import pyro
import torch
from torch import nn

from . import __version__
from .lift import BayesianNet
from .predictive import PosteriorPredictive, _weight_draws, auto_chunk

ARVIZ_MISSING = "to_inference_data needs arviz: pip install 'pyrobnn[arviz]'"


def _import_arviz():
    try:
        with warnings.catch_warnings():  # arviz 0.2x announces its 1.0 refactor on import
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"arviz(\.|$)")
            import arviz
    except ImportError as e:
        raise ImportError(ARVIZ_MISSING) from e
    return arviz


def _example_input(bnn: BayesianNet, x) -> torch.Tensor:
    """An input to trace a guide with when no ``x`` is given (guides with ``sample_posterior``
    never read it)."""
    if x is not None:
        return x
    if bnn.vocab_size is not None:
        return torch.zeros(1, 1, dtype=torch.long, device=bnn.device)
    if bnn.n_features is not None:
        return torch.zeros(1, bnn.n_features, device=bnn.device)
    raise ValueError("to_inference_data: pass x, the guide needs an input to be traced with for this net")


def _site_dims(name: str, shape) -> list[str]:
    return [f"{name}_dim_{i}" for i in range(len(shape))]


@torch.no_grad()
def to_inference_data(bnn: BayesianNet, guide, x: torch.Tensor | None = None, num_samples: int = 1000,
                      seed: int | None = None, y: torch.Tensor | None = None) -> Any:
    """``arviz.InferenceData`` of the posterior ``guide`` approximates for ``bnn``.

    Groups: ``posterior`` (every lifted weight and latent site, dims ``chain`` (1; an
    :class:`pyrobnn.mcmc.MCMCPosterior` gives its chains and all its draws, ``num_samples`` unused), ``draw``
    (``num_samples``) and ``<site>_dim_<i>`` per parameter dim); with ``x``,
    ``posterior_predictive`` (variable ``"obs"``: y sampled from the likelihood once per weight
    draw and input, ``[chain, draw, obs_dim_0, ...]``); with ``y`` (needs ``x``),
    ``observed_data`` (``"obs"``) and ``log_likelihood`` (``"obs"``: log p(y_n | w_s) per draw and
    input, for ``arviz.loo`` / ``arviz.waic``). Regression outputs stay in the units the net was
    trained on (standardised targets stay standardised).
    """
    az = _import_arviz()
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    if y is not None and x is None:
        raise ValueError("to_inference_data: y was given without x; observed data needs the inputs it belongs to")
    if seed is not None:
        pyro.set_rng_seed(seed)
    if x is not None:
        x, y = bnn.check_inputs(x, y)
        x = x.to(bnn.device)
        y = None if y is None else y.to(bnn.device)
    if isinstance(guide, nn.Module):
        guide.to(bnn.device)

    chains = 1
    if hasattr(guide, "draws_per_chain"):  # an MCMCPosterior: every draw, chain by chain
        chains, num_samples = guide.num_chains, guide.num_chains * guide.draws_per_chain
    draws = _weight_draws(bnn, guide, _example_input(bnn, x), num_samples)

    def by_chain(t: torch.Tensor):
        return t.detach().cpu().reshape(chains, -1, *t.shape[1:]).numpy()

    posterior = {k: by_chain(v) for k, v in draws.items()}
    dims = {k: _site_dims(k, bnn.shapes[k]) for k in draws}
    groups = {"posterior": posterior}

    if x is not None:
        chunk = auto_chunk(bnn, x)
        outs = [bnn.forward(x, {k: v[i:i + chunk] for k, v in draws.items() if k in bnn.net_sites})
                for i in range(0, num_samples, chunk)]
        latents = {k: v for k, v in draws.items() if k not in bnn.net_sites}
        pp = PosteriorPredictive(torch.cat(outs), bnn.likelihood, latents)
        obs = pp.draws
        groups["posterior_predictive"] = {"obs": by_chain(obs)}
        dims["obs"] = [f"obs_dim_{i}" for i in range(obs.dim() - 1)]
        if y is not None:
            target = y if pp.kind == "regression" else y.long()
            groups["observed_data"] = {"obs": target.cpu().numpy()}
            groups["log_likelihood"] = {"obs": by_chain(pp.distribution().log_prob(target))}

    idata = az.from_dict(**groups, dims=dims)
    for name in idata.groups():
        idata[name].attrs.update(inference_library="pyrobnn", inference_library_version=__version__)
    return idata
