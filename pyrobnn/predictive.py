"""Vectorised posterior predictive: all weight draws go through the net in one batched call
(chunked only to bound memory), never a Python loop over draws."""
from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from torch import nn

from .lift import BayesianNet

_CHUNK_BYTES = 256 * 2**20  # activations + weights held at once per chunk of draws


def _weight_draws(bnn: BayesianNet, guide, x: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """n draws of every lifted weight from the guide, ``[n, *shape]`` per site."""
    if hasattr(guide, "sample_posterior") and not isinstance(guide, pyro.infer.autoguide.AutoGuide):
        draws = guide.sample_posterior(n)
    else:
        # Any guide whose weight sites have the parameter as event shape: one trace under a plate.
        with pyro.plate("_draws", n, dim=-2):
            tr = poutine.trace(poutine.block(guide, hide_types=["param"])).get_trace(x)
        draws = {k: tr.nodes[k]["value"] for k in bnn.site_names if k in tr.nodes}
        missing = [k for k in bnn.site_names if k not in draws]
        if missing:
            raise ValueError(f"the guide has no sample site for {missing}; a guide must sample every lifted weight")
    return {k: v.reshape(n, *bnn.shapes[k]) for k, v in draws.items()}


def _floats_per_row(bnn: BayesianNet, x: torch.Tensor) -> int:
    """Activation floats one input needs in one forward pass (measured with hooks on one row)."""
    total = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel()
        elif isinstance(out, (tuple, list)):
            total[0] += sum(o.numel() for o in out if isinstance(o, torch.Tensor))

    handles = [m.register_forward_hook(hook) for m in bnn.net.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            bnn.net(x[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total[0], 1)


def auto_chunk(bnn: BayesianNet, x: torch.Tensor) -> int:
    """Draws per chunk so that activations and weights of one chunk fit in ~256 MB."""
    n_weights = sum(math.prod(s) for s in bnn.shapes.values())
    per_draw = 4 * (x.shape[0] * (_floats_per_row(bnn, x) + x[0].numel()) + 2 * n_weights)
    return max(1, _CHUNK_BYTES // per_draw)


@torch.no_grad()
def predict(bnn: BayesianNet, guide, x, num_samples: int = 1000, chunk_size: int | None = None,
            seed: int | None = None) -> PosteriorPredictive:
    """Posterior predictive of ``bnn`` under ``guide`` at inputs ``x``: ``num_samples`` weight draws."""
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    x = bnn.check_inputs(x)[0].to(bnn.device)
    if isinstance(guide, nn.Module):
        guide.to(bnn.device)
    chunk = chunk_size or auto_chunk(bnn, x)
    outs = []
    for start in range(0, num_samples, chunk):
        n = min(chunk, num_samples - start)
        outs.append(bnn.forward(x, _weight_draws(bnn, guide, x, n)))
    outputs = torch.cat(outs) if len(outs) > 1 else outs[0]
    return PosteriorPredictive(outputs, bnn.likelihood)


class PosteriorPredictive:
    """Network outputs for S weight draws at N inputs, ``outputs: [S, N, ...]``, with summaries.

    Classification (logits): ``draws`` are labels sampled from the posterior predictive, one per
    weight draw and input; ``class_frequencies()`` counts them; ``mean_probs()`` averages the
    per-draw softmax; entropies split total uncertainty into aleatoric (expected entropy) and
    epistemic (mutual information) parts.
    """

    def __init__(self, outputs: torch.Tensor, likelihood):
        self.outputs = outputs
        self.likelihood = likelihood
        self.kind = likelihood.kind
        self._draws = None

    @property
    def num_samples(self) -> int:
        return self.outputs.shape[0]

    @property
    def draws(self) -> torch.Tensor:
        """Posterior predictive samples of y, ``[S, N]`` (sampled once, then fixed)."""
        if self._draws is None:
            self._draws = self.likelihood.distribution(self.outputs).sample()
        return self._draws

    # --- classification ------------------------------------------------------------------------
    def _need_classes(self):
        if self.kind != "classification":
            raise ValueError(f"this summary is for classification; the likelihood is {self.kind}")

    @property
    def probs(self) -> torch.Tensor:
        """Per-draw class probabilities ``[S, N, C]``."""
        self._need_classes()
        return torch.softmax(self.outputs, dim=-1)

    def class_frequencies(self, votes: bool = False) -> torch.Tensor:
        """``[N, C]``: share of draws predicting each class (rows sum to 1). ``votes=True`` counts each
        sampled net's argmax instead of a sampled label."""
        self._need_classes()
        labels = self.outputs.argmax(-1) if votes else self.draws
        c = self.outputs.shape[-1]
        counts = torch.zeros(labels.shape[1], c, device=labels.device)
        counts.scatter_add_(1, labels.T.long(), torch.ones_like(labels.T, dtype=counts.dtype))
        return counts / labels.shape[0]

    def mean_probs(self) -> torch.Tensor:
        """Posterior predictive class probabilities ``[N, C]``."""
        return self.probs.mean(0)

    def predicted_class(self) -> torch.Tensor:
        return self.mean_probs().argmax(-1)

    def predictive_entropy(self) -> torch.Tensor:
        """Total uncertainty H[E_w p(y|x,w)] per input (nats)."""
        p = self.mean_probs()
        return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)

    def expected_entropy(self) -> torch.Tensor:
        """Aleatoric part E_w H[p(y|x,w)] per input (nats)."""
        logp = torch.log_softmax(self.outputs, dim=-1)
        return -(logp.exp() * logp).sum(-1).mean(0)

    def mutual_information(self) -> torch.Tensor:
        """Epistemic part I[y; w | x] = predictive entropy - expected entropy (>= 0)."""
        return (self.predictive_entropy() - self.expected_entropy()).clamp_min(0.0)

    # --- regression ----------------------------------------------------------------------------
    def _loc(self) -> torch.Tensor:
        return self.outputs.squeeze(-1) if self.outputs.shape[-1] == 1 else self.outputs

    def mean(self) -> torch.Tensor:
        """Predictive mean per input (regression)."""
        return self._loc().mean(0)

    def std(self) -> torch.Tensor:
        """Predictive std per input: epistemic (across draws) plus the likelihood noise."""
        noise = self.likelihood.scale.to(self.outputs.device) ** 2
        return (self._loc().var(0, unbiased=False) + noise).sqrt()

    def interval(self, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """Central credible interval of the posterior predictive draws at ``level``."""
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1); got {level!r}")
        d = self.draws.float()
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], device=d.device)
        lo, hi = torch.quantile(d, q, dim=0)
        return lo, hi
