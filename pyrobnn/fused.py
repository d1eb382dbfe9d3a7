"""Mean-field sampling and its KL in one autograd node.

For a Normal posterior with softplus-parameterised scales, ``w = loc + eps * softplus(rho)`` and the
closed-form KL to a Normal prior have simple derivatives:

    dKL/dloc = (loc - p_loc) / p_scale^2            dKL/dscale = scale / p_scale^2 - 1 / scale
    dscale/drho = sigmoid(rho)

Written out by hand, the draw and the KL cost a few passes over the weights forward and backward; traced by
autograd, the same expression keeps every intermediate and walks each in the backward pass (on the 478k weights
of a 784-400-400-10 MLP, a third of a training step). :func:`sample_with_kl` gives the same values and gradients
as the autograd expression in :mod:`pyrobnn.fastelbo` (tested), from fewer passes.
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable
from torch.nn.functional import softplus

Prior = float | torch.Tensor


class _SampleWithKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loc, rho, eps, p_loc, p_scale):
        scale = softplus(rho)
        draws = torch.addcmul(loc, eps, scale)
        diff = loc if isinstance(p_loc, float) and p_loc == 0.0 else loc - p_loc
        inv_var = 1.0 / p_scale**2 if isinstance(p_scale, float) else p_scale.pow(-2)
        log_scale = scale.log()
        if isinstance(p_scale, float):
            kl = 0.5 * inv_var * (torch.dot(scale, scale) + torch.dot(diff, diff)) - log_scale.sum() \
                + loc.numel() * (math.log(p_scale) - 0.5)
        else:
            kl = (0.5 * inv_var * (scale * scale + diff * diff) - log_scale + p_scale.log() - 0.5).sum()
        ctx.save_for_backward(rho, eps, scale, diff, inv_var if torch.is_tensor(inv_var) else None)
        ctx.inv_var = inv_var
        return draws, kl

    @staticmethod
    @once_differentiable
    def backward(ctx, g_draws, g_kl):
        rho, eps, scale, diff, inv_var_t = ctx.saved_tensors
        inv_var = ctx.inv_var if inv_var_t is None else inv_var_t
        if g_draws is None:
            g_draws = torch.zeros_like(eps)
        if g_kl is None:
            g_kl = torch.zeros((), dtype=scale.dtype, device=scale.device)
        g_scale = g_draws * eps
        if eps.dim() > scale.dim():  # particles along the leading dimension
            g_draws, g_scale = g_draws.sum(0), g_scale.sum(0)
        g_loc = torch.addcmul(g_draws, diff, inv_var * g_kl)
        # minus dKL/dscale = 1 / scale - scale * inv_var, times g_kl; then the chain through softplus
        neg_dkl = scale.reciprocal()
        neg_dkl = neg_dkl.add_(scale, alpha=-inv_var) if isinstance(inv_var, float) else neg_dkl.sub_(scale * inv_var)
        g_scale.addcmul_(neg_dkl, g_kl, value=-1.0)
        return g_loc, g_scale.mul_(torch.sigmoid(rho)), None, None, None


def sample_with_kl(loc: torch.Tensor, rho: torch.Tensor, eps: torch.Tensor, p_loc: Prior,
                   p_scale: Prior) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loc + eps * softplus(rho), KL(N(loc, softplus(rho)) || N(p_loc, p_scale)) summed)``.

    ``loc`` and ``rho`` are flat ``[n]``; ``eps`` is ``[n]`` or ``[P, n]`` (P particles, one KL); the prior
    is a pair of numbers or of ``[n]`` tensors.
    """
    if torch.is_tensor(p_loc) or torch.is_tensor(p_scale):
        p_loc = torch.as_tensor(p_loc, dtype=loc.dtype, device=loc.device).expand_as(loc)
        p_scale = torch.as_tensor(p_scale, dtype=loc.dtype, device=loc.device).expand_as(loc)
    else:
        p_loc, p_scale = float(p_loc), float(p_scale)
    return _SampleWithKL.apply(loc, rho, eps, p_loc, p_scale)
