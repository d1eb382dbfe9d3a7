"""What ``lift`` refuses in a net, each said in one line that names the fix.

:func:`check_net` runs at ``lift``: a TorchScript module, a ``DataParallel`` wrapper, parameters a lazy module has
not yet initialised, a forward of several inputs, spectral_norm. :func:`check_final_activation` runs on the first
rows the net sees: a net that ends in a softmax (sigmoid) while the likelihood reads logits; there too
:func:`unreached` finds the lifted parameters the output does not depend on, which get a warning, as does a model
that an ELBO runs without targets (:func:`replaying`). :func:`unbatchable`
turns vmap's refusals into one line naming the routes that run one weight draw at a time.
"""
from __future__ import annotations

import inspect
import os
import re
import sys
import warnings

import pyro
import torch
from pyro.poutine.replay_messenger import ReplayMessenger
from pyro.poutine.runtime import _PYRO_STACK
from torch import nn

from .errors import Unsupported

ONE_DRAW_AT_A_TIME = "fit(num_particles=1), predict(strategy='loop'), Predictive(parallel=False)"


def check_net(net: nn.Module) -> None:
    """Refuse, in one line, a net that ``torch.func.functional_call`` cannot run with sampled weights."""
    if not isinstance(net, nn.Module):
        raise TypeError(f"lift expects an nn.Module; got {type(net).__name__}")
    if isinstance(net, torch.jit.ScriptModule):
        raise Unsupported("lift: the net is a TorchScript module (torch.jit.script / trace), whose weights "
                          "torch.func.functional_call cannot swap for sampled ones; lift the plain nn.Module")
    if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise Unsupported(f"lift: {type(net).__name__} replicates the net's own weights on every device, so it cannot "
                          f"run sampled ones; lift net.module (pyrobnn.distributed trains data-parallel)")
    lazy = [n for n, p in net.named_parameters() if nn.parameter.is_lazy(p)]
    if lazy:
        raise ValueError(f"lift: {lazy[0]!r} is a lazy module's parameter, not yet initialised, so its prior has no "
                         f"shape; run the net once on a batch (net(x[:2])) before lift")
    _check_one_input(net)
    _check_no_spectral_norm(net)


def _check_one_input(net: nn.Module) -> None:
    """pyrobnn runs a net on one tensor: a forward with several required inputs is refused in one line."""
    try:
        params = inspect.signature(net.forward).parameters.values()
    except (TypeError, ValueError):  # a builtin or scripted forward: nothing to read
        return
    required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                                              p.POSITIONAL_OR_KEYWORD)]
    if len(required) > 1:
        raise TypeError(f"lift: {type(net).__name__}.forward takes {len(required)} inputs ({', '.join(required)}); "
                        f"pyrobnn runs a net on one tensor X [rows, ...]: concatenate the inputs into X and lift a "
                        f"wrapper whose forward(x) splits it, e.g. return net(x[:, :4], x[:, 4].long())")


def _check_no_spectral_norm(net: nn.Module) -> None:
    """spectral_norm (either API) refreshes its singular-vector estimate in place on every training call: one
    estimate cannot serve a batch of weight draws (vmap refuses the in-place update), so it is refused by name."""
    for name, m in net.named_modules():
        hooked = any(type(h).__name__ == "SpectralNorm" for h in m._forward_pre_hooks.values())
        plugged = [type(p).__name__ for ps in getattr(m, "parametrizations", {}).values() for p in ps]
        if hooked or "_SpectralNorm" in plugged:
            raise Unsupported(f"lift: module {name or type(net).__name__!r} uses spectral_norm, whose power iteration "
                              f"updates one singular-vector estimate in place, which a batch of weight draws "
                              f"cannot share; remove it (the weights' prior already bounds their scale)")


# the last op of a net whose output is already probabilities, and the likelihood that reads logits
_SQUASHED = {"SoftmaxBackward0": ("Categorical", "softmax", "log_softmax"),
             "SigmoidBackward0": ("Bernoulli", "sigmoid", "logsigmoid")}


def check_final_activation(out: torch.Tensor, likelihood: str) -> None:
    """Refuse an output made by a final softmax (sigmoid) for a Categorical (Bernoulli) likelihood, which reads
    logits: the probabilities would be squashed twice and the predictive pulled towards uniform."""
    name = type(out.grad_fn).__name__ if out.grad_fn is not None else ""
    if name in _SQUASHED and _SQUASHED[name][0] == likelihood:
        _, op, log_op = _SQUASHED[name]
        raise ValueError(f"the net ends in a {op}, so it returns probabilities, but {likelihood} reads logits (the "
                         f"{op} would be applied twice); drop the final {op} (the likelihood applies it) or end in "
                         f"{log_op}")


def unreached(out: torch.Tensor, params: dict[str, torch.Tensor]) -> list[str]:
    """Names of ``params`` the net's output ``out`` (made with grad on) does not depend on through autograd: a layer
    the forward never calls, or one it runs under ``torch.no_grad()``. Training would leave their posterior at the
    prior, the KL term being the only gradient they get."""
    wanted = {n: p for n, p in params.items() if p.requires_grad}
    if not wanted:
        return []
    if not out.requires_grad:
        return list(wanted)
    grads = torch.autograd.grad(out.sum(), list(wanted.values()), allow_unused=True)
    return [n for n, g in zip(wanted, grads) if g is None]


def warn_unreached(names: list[str]) -> None:
    """One warning line naming the parameters the output does not reach (see :func:`unreached`)."""
    if names:
        module = names[0].rpartition(".")[0] or names[0]
        shown = ", ".join(repr(n) for n in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        warnings.warn(f"pyrobnn: the net's output does not depend on {shown} (a layer the forward does not call, or "
                      f"one it runs under torch.no_grad()), so training leaves them at their prior; keep them "
                      f"fixed with priors={{{module!r}: None}} or requires_grad_(False)", UserWarning,
                      stacklevel=_user_stacklevel())


def replaying() -> bool:
    """True inside an ELBO's evaluation of the model: the model replayed against a guide's trace (Pyro's
    ``Predictive`` conditions on the guide's draws instead)."""
    return any(isinstance(m, ReplayMessenger) for m in _PYRO_STACK)


def warn_no_targets() -> None:
    """The model was run by an ELBO without targets: nothing is observed, so an SVI loop fits the prior."""
    warnings.warn("pyrobnn: the model was run by an ELBO with no targets (svi.step(x) without y?): nothing is "
                  "observed, so training fits the prior only; pass them, svi.step(x, y)", UserWarning,
                  stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside pyrobnn, Pyro and torch, so that a warning names the user's
    line (an ``svi.step``, a ``fit``)."""
    level, frame = 2, sys._getframe(2)  # 1 is the function that warns, 2 its caller
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_LIBRARIES):
        level, frame = level + 1, frame.f_back
    return level


_LIBRARIES = tuple(os.path.dirname(os.path.abspath(m.__file__ or "")) for m in (sys.modules[__package__], pyro, torch))


def unbatchable(e: RuntimeError, draws: int) -> Exception:
    """vmap's refusals over ``draws`` weight draws, said in one line with the routes that run one weight draw at a
    time; other errors as they are."""
    text = str(e)
    shared = re.match(r"output with shape \[(.*?)\] doesn't match the broadcast shape \[(\d+)(?:, )?(.*?)\]", text)
    if shared and int(shared[2]) == draws and shared[1] == shared[3]:  # one tensor, written from every draw
        why = (f"the net updates a tensor of shape [{shared[1]}] in place from each weight draw (a running statistic "
               f"in a buffer, say), which the draws cannot share: keep it out of the forward, or use an nn.BatchNorm "
               f"(its running statistics get one update per pass)")
    elif text.startswith("Batching rule not implemented for "):
        why = f"torch has no vmap rule for {text.split()[5].rstrip('.')}, which the net calls"
    elif "data-dependent control flow" in text:
        why = "the net's forward branches on a tensor's value (a Python if, or .item()): write it with torch.where"
    elif "must override the setup_context staticmethod" in text:
        why = ("the net calls a torch.autograd.Function without setup_context: give it one and "
               "generate_vmap_rule = True (torch's 'Extending torch.func with autograd.Function')")
    else:
        return e
    return Unsupported(f"{why}; vmap cannot batch weight draws through it, so run one draw at a time: "
                       f"{ONE_DRAW_AT_A_TIME}")
