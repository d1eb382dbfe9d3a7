"""Posterior predictive: weight draws through the net, vectorised over chunks of draws (``vmap``) for small
passes or one after another through the plain net for large ones; chunked to bound memory."""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Protocol, cast

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from ._types import ArrayLike, Guide
from .batches import gathered
from .checkpoint import materialise
from .lift import BayesianNet
from .likelihoods import Likelihood

_CHUNK_BYTES = 256 * 2**20  # activations + weights held at once per chunk of draws
LOOP_FLOATS = 2**20  # one pass of at least this many activation floats: draws run one after another (choose_strategy)


def _snapshot(likelihood):
    """The likelihood as it is now, its learned tensors (a noise scale) detached: the predictive's summaries are
    plain tensors (``pp.std().numpy()`` works) and do not move if training goes on."""
    if isinstance(likelihood, nn.Module) and any(p.requires_grad for p in likelihood.parameters()):
        likelihood = copy.deepcopy(likelihood).requires_grad_(False)
    return likelihood


def _weight_draws(bnn: BayesianNet, guide, x: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """n draws of every lifted weight from the guide, ``[n, *shape]`` per site."""
    if hasattr(guide, "sample_posterior") and not isinstance(guide, pyro.infer.autoguide.AutoGuide):
        draws = guide.sample_posterior(n)
    else:
        if isinstance(guide, pyro.infer.autoguide.AutoGuide) and getattr(guide, "prototype_trace", None) is None:
            materialise(guide, bnn, x[:2])  # not yet run (untrained): built as training would, with a target
        # Any guide whose weight sites have the parameter as event shape: one trace under a plate.
        with pyro.plate("_draws", n, dim=-2):
            tr = poutine.trace(poutine.block(guide, hide_types=["param"])).get_trace(x)
        draws = {k: tr.nodes[k]["value"] for k in bnn.site_names if k in tr.nodes}
        missing = [k for k in bnn.site_names if k not in draws]
        if missing:
            raise ValueError(f"the guide has no sample site for {missing}; a guide must sample every lifted weight")
    for k in bnn.site_names:  # a posterior of another net: refuse it before any reshape
        if k not in draws:
            raise ValueError(f"the posterior does not fit this net: it has no draws of site {k!r}")
        if draws[k][0].numel() != bnn.shapes[k].numel():
            raise ValueError(f"the posterior does not fit this net: site {k!r} has shape {tuple(draws[k].shape[1:])} "
                             f"in the posterior, {tuple(bnn.shapes[k])} in the net")
    return {k: draws[k].reshape(n, *bnn.shapes[k]).to(x.device) for k in bnn.site_names}


def _floats_per_row(bnn: BayesianNet, x: torch.Tensor) -> int:
    """Activation floats one input needs in one forward pass (measured with hooks on two rows, in eval
    mode: a BatchNorm in train mode, or one without running statistics, cannot take one row; no state changes)."""
    total = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel()
        elif isinstance(out, (tuple, list)):
            total[0] += sum(o.numel() for o in out if isinstance(o, torch.Tensor))

    handles = [m.register_forward_hook(hook) for m in bnn.net.modules() if not list(m.children())]
    was = bnn.net.training
    try:
        with torch.no_grad(), bnn.frozen_buffers():
            bnn.net.eval()
            bnn.net(x[:2])
    finally:
        bnn.net.train(was)
        for h in handles:
            h.remove()
    return max(total[0] // len(x[:2]), 1)


def auto_chunk(bnn: BayesianNet, x: torch.Tensor, floats_per_row: int | None = None) -> int:
    """Draws per chunk so that activations and weights of one chunk fit in ~256 MB."""
    n_weights = sum(math.prod(s) for s in bnn.shapes.values())
    per_row = _floats_per_row(bnn, x) if floats_per_row is None else floats_per_row
    per_draw = 4 * (x.shape[0] * (per_row + x[0].numel()) + 2 * n_weights)
    return max(1, _CHUNK_BYTES // per_draw)


def choose_strategy(n_rows: int, floats_per_row: int) -> str:
    """``"loop"`` when one draw's forward pass over the inputs is big enough to keep the machine busy on its own
    (at least ``LOOP_FLOATS`` activation floats), else ``"vectorize"``; measured in
    ``benchmarks/predictive_time.py``."""
    return "loop" if n_rows * floats_per_row >= LOOP_FLOATS else "vectorize"


@torch.no_grad()
def predict(bnn: BayesianNet, guide: Guide, x: ArrayLike | torch.utils.data.DataLoader, num_samples: int = 1000,
            chunk_size: int | None = None, seed: int | None = None, mode: str = "eval",
            strategy: str = "auto") -> PosteriorPredictive:
    """Posterior predictive of ``bnn`` under ``guide`` at inputs ``x``: ``num_samples`` weight draws. ``x`` may be a
    DataLoader of inputs or of (input, target) pairs: its inputs are gathered in order.

    mode: ``"eval"`` (default) runs the net in eval mode: BatchNorm uses its running statistics and
    Dropout is off, so the spread comes from the weight posterior alone. ``"train"`` keeps train-mode
    behaviour: Dropout masks drawn per weight draw (MC dropout on top of the weight posterior) and
    BatchNorm normalising by each draw's statistics over ``x``. Either way no state of the net changes
    (running statistics are left as they were) and the net is returned to the mode it was in;
    ``pp.mode`` records which was used.

    strategy: how the draws go through the net. ``"vectorize"`` maps the net over a chunk of draws at once
    (``vmap``: one call, best when each draw's pass is small, e.g. 5000 draws for a few inputs); ``"loop"`` runs
    the draws one after another through the plain net (its own kernels, best when one pass already fills the
    machine, e.g. thousands of images); ``"auto"`` (default) picks from the sizes (:func:`choose_strategy`).
    Both give the same draws.
    """
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    if strategy not in ("auto", "vectorize", "loop"):
        raise ValueError(f"strategy must be 'auto', 'vectorize' or 'loop'; got {strategy!r}")
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' (running statistics, no dropout) or 'train' (MC dropout); got {mode!r}")
    bnn.check_guide(guide)
    # a DataLoader's inputs, gathered before seeding: iterating a DataLoader draws from torch's generator
    inputs = gathered(x, targets=False)[0] if isinstance(x, torch.utils.data.DataLoader) else x
    if seed is not None:
        pyro.set_rng_seed(seed)
    x = bnn.check_inputs(inputs)[0].to(bnn.device)
    if isinstance(guide, nn.Module):
        guide.to(bnn.device)
    # the one-row probe of activation sizes runs only when the chunk or the strategy needs it
    per_row = _floats_per_row(bnn, x) if chunk_size is None or strategy == "auto" else 0
    chunk = chunk_size or auto_chunk(bnn, x, per_row)
    loop = strategy == "loop" or (strategy == "auto" and choose_strategy(x.shape[0], per_row) == "loop")
    # LaplaceGuide(linearized=True): the GLM predictive, the net linearised at the MAP
    linearized = getattr(guide, "linearized_outputs", None) if getattr(guide, "linearized", False) else None
    outs, latents = [], []
    was = bnn.training
    try:
        bnn.train(mode == "train")
        with bnn.frozen_buffers():
            for start in range(0, num_samples, chunk):
                n = min(chunk, num_samples - start)
                draws = _weight_draws(bnn, guide, x, n)
                if linearized is not None:
                    outs.append(linearized(bnn, x, draws))
                elif loop:
                    outs.append(torch.stack([bnn.forward(x, {k: v[i] for k, v in draws.items()}) for i in range(n)]))
                else:
                    outs.append(bnn.forward(x, draws))
                latents.append({k: v for k, v in draws.items() if k not in bnn.net_sites})
    finally:
        bnn.train(was)
    outputs = torch.cat(outs)
    latent = {k: torch.cat([d[k] for d in latents]) for k in latents[0]}
    return PosteriorPredictive(outputs, bnn.likelihood, latent, mode=mode)


class PosteriorPredictive:
    """Network outputs for S weight draws at N inputs, ``outputs: [S, N, ...]``, with summaries.

    Classification (Categorical logits, or Bernoulli as two classes): ``draws`` are labels sampled
    from the posterior predictive, one per weight draw and input; ``class_frequencies()`` counts
    them; ``mean_probs()`` averages the per-draw class probabilities; total uncertainty (predictive
    entropy) = aleatoric (expected entropy) + epistemic (mutual information).
    Regression and counts (Normal, StudentT, Poisson, Custom): predictive variance = epistemic
    (variance of the per-draw mean across weight draws) + aleatoric (mean per-draw variance);
    intervals come from the predictive draws. With k targets every summary has a trailing ``[k]``.
    ``latents`` holds per-draw values of the likelihood's own latent sites (e.g. the noise);
    ``mode`` is the net mode the draws were made in (``"eval"`` or ``"train"``).
    """

    def __init__(self, outputs: torch.Tensor, likelihood: Likelihood | _Rescaled, latents: dict | None = None,
                 mode: str = "eval"):
        self.outputs = outputs
        self.likelihood = _snapshot(likelihood)
        self.latents = latents or {}
        self.kind = likelihood.kind
        self.mode = mode
        self._draws: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        """Number of weight draws S."""
        return self.outputs.shape[0]

    def distribution(self) -> dist.TorchDistribution:
        """The per-draw predictive distribution, batch shape ``[S, N]``."""
        return self.likelihood.distribution(self.outputs, self.latents)

    @property
    def draws(self) -> torch.Tensor:
        """Posterior predictive samples of y, ``[S, N]`` (sampled once, then fixed)."""
        if self._draws is None:
            d = self.distribution()
            try:
                self._draws = d.sample()
            except NotImplementedError:
                raise NotImplementedError(
                    f"the likelihood's {type(d).__name__} has no sample(), so the predictive has no draws of y (nor "
                    f"intervals from them); outputs and log_likelihood still work, or give it a sample()") from None
        return self._draws

    def select(self, rows) -> PosteriorPredictive:
        """The predictive at a subset of the inputs (an index tensor, a boolean mask or a slice), keeping the
        same weight draws (and the same predictive draws of y, if already made)."""
        out = PosteriorPredictive(self.outputs[:, rows], self.likelihood, self.latents, self.mode)
        if self._draws is not None:
            out._draws = self._draws[:, rows]
        return out

    # --- classification ------------------------------------------------------------------------
    def _need(self, kind: str) -> None:
        if self.kind != kind:
            raise ValueError(f"this summary is for {kind}; the likelihood is {self.kind}")

    def log_probs(self) -> torch.Tensor:
        """Per-draw log class probabilities ``[S, N, C]``."""
        self._need("classification")
        return cast(_ClassLikelihood, self.likelihood).log_probs(self.outputs)

    @property
    def probs(self) -> torch.Tensor:
        """Per-draw class probabilities ``[S, N, C]``."""
        return self.log_probs().exp()

    def class_frequencies(self, votes: bool = False) -> torch.Tensor:
        """``[N, C]``: share of draws predicting each class (rows sum to 1). ``votes=True`` counts each
        sampled net's argmax instead of a sampled label."""
        probs = self.probs
        labels = probs.argmax(-1) if votes else self.draws.long()
        c = probs.shape[-1]
        counts = torch.zeros(labels.shape[1], c, device=labels.device)
        counts.scatter_add_(1, labels.T.long(), torch.ones_like(labels.T, dtype=counts.dtype))
        return counts / labels.shape[0]

    def mean_probs(self) -> torch.Tensor:
        """Posterior predictive class probabilities ``[N, C]``."""
        return self.probs.mean(0)

    def predicted_class(self) -> torch.Tensor:
        """The most probable class under the posterior predictive, per input."""
        return self.mean_probs().argmax(-1)

    def predictive_entropy(self) -> torch.Tensor:
        """Total uncertainty H[E_w p(y|x,w)] per input (nats)."""
        p = self.mean_probs()
        return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)

    def expected_entropy(self) -> torch.Tensor:
        """Aleatoric part E_w H[p(y|x,w)] per input (nats)."""
        logp = self.log_probs()
        return -(logp.exp() * logp).sum(-1).mean(0)

    def mutual_information(self) -> torch.Tensor:
        """Epistemic part I[y; w | x] = predictive entropy - expected entropy (>= 0)."""
        return (self.predictive_entropy() - self.expected_entropy()).clamp_min(0.0)

    # --- regression ----------------------------------------------------------------------------
    def _regression(self) -> _RegressionLikelihood:
        self._need("regression")
        # kind "regression": a likelihood with mean() and variance() per draw
        return cast(_RegressionLikelihood, self.likelihood)

    def _loc_scale(self) -> _LocScaleLikelihood:
        lik = self._regression()
        if not all(hasattr(lik, a) for a in ("loc", "scale", "from_loc_scale")):
            raise ValueError(f"rescaling needs a location-scale likelihood (Normal, StudentT); this one is "
                             f"{type(lik).__name__}")
        return cast(_LocScaleLikelihood, lik)

    def locs(self) -> torch.Tensor:
        """Per-draw predictive means ``[S, N]`` (``[S, N, k]`` for k targets)."""
        return self._regression().mean(self.outputs, self.latents)

    def noise_scales(self) -> torch.Tensor:
        """Per-draw noise std (the square root of the per-draw variance), shaped like ``locs()``."""
        return self._regression().variance(self.outputs, self.latents).sqrt()

    def mean(self) -> torch.Tensor:
        """Predictive mean per input."""
        return self.locs().mean(0)

    def epistemic_variance(self) -> torch.Tensor:
        """Variance of the mean across weight draws, per input."""
        return self.locs().var(0, unbiased=False)

    def aleatoric_variance(self) -> torch.Tensor:
        """Mean noise variance across weight draws, per input."""
        return self._regression().variance(self.outputs, self.latents).mean(0)

    def std(self) -> torch.Tensor:
        """Predictive std per input: sqrt(epistemic + aleatoric variance)."""
        return (self.epistemic_variance() + self.aleatoric_variance()).sqrt()

    def quantiles(self, qs: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Quantiles ``[len(qs), N]`` of the posterior predictive draws."""
        q = torch.as_tensor(qs, dtype=torch.float32, device=self.outputs.device).reshape(-1)
        if ((q < 0) | (q > 1)).any():
            raise ValueError(f"quantiles must lie in [0, 1]; got {q.tolist()}")
        return torch.quantile(self.draws.float(), q, dim=0)

    def interval(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """Central credible interval of the posterior predictive at ``level``."""
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1); got {level!r}")
        lo, hi = self.quantiles([(1 - level) / 2, (1 + level) / 2])
        return lo, hi

    def targets(self, y: ArrayLike) -> torch.Tensor:
        """``y`` as a tensor on the predictive's device, rows of several dims (``[N, C, H, W]``, the targets of a net
        whose output is seen flattened per row) flattened to ``[N, C*H*W]``."""
        y = torch.as_tensor(y, device=self.outputs.device)
        return y.flatten(1) if y.dim() > 2 else y

    def log_likelihood(self, y: ArrayLike) -> torch.Tensor:
        """log p(y | x, data) per input: log of the mean over draws of the per-draw density."""
        lp = self.distribution().log_prob(self.likelihood.cast(self.targets(y)))
        return torch.logsumexp(lp, 0) - math.log(lp.shape[0])

    def rescaled(self, mean: float, std: float) -> PosteriorPredictive:
        """The same predictive in original target units, for a model trained on (y - mean) / std."""
        return PosteriorPredictive(self.outputs, _Rescaled(self._loc_scale(), mean, std), self.latents, self.mode)

    def with_noise_factor(self, factor: float) -> PosteriorPredictive:
        """The same predictive with every draw's noise std multiplied by ``factor`` (the epistemic part,
        the spread of the means across weight draws, is untouched); see :func:`pyrobnn.recalibrate.fit_noise_factor`."""
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"noise factor must be a finite number > 0; got {factor!r}")
        return PosteriorPredictive(self.outputs, _Rescaled(self._loc_scale(), 0.0, 1.0, factor), self.latents,
                                   self.mode)

    def with_temperature(self, temperature: float) -> PosteriorPredictive:
        """The same predictive with every draw's logits divided by ``temperature`` (below 1 sharpens,
        above 1 flattens); see :func:`pyrobnn.recalibrate.fit_temperature`."""
        self._need("classification")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
        return PosteriorPredictive(self.outputs / temperature, self.likelihood, self.latents, self.mode)


class _ClassLikelihood(Protocol):
    """What the classification summaries need from a likelihood."""

    def log_probs(self, out: torch.Tensor) -> torch.Tensor: ...


class _RegressionLikelihood(Protocol):
    """What the regression summaries need from a likelihood."""

    kind: str

    def mean(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor: ...

    def variance(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor: ...

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution: ...

    def cast(self, y: torch.Tensor) -> torch.Tensor: ...


class _LocScaleLikelihood(_RegressionLikelihood, Protocol):
    """A location-scale likelihood (Normal, StudentT): what rescaling needs."""

    def loc(self, out: torch.Tensor) -> torch.Tensor: ...

    def scale(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor: ...

    def from_loc_scale(self, out: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution: ...


class _Rescaled:
    """A location-scale likelihood seen in other units: loc * std + mean, noise * std * noise_factor."""

    kind = "regression"

    def __init__(self, inner: _LocScaleLikelihood, mean: float, std: float, noise_factor: float = 1.0):
        self.inner, self.shift, self.factor, self.noise_factor = inner, float(mean), float(std), float(noise_factor)

    def loc(self, out: torch.Tensor) -> torch.Tensor:
        return self.inner.loc(out) * self.factor + self.shift

    def scale(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        return self.inner.scale(out, latents) * (self.factor * self.noise_factor)

    def mean(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        return self.loc(out)

    def variance(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        return self.inner.variance(out, latents) * (self.factor * self.noise_factor) ** 2

    def from_loc_scale(self, out: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        return self.inner.from_loc_scale(out, loc, scale)

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        return self.inner.from_loc_scale(out, self.loc(out), self.scale(out, latents))

    def cast(self, y: torch.Tensor) -> torch.Tensor:
        return y.float()
