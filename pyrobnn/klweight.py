"""KL weighting for fit: the weight w of the KL term in each step's loss, ``w * KL + NLL`` (NLL scaled to the data).

``kl_weight`` in :func:`pyrobnn.fit` takes

- a number: the same w every step (1, the default, is the true ELBO);
- ``("warmup", E)``: w rising linearly over the first E epochs, ``min(1, epoch / E)`` (epoch 1 trains with 1/E);
- ``"blundell"``: Blundell et al. (2015)'s per-minibatch weights. Their step i of M minimises
  ``pi_i KL - log p(D_i | w)`` with ``pi_i = 2^(M-i) / (2^M - 1)``; fit's loss carries the data term scaled to the
  whole data set, so its KL weight is ``M * pi_i`` (summing to M over an epoch, as the constant weight 1 does);
- a callable ``(epoch, step, steps_per_epoch) -> w`` (epochs from 1, steps from 0).

The fast path scales its closed-form KL; Pyro's ELBOs get :class:`ScaleLatents` on the model and the guide, which
scales every latent site's log-density (and so the KL) by w and leaves the observed site alone.
"""
from __future__ import annotations

from typing import Callable, Union

from pyro.poutine.messenger import Messenger

KLWeight = Union[float, int, str, tuple, Callable[[int, int, int], float], None]


def schedule(spec: KLWeight) -> Callable[[int, int, int], float] | None:
    """The weight function for ``spec``; None for the true ELBO (weight 1 throughout)."""
    if spec is None or (isinstance(spec, (int, float)) and not isinstance(spec, bool) and spec == 1):
        return None
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if not spec >= 0:
            raise ValueError(f"kl_weight must be >= 0; got {spec!r}")
        w = float(spec)
        return lambda epoch, step, m: w
    if spec == "blundell":
        return lambda epoch, step, m: m * 2.0 ** (m - step - 1) / (2.0 ** m - 1)
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "warmup":
        epochs = spec[1]
        if not (isinstance(epochs, int) and epochs >= 1):
            raise ValueError(f"kl_weight=('warmup', E) needs a whole number of epochs E >= 1; got {epochs!r}")
        return lambda epoch, step, m: min(1.0, epoch / epochs)
    if callable(spec):
        return spec
    raise ValueError(f"kl_weight must be a number, ('warmup', epochs), 'blundell' or a function "
                     f"(epoch, step, steps_per_epoch) -> weight; got {spec!r}")


class ScaleLatents(Messenger):
    """Multiply the scale of every unobserved sample site by ``weight`` (Pyro's ELBOs then weight the KL)."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.weight
