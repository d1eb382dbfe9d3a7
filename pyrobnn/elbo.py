"""Pyro's ``TraceMeanField_ELBO`` made exact for guides whose sites are Deltas with a log-density.

``AutoStructured`` (pyrobnn's ``structured`` guide) draws auxiliary Normals and returns each weight as
``Delta(value, log_density)``, the log-density being the log-Jacobian of the map from the auxiliaries. Pyro 1.9's
closed-form ``kl_divergence(Delta, p)`` is ``-p.log_prob(value)``: it drops that log-density, so
``TraceMeanField_ELBO`` optimises a wrong objective for these guides, and the true ELBO gets worse while the reported
loss falls (NumPyro fixed its copy in pyro-ppl/numpyro#1625). :class:`MeanField_ELBO` adds the term back: per
site, ``KL(Delta(v, d) || p) = d - log p(v)``, which is what ``Trace_ELBO`` computes on the same draw.
"""
from __future__ import annotations

from pyro.distributions import Delta
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import torch_item


class MeanField_ELBO(TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` with the log-density of Delta guide sites counted in their KL."""

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        missing = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            q = guide_trace.nodes[name]
            if isinstance(q["fn"], Delta):
                missing = missing + scale_and_mask(q["fn"].log_density, q["scale"], q["mask"]).sum()
        if isinstance(missing, float):
            return loss, surrogate
        return loss + torch_item(missing), surrogate + missing
