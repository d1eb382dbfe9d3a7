"""Lower-variance gradient estimators for the mean-field ELBO of Linear/Conv nets.

- ``"local"``: local reparameterisation (Kingma, Salimans & Welling 2015). With a factorised Normal
  posterior the pre-activations of a Linear/Conv layer are Normal given its input; sample them
  instead of the weights, independently per example.
- ``"flipout"`` (Wen et al. 2018): one weight perturbation per minibatch, decorrelated across
  examples by random sign flips of the layer's input and output.

Both estimate the same expected log-likelihood as sampling whole weight sets (``"reparam"``), with
less variance when the batch is large. They change only how the layers are run: while the loss is
computed, each Bayesian layer's ``forward`` is replaced by a stochastic one reading the guide's
means and scales; particles are folded into the batch (every row gets its own noise anyway).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from . import rng
from .errors import Unsupported

if TYPE_CHECKING:
    from .autoguides import MeanFieldNormal
    from .lift import BayesianNet

ESTIMATORS = ("reparam", "local", "flipout")
_OPS: dict[type[nn.Module], Callable[..., torch.Tensor]] = {
    nn.Linear: F.linear, nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


def bayesian_layers(bnn: BayesianNet) -> dict[str, dict[str, str]]:
    """{module name: {"weight": site, "bias": site?}} for every lifted parameter; raises if one of
    them does not belong to a Linear or Conv layer."""
    modules = dict(bnn.net.named_modules())
    layers: dict[str, dict[str, str]] = {}
    for site in bnn.net_sites:
        mod_name, _, pname = site.rpartition(".")
        if type(modules.get(mod_name)) not in _OPS or pname not in ("weight", "bias"):
            raise Unsupported(f"local/flipout estimators need every Bayesian parameter in a Linear or Conv "
                             f"layer; {site!r} is not")
        layers.setdefault(mod_name, {})[pname] = site
    if any("weight" not in s for s in layers.values()):
        raise Unsupported("local/flipout estimators need each Bayesian layer's weight to be Bayesian")
    return layers


def check_rows_independent(bnn: BayesianNet, x: torch.Tensor) -> None:
    """Refuse a net whose output rows depend on each other (BatchNorm in train mode, attention across the batch):
    local and flipout noise is drawn per row, which samples another model than one weight set shared by the rows.
    Changes row 0 of ``x[:3]`` (to ``x[3]``) and watches rows 1 and 2, in train mode, with the same random stream."""
    if x.shape[0] < 4 or torch.equal(x[0], x[3]):
        return
    other = x[:3].clone()
    other[0] = x[3]
    was = bnn.net.training
    outs = []
    try:
        with torch.no_grad(), rng.preserved(), bnn.frozen_buffers():
            bnn.net.train()
            for rows in (x[:3], other):
                torch.manual_seed(0)  # the same dropout masks in both passes
                outs.append(bnn.scored(bnn.net(rows)))
    finally:
        bnn.net.train(was)
    if not torch.allclose(outs[0][1:], outs[1][1:], rtol=1e-4, atol=1e-6):
        raise Unsupported("local/flipout estimators draw each row's weights independently, but the net's output rows "
                          "depend on each other (changing row 0 changed rows 1-2: BatchNorm in train mode, attention "
                          "across the batch); use estimator='reparam'")


def _conv_kwargs(m) -> dict:
    if isinstance(m, nn.Linear):
        return {}
    if m.padding_mode != "zeros":
        raise Unsupported("local/flipout estimators support zero padding only")
    return {"stride": m.stride, "padding": m.padding, "dilation": m.dilation, "groups": m.groups}


def _stochastic_forward(m, sites, guide, estimator):
    op, kw = _OPS[type(m)], _conv_kwargs(m)
    w_site, b_site = sites["weight"], sites.get("bias")

    def forward(x):
        mu_w, s_w = guide.loc[w_site], guide.scale(w_site)
        if b_site is not None:
            mu_b, s_b = guide.loc[b_site], guide.scale(b_site)
        else:
            mu_b, s_b = m.bias, None
        mean = op(x, mu_w, mu_b, **kw)
        if estimator == "local":
            var = op(x * x, s_w * s_w, None if s_b is None else s_b * s_b, **kw)
            return mean + (var + 1e-16).sqrt() * torch.randn_like(mean)
        # flipout: a shared perturbation, signs flipped per example on input and output
        sign_in = torch.empty_like(x).bernoulli_(0.5).mul_(2).sub_(1)
        sign_out = torch.empty_like(mean).bernoulli_(0.5).mul_(2).sub_(1)
        out = mean + op(x * sign_in, s_w * torch.randn_like(s_w), None, **kw) * sign_out
        if s_b is not None:
            bias_noise = s_b * torch.randn_like(s_b)
            out = out + (bias_noise if isinstance(m, nn.Linear) else bias_noise.reshape(-1, *[1] * (out.dim() - 2)))
        return out

    return forward


@contextmanager
def stochastic_layers(bnn: BayesianNet, guide: MeanFieldNormal, estimator: str) -> Iterator[None]:
    """Within the block, ``bnn.net(x)`` runs every Bayesian layer with ``estimator``."""
    modules = dict(bnn.net.named_modules())
    patched = []
    try:
        for name, sites in bayesian_layers(bnn).items():
            m = modules[name]
            m.forward = _stochastic_forward(m, sites, guide, estimator)
            patched.append(m)
        yield
    finally:
        for m in patched:
            del m.forward
