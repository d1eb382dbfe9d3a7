"""Exact reference posteriors: Pyro's NUTS/HMC kernels on a lifted net's lean potential.

``nuts(bnn, (x, y), num_samples, warmup_steps)`` runs Pyro's own sampler (``pyro.infer.NUTS`` or ``HMC``
inside ``pyro.infer.MCMC``) on :class:`pyrobnn.potential.Potential`, the full-data log joint traced once,
instead of Pyro's trace of ``bnn.model``. Several chains run in one of three ways (``chain_method``):

- ``"batched"`` (default): one NUTS run on the product of C independent copies of the posterior, so every
  leapfrog step evaluates the C potentials in one batched call. Each copy's marginal is the posterior;
  the price is that the copies share the step size and the trajectory length (a tree grows until every
  copy has turned, and the step size must keep the summed energy error small), so each copy takes more
  gradient steps per draw than it would alone.
- ``"sequential"``: independent runs one after another (each its own step size and tree depths).
- ``"parallel"``: Pyro's multi-process chains (one process per chain where the cores allow; Pyro falls
  back to running them in turn, with a warning, where they do not).

The result, an :class:`MCMCPosterior`, is used like a guide: ``predict(bnn, posterior, x)``,
``checkpoint.save_posterior`` / ``load_posterior`` and ``export.to_inference_data`` take it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import HMC, MCMC, NUTS
from pyro.ops.stats import effective_sample_size, split_gelman_rubin
from torch import nn

from ._types import ArrayLike
from .lift import BayesianNet
from .potential import FlatLayout, Potential

CHAIN_METHODS = ("batched", "sequential", "parallel")
MAX_WORK = 2e8  # rows x weights per gradient evaluation above which full-batch NUTS is refused


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return value


class MCMCPosterior(nn.Module):
    """Draws of every sample site of a lifted net, kept by chain: buffer ``draws`` ``[C, S, D]`` (the flat
    layout of :class:`pyrobnn.potential.FlatLayout`) and the sampler's per-run statistics.

    ``samples`` (``{site: [C*S, *shape]}``, chains one after another) and ``chain_samples``
    (``{site: [C, S, *shape]}``) give them by site. As a guide it draws one stored sample per call;
    ``sample_posterior(n)`` gives ``n`` of them at once (what ``predict`` uses).
    ``MCMCPosterior(bnn)`` with no draws is an empty posterior to ``load_posterior`` into.
    """

    draws: torch.Tensor

    def __init__(self, bnn: BayesianNet, draws: torch.Tensor | None = None, stats: Mapping[str, Any] | None = None):
        super().__init__()
        self.layout = FlatLayout(bnn)
        if draws is None:
            draws = torch.zeros(0, 0, self.layout.dim)
        if draws.dim() != 3 or draws.shape[-1] != self.layout.dim:
            raise ValueError(f"draws must be [chains, draws, {self.layout.dim}] for this net; got {tuple(draws.shape)}")
        self.register_buffer("draws", draws.detach())
        stats = dict(stats or {})
        for name in ("divergences", "accept_rate", "step_size", "grad_evals", "seconds"):
            self.register_buffer(f"stat_{name}", torch.as_tensor(stats.get(name, []), dtype=torch.float64).reshape(-1))
        self.method = str(stats.get("method", "unknown"))

    # --- shape and access ----------------------------------------------------------------------------
    @property
    def num_chains(self) -> int:
        return self.draws.shape[0]

    @property
    def draws_per_chain(self) -> int:
        return self.draws.shape[1]

    @property
    def chain_samples(self) -> dict[str, torch.Tensor]:
        """``{site: [C, S, *shape]}``."""
        return self.layout.split(self.draws)

    @property
    def samples(self) -> dict[str, torch.Tensor]:
        """``{site: [C*S, *shape]}``, chains concatenated."""
        return self.layout.split(self.draws.reshape(-1, self.layout.dim))

    def _need_draws(self) -> int:
        total = self.num_chains * self.draws_per_chain
        if total == 0:
            raise ValueError("this MCMCPosterior holds no draws: run pyrobnn.mcmc.nuts or load_posterior into it")
        return total

    def sample_posterior(self, num_samples: int) -> dict[str, torch.Tensor]:
        """``num_samples`` stored draws, ``{site: [n, *shape]}``: evenly spaced over all chains when
        ``n`` is at most the number held (all of them, in order, when equal), else cycling through them."""
        total = self._need_draws()
        if num_samples <= total:
            idx = torch.linspace(0, total - 1, num_samples).round().long()
        else:
            idx = torch.arange(num_samples) % total
        return self.layout.split(self.draws.reshape(total, -1)[idx.to(self.draws.device)])

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """A Pyro guide: one stored draw, picked at random, as a Delta at every site."""
        total = self._need_draws()
        i = int(torch.randint(total, ()))
        values = self.layout.split(self.draws.reshape(total, -1)[i])
        return {k: pyro.sample(k, dist.Delta(v, event_dim=v.dim())) for k, v in values.items()}

    # --- checkpoints -----------------------------------------------------------------------------
    def adopt_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take a saved state of any number of chains and draws (what ``load_posterior`` calls)."""
        if set(state) != set(self.state_dict()):
            raise ValueError("checkpoint does not match the guide: it is not an MCMCPosterior's state")
        if state["draws"].dim() != 3 or state["draws"].shape[-1] != self.layout.dim:
            raise ValueError(f"checkpoint does not match the net: its draws hold {state['draws'].shape[-1]} "
                             f"values per draw, this net has {self.layout.dim}")
        for name, value in state.items():
            setattr(self, name, value.clone().to(getattr(self, name).device))

    def stats(self) -> dict[str, Any]:
        """The sampler's statistics per run (one run for batched chains, one per chain otherwise)."""
        out: dict[str, Any] = {k[5:]: v.tolist() for k, v in self.named_buffers() if k.startswith("stat_")}
        return {"method": self.method, "chains": self.num_chains, "draws_per_chain": self.draws_per_chain, **out}

    # --- diagnostics ------------------------------------------------------------------------------
    @torch.no_grad()
    def diagnostics(self, bnn: BayesianNet, x: ArrayLike) -> dict[str, Any]:
        """Convergence of the predictive at inputs ``x`` (weights themselves are not identifiable: hidden
        units permute): rank-normalised split R-hat and bulk ESS of every class probability (or predictive
        mean) over the chains, with divergences, acceptance rate and step size of the runs."""
        from .predictive import predict

        total = self._need_draws()
        pp = predict(bnn, self, x, num_samples=total)
        if pp.kind == "classification":
            q = pp.probs
        else:
            q = bnn.likelihood.mean(pp.outputs, pp.latents)
        q = q.reshape(self.num_chains, self.draws_per_chain, -1).double()
        rhat, ess = rank_rhat_ess(q)
        st = self.stats()
        return {
            "rhat_max": float(rhat.max()), "rhat_median": float(rhat.median()),
            "ess_bulk_min": float(ess.min()), "ess_bulk_median": float(ess.median()),
            "outputs_checked": int(q.shape[-1]), "divergences": int(sum(st["divergences"])),
            **{k: st[k] for k in ("accept_rate", "step_size", "method", "chains", "draws_per_chain", "grad_evals",
                                  "seconds")},
        }


def rank_rhat_ess(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-normalised split R-hat and bulk ESS (Vehtari et al. 2021) of ``q`` ``[C, S, M]``, per column."""
    c, s, m = q.shape
    flat = q.reshape(c * s, m)
    ranks = flat.argsort(0).argsort(0).double() + 1  # ties have probability zero for continuous draws
    z = torch.distributions.Normal(0.0, 1.0).icdf((ranks - 0.375) / (c * s + 0.25)).reshape(c, s, m)
    if s < 4:
        raise ValueError(f"diagnostics need at least 4 draws per chain; there are {s}")
    return split_gelman_rubin(z, chain_dim=0, sample_dim=1), effective_sample_size(z, chain_dim=0, sample_dim=1)


# --- the sampler -----------------------------------------------------------------------------------------
def _initial(bnn: BayesianNet, pot: Potential, init, chains: int, jitter: float, map_steps: int) -> torch.Tensor:
    """Starting points ``[C, D]``: the net's weights (chain 0 exactly, the others jittered), the same after a
    short full-batch MAP fit, or a dict of site values (``[*shape]`` or ``[C, *shape]``)."""
    layout = pot.layout
    if isinstance(init, Mapping):
        missing = [k for k in layout.sites if k not in init]
        if missing:
            raise ValueError(f"init: no value for site {missing[0]!r}; sites are {layout.sites}")
        rows = []
        for k in layout.sites:
            v = torch.as_tensor(init[k], dtype=torch.get_default_dtype()).to(bnn.device)
            if tuple(v.shape) == tuple(layout.shapes[k]):
                v = v.expand(chains, *layout.shapes[k])
            elif tuple(v.shape) != (chains, *layout.shapes[k]):
                raise ValueError(f"init[{k!r}] must have shape {tuple(layout.shapes[k])} or "
                                 f"{(chains, *layout.shapes[k])}; got {tuple(v.shape)}")
            rows.append(v.reshape(chains, -1))
        return torch.cat(rows, -1)
    if init not in ("net", "map"):
        raise ValueError(f"init must be 'net', 'map' or a dict of site values; got {init!r}")
    w0 = layout.join({k: v.to(bnn.device) for k, v in bnn.initial_values().items()})
    w = w0.expand(chains, -1).clone()
    w[1:] += jitter * torch.randn_like(w[1:])
    if init == "map":
        w = map_fit(pot, w, map_steps)
    return w


def map_fit(pot: Potential, w: torch.Tensor, steps: int, lr: float = 1e-2) -> torch.Tensor:
    """Adam on the potential (maximum a posteriori, full batch) from ``w`` ``[C, D]``, C starts at once."""
    batched = Potential(pot.bnn, pot.x, pot.y, chains=w.shape[0]) if pot.chains != w.shape[0] else pot
    w = w.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        g, _u = batched.value_and_grad(w)
        w.grad = g
        opt.step()
    return w.detach()


def _kernel(potential_fn, kind: str, max_tree_depth: int, target_accept: float, trajectory_length: float,
            full_mass):
    if kind == "nuts":
        return NUTS(potential_fn=potential_fn, max_tree_depth=max_tree_depth, target_accept_prob=target_accept,
                    full_mass=full_mass)
    if kind == "hmc":
        return HMC(potential_fn=potential_fn, trajectory_length=trajectory_length, target_accept_prob=target_accept,
                   full_mass=full_mass)
    raise ValueError(f"kernel must be 'nuts' or 'hmc'; got {kind!r}")


def _run(potential_fn, init: torch.Tensor, num_samples: int, warmup_steps: int, progress: bool, chains: int,
         copies: int = 0, dense_mass: bool = False, **kernel_args) -> tuple[torch.Tensor, dict]:
    """One ``pyro.infer.MCMC`` run from ``init``; draws ``[pyro chains, S, *init.shape[1:]]`` and statistics.
    ``copies`` > 0: ``init`` is ``[copies, D]``, each copy its own site ``w0``, ``w1``, ... (so a dense mass
    matrix is a block per copy, not one over all of them), stacked into ``[copies, D]`` for ``potential_fn``."""
    calls = [0]
    names = [f"w{c}" for c in range(copies)] if copies else ["w"]

    def counted(z):
        calls[0] += 1
        return potential_fn({"w": torch.stack([z[k] for k in names]) if copies else z["w"]})

    kernel = _kernel(counted, full_mass=[(k,) for k in names] if dense_mass else False, **kernel_args)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=chains,
                initial_params=dict(zip(names, init if copies else [init])), disable_progbar=not progress)
    start = time.perf_counter()
    mcmc.run()
    seconds = time.perf_counter() - start
    by_site = mcmc.get_samples(group_by_chain=True)
    draws = torch.stack([by_site[k] for k in names], 2) if copies else by_site["w"]
    diag = mcmc.diagnostics()
    n = draws.shape[0]
    return draws, {
        "divergences": [len(diag["divergences"][f"chain {i}"]) for i in range(n)],
        "accept_rate": [float(diag["acceptance rate"][f"chain {i}"]) for i in range(n)],
        "step_size": [float(kernel.step_size) if chains == 1 else float("nan")] * n,  # Pyro's chains keep theirs
        "grad_evals": [calls[0] if chains == 1 else float("nan")] * n,
        "seconds": [seconds / n] * n,
    }


def nuts(bnn: BayesianNet, data: tuple[ArrayLike, ArrayLike], num_samples: int, warmup_steps: int,
         num_chains: int = 1, chain_method: str = "batched", max_tree_depth: int = 8, target_accept: float = 0.8,
         init: str | Mapping[str, Any] = "net", init_jitter: float = 0.1, map_steps: int = 300,
         seed: int | None = None, progress: bool = True, kernel: str = "nuts", trajectory_length: float = 2 * math.pi,
         dense_mass: bool = False, max_work: float = MAX_WORK) -> MCMCPosterior:
    """Sample the posterior of ``bnn`` given ``data = (x, y)`` with Pyro's NUTS (or ``kernel="hmc"``).

    Args:
        num_samples, warmup_steps: draws kept per chain, and adaptation steps before them (both >= 1).
        kernel: ``"nuts"`` (trees up to ``max_tree_depth``) or ``"hmc"`` (trajectories of ``trajectory_length``, as
            many leapfrog steps as the adapted step size needs).
        num_chains, chain_method: how many chains and how they run (``"batched"``, ``"sequential"``,
            ``"parallel"``; see the module docstring for what each costs).
        init: ``"net"`` (the net's current weights; chains after the first jittered by ``init_jitter``),
            ``"map"`` (the same, then ``map_steps`` of full-batch Adam on the log joint), or a dict of site
            values.
        dense_mass: adapt a dense mass matrix over each chain's weights (a D x D covariance per chain, estimated in
            warm-up) instead of a diagonal one: for posteriors narrow along directions that mix many weights.
        max_work: rows x weights above which the full-data gradient at every leapfrog step is refused.
    Returns an :class:`MCMCPosterior`; its ``diagnostics(bnn, x)`` checks convergence.
    """
    num_samples = _positive_int("num_samples", num_samples)
    warmup_steps = _positive_int("warmup_steps", warmup_steps)
    num_chains = _positive_int("num_chains", num_chains)
    _positive_int("max_tree_depth", max_tree_depth)
    if not trajectory_length > 0:
        raise ValueError(f"trajectory_length must be > 0; got {trajectory_length!r}")
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method must be one of {CHAIN_METHODS}; got {chain_method!r}")
    x, y = bnn.check_inputs(*data)
    x, y = x.to(bnn.device), y.to(bnn.device)
    dim = FlatLayout(bnn).dim
    if x.shape[0] * dim > max_work:
        raise ValueError(f"NUTS evaluates all {x.shape[0]:,} rows at every leapfrog step; with {dim:,} weights "
                         f"that is {x.shape[0] * dim:.2g} > max_work={max_work:.2g}: train it with SVI "
                         f"(pyrobnn.fit), or subsample the rows")
    if seed is not None:
        pyro.set_rng_seed(seed)
    batched = chain_method == "batched" and num_chains > 1
    pot = Potential(bnn, x, y, chains=num_chains if batched else None)
    with torch.no_grad():
        start = _initial(bnn, pot, init, num_chains, init_jitter, map_steps)
    kernel_args: dict[str, Any] = {"kind": kernel, "max_tree_depth": max_tree_depth, "target_accept": target_accept,
                                   "trajectory_length": trajectory_length, "dense_mass": bool(dense_mass)}
    if batched:
        copies = num_chains if dense_mass else 0  # a site per copy only where the mass matrix needs the blocks
        draws, stats = _run(pot.potential_fn, start, num_samples, warmup_steps, progress, 1, copies=copies,
                            **kernel_args)
        draws = draws[0].transpose(0, 1)  # [S, C, D] -> [C, S, D]
    elif chain_method == "parallel" and num_chains > 1:
        draws, stats = _run(pot.potential_fn, start, num_samples, warmup_steps, progress, num_chains, **kernel_args)
    else:
        runs = [_run(pot.potential_fn, start[c], num_samples, warmup_steps, progress, 1, **kernel_args)
                for c in range(num_chains)]
        draws = torch.cat([d for d, _ in runs])
        stats = {k: sum((s[k] for _, s in runs), []) for k in runs[0][1]}
    return MCMCPosterior(bnn, draws.to(bnn.device), {**stats, "method": chain_method if num_chains > 1 else "single"})
