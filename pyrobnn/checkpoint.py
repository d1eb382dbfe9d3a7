"""Posterior checkpoints: tensors plus JSON, written atomically, read with ``weights_only=True``.

A checkpoint holds the lifted net's state (deterministic weights, buffers, learned noise), the
guide's state (its ``state_dict`` if it is a module, plus any Pyro param-store entries it created)
and a JSON description of the net's structure and priors. No Python object is ever pickled, and
loading refuses any file that would need one.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide
from torch import nn

from . import rng
from ._types import Guide, PathLike
from .lift import BayesianNet
from .priors import TensorNormal

FORMAT = "pyrobnn-posterior/1"


def _param_store_state(guide, bnn, x_example) -> dict[str, torch.Tensor]:
    """Unconstrained values of the param-store entries the guide reads that its ``state_dict`` does not
    already hold (a module guide's own tensors, declared to Pyro, are saved once, with the module)."""
    with rng.preserved(), poutine.trace(param_only=True) as tr:
        poutine.block(guide, hide_types=["sample"])(x_example)
    unconstrained = dict(pyro.get_param_store().named_parameters())
    own = {id(p) for p in guide.parameters()} if isinstance(guide, nn.Module) else set()
    return {name: unconstrained[name].detach().cpu() for name, site in tr.trace.nodes.items()
            if site["type"] == "param" and id(unconstrained[name]) not in own}


def _version() -> str:
    from . import __version__

    return __version__


def _finite_or_refuse(tensors: dict, what: str):
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"refusing to save a non-finite {what}: {name!r} holds NaN or inf")


def model_state(bnn: BayesianNet, guide: Guide, x_example: torch.Tensor) -> dict:
    """Tensors of the lifted net and the guide (module state and param-store entries), plus JSON."""
    state: dict[str, Any] = {
        "structure": json.dumps(bnn.describe()),
        "versions": json.dumps({"pyrobnn": _version(), "torch": torch.__version__, "pyro": pyro.__version__}),
        "bnn": {k: v.detach().cpu() for k, v in bnn.state_dict().items()},
        "guide": {k: v.detach().cpu() for k, v in guide.state_dict().items()} if isinstance(guide, nn.Module) else {},
        "param_store": _param_store_state(guide, bnn, x_example[:2]),
        "priors": tensor_priors(bnn),
    }
    for key in ("bnn", "guide", "param_store"):
        _finite_or_refuse(state[key], "posterior")
    return state


def tensor_priors(bnn: BayesianNet) -> dict[str, torch.Tensor]:
    """The tensors of every :class:`pyrobnn.priors.TensorNormal` prior, as ``{"<site>.loc": ..., "<site>.scale":
    ...}`` (e.g. a previous posterior used as the prior: part of what the run trained against)."""
    out = {}
    for site, p in bnn.priors.items():
        if isinstance(p, TensorNormal):
            out[f"{site}.loc"], out[f"{site}.scale"] = p.loc.detach().cpu(), p.scale.detach().cpu()
    return out


def saved_priors(ck: dict) -> dict[str, TensorNormal]:
    """The tensor priors a checkpoint (:func:`read_checkpoint`'s result) was trained with, by site, for
    ``lift(..., priors=...)``."""
    saved = ck.get("priors", {})
    return {k[:-4]: TensorNormal(saved[k], saved[k[:-4] + ".scale"]) for k in saved if k.endswith(".loc")}


def _check_priors(ck: dict, bnn: BayesianNet) -> None:
    saved, current = ck.get("priors", {}), tensor_priors(bnn)
    for key in sorted(set(saved) | set(current)):
        site = key.rsplit(".", 1)[0]
        if key not in saved:
            raise ValueError(f"checkpoint does not match the priors: site {site!r} has a tensor prior here but "
                             f"was trained without one")
        if key not in current:
            raise ValueError(f"checkpoint does not match the priors: site {site!r} was trained with a tensor prior "
                             f"(checkpoint.saved_priors gives it) but has none here")
        if saved[key].shape != current[key].shape or not torch.equal(saved[key], current[key]):
            raise ValueError(f"checkpoint does not match the priors: the tensor prior of site {site!r} differs "
                             f"from the one it was trained with (checkpoint.saved_priors gives that one)")


def atomic_save(path: PathLike, payload: dict) -> Path:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``: a crash at
    any point leaves either the old file or the new one, never a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_posterior(path: PathLike, bnn: BayesianNet, guide: Guide, x_example: torch.Tensor,
                   meta: dict | None = None) -> Path:
    """Write bnn + guide to ``path`` atomically."""
    return atomic_save(path, {"format": FORMAT, "meta": json.dumps(meta or {}), **model_state(bnn, guide, x_example)})


def read_checkpoint(path: PathLike, fmt: str = FORMAT) -> dict:
    """Load a checkpoint's tensors and JSON without executing anything from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path.name}: refused, the file holds pickled Python objects, not just tensors "
                         f"({first[:160]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path.name}: not a readable checkpoint ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ValueError(f"{path.name}: not a {fmt} checkpoint")
    for key in ("structure", "meta", "history", "versions"):
        if key in payload:
            payload[key] = json.loads(payload[key])
    return payload


def _check_shapes(saved: dict, current: dict, what: str):
    for name, t in current.items():
        if name not in saved:
            raise ValueError(f"checkpoint does not match the {what}: it has no entry {name!r}")
        if tuple(saved[name].shape) != tuple(t.shape):
            raise ValueError(f"checkpoint does not match the {what}: {name!r} has shape "
                             f"{tuple(saved[name].shape)} in the checkpoint, {tuple(t.shape)} here")
    extra = [k for k in saved if k not in current]
    if extra:
        raise ValueError(f"checkpoint does not match the {what}: unexpected entry {extra[0]!r}")


def materialise(guide: Guide, bnn: BayesianNet, x1: torch.Tensor) -> None:
    """Create a lazy guide's parameters without touching the RNG or the net's state. A Pyro autoguide built on
    ``bnn.model`` is shown a target too (one drawn from the model), as in training: without one it would take
    ``obs`` for a latent site."""
    with rng.preserved(), poutine.block(), bnn.frozen_buffers():
        if isinstance(guide, AutoGuide):
            guide(x1, bnn.model(x1))
        else:
            guide(x1)


@torch.no_grad()
def restore_model_state(ck: dict, bnn: BayesianNet, guide: Guide, x_example: torch.Tensor) -> None:
    """Copy saved tensors into bnn and guide in place (shapes and tensor priors checked first)."""
    _check_shapes(ck["bnn"], bnn.state_dict(), "network")
    _check_priors(ck, bnn)
    bnn.load_state_dict(ck["bnn"])
    x1 = x_example[:2].to(bnn.device)  # two rows: a BatchNorm without running statistics
    adopt = getattr(guide, "adopt_state", None)  # a guide whose tensors' sizes come from the file (MCMC draws)
    if adopt is not None:
        adopt(ck["guide"])
    materialise(guide, bnn, x1)
    if isinstance(guide, nn.Module) and adopt is None:
        _check_shapes(ck["guide"], guide.state_dict(), "guide")
        guide.load_state_dict(ck["guide"])
    unconstrained = dict(pyro.get_param_store().named_parameters())
    for name, value in ck["param_store"].items():
        if name not in unconstrained:
            raise ValueError(f"checkpoint does not match the guide: it has no parameter {name!r}")
        target = unconstrained[name]
        if target.shape != value.shape:
            raise ValueError(f"checkpoint does not match the guide: {name!r} has shape {tuple(value.shape)} "
                             f"in the checkpoint, {tuple(target.shape)} here")
        target.copy_(value)


def load_posterior(path: PathLike, bnn: BayesianNet, guide: Guide, x_example: torch.Tensor) -> dict:
    """Restore bnn and guide from ``path`` in place; returns the checkpoint's ``meta`` dict.

    ``x_example`` (one input row is enough) lets lazily built guides (AutoNormal, param-store
    guides) create their parameters before the saved values are copied into them.
    """
    ck = read_checkpoint(path)
    restore_model_state(ck, bnn, guide, x_example)
    return ck["meta"]
