"""fit: stochastic variational inference for a lifted net and a guide.

Each step computes a true Pyro ELBO (``Trace_ELBO`` or ``TraceMeanField_ELBO``, optionally with
vectorised particles) via ``differentiable_loss`` and takes one step of a single torch optimiser
over every trainable tensor (guide parameters, Pyro param-store entries the guide creates, and
the lifted net's deterministic parameters).

Reliability: with ``checkpoint=path`` the full training state (posterior, optimiser, epoch and
position inside it, RNG states, history) is written atomically every ``checkpoint_every`` epochs
and when SIGINT/SIGTERM arrives; ``resume=True`` continues from it and reproduces the
uninterrupted run exactly. A non-finite ELBO or gradient restores the state at the start of the
epoch, names the step and the site that went bad, and retries with a lower learning rate
(``max_retries`` times) before raising :class:`DivergenceError`.
"""
from __future__ import annotations

import math

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from .batches import Batches, gathered
from .distributed import world
from .elbo import MeanField_ELBO
from .errors import Unsupported
from .estimators import check_rows_independent
from .fastelbo import MeanFieldELBO, supports
from .guard import DivergenceError
from .history import History
from .klweight import KLWeight, schedule
from .lift import BayesianNet
from .recurrent import CarriedState
from .trainer import STATE_FORMAT, LoopOptions, Trainer  # noqa: F401  (STATE_FORMAT: for readers of the state)
from .trainer import StopSignal as _StopSignal  # noqa: F401  (tests patch it here)

__all__ = ["fit", "History", "DivergenceError", "make_elbo", "resolve_device"]

ELBOS = {"trace": Trace_ELBO, "meanfield": MeanField_ELBO}  # TraceMeanField_ELBO, exact for Delta sites
OPTIMIZERS = ("adam", "clipped_adam")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device to train on (CPU when None); a clear error when CUDA is asked for and absent."""
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} requested but no CUDA GPU is available; use device='cpu'")
    return dev


def make_elbo(loss, num_particles: int = 1, vectorize_particles: bool = True):
    """A Pyro ELBO from its name (``"trace"``, ``"meanfield"``); an ELBO instance is returned as is."""
    if not isinstance(loss, str):
        return loss
    if loss not in ELBOS:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(ELBOS)}")
    if int(num_particles) < 1:
        raise ValueError(f"num_particles must be >= 1; got {num_particles}")
    return ELBOS[loss](num_particles=int(num_particles), vectorize_particles=bool(vectorize_particles)
                       and num_particles > 1, max_plate_nesting=1)


def fit(bnn: BayesianNet, guide, data, *, epochs: int = 100, lr: float = 1e-2, batch_size: int | None = None,
        loss="meanfield", num_particles: int = 1, vectorize_particles: bool = True, optimizer: str = "adam",
        clip_norm: float = 10.0, val_data=None, val_every: int = 1, val_samples: int = 100,
        seed: int | None = None, device=None, progress: bool = True, validate_model: bool = False,
        checkpoint=None, checkpoint_every: int = 1, resume: bool = False, max_retries: int = 2,
        retry_lr_factor: float = 0.5, lr_decay: float = 1.0, fast: bool = True,
        estimator: str = "reparam", tbptt: int | None = None, callback=None, keep_best: str | None = None,
        sync_every: int | None = None, kl_weight: KLWeight = None) -> History:
    """Train ``guide`` (and any deterministic parameters of ``bnn``) by SVI on ``data``.

    The net trains in train mode (BatchNorm batch statistics, Dropout on) and is left in the mode it
    was in; validation predicts in eval mode.

    data: ``(X, y)`` tensors (minibatched with ``batch_size``), a ``TensorDataset`` of the two, or a DataLoader of
    (x, y) batches. Labels may be integers or booleans.
    loss: ``"meanfield"`` (TraceMeanField_ELBO, analytic KL where available) or ``"trace"``
    (Trace_ELBO), or an ELBO instance. ``num_particles`` > 1 draws that many weight samples per
    step, vectorised by default (the multi-sample ELBO). ``val_data`` = (X, y) (or a DataLoader of pairs) is
    scored every ``val_every`` epochs. ``optimizer="clipped_adam"`` clips gradients to ``clip_norm`` and multiplies
    the learning rate by ``lr_decay`` after every step.
    fast: with ``loss="meanfield"``, a MeanFieldNormal guide and Normal priors, compute the same
    estimator as TraceMeanField_ELBO without Pyro's tracing (:mod:`pyrobnn.fastelbo`).
    estimator: ``"reparam"`` (whole weight sets), ``"local"`` (local reparameterisation) or
    ``"flipout"`` for Linear/Conv nets (:mod:`pyrobnn.estimators`).
    tbptt: truncated backpropagation through time in chunks of this many steps, for a recurrent net
    on ``(X [N, T, ...], y [N, T])`` whose output has one row per (sequence, step) in row-major order
    (e.g. ``logits.reshape(-1, C)``); one weight sample per minibatch and chunk, the recurrent state
    carried across the chunks of a minibatch (detached), the KL weighted once per minibatch and
    chunk. Needs one particle and the plain estimator.
    keep_best: a validation metric (``"nll"``, ``"ece"``, ``"brier"``, ``"accuracy"`` for classifiers,
    ``"rmse"`` for regression): at the end, restore the posterior of the validated epoch that scored
    best on it (early stopping; ``history.best_epoch`` names it). Needs ``val_data``.
    callback: called with each epoch's record (a dict: loss, its nll and kl parts — per-step means on
    the fast path, a one-draw estimate on the epoch's last minibatch with Pyro's ELBOs — and validation
    metrics), e.g. :class:`pyrobnn.runs.EpochLog` writing CSV and TensorBoard scalars.
    Under ``torchrun`` (torch.distributed initialised) each process trains on its shard of every
    minibatch and the result equals one process on the same batches (:mod:`pyrobnn.distributed`);
    pass the same ``seed`` everywhere; rank 0 writes the checkpoint.
    kl_weight: the weight w of the KL term, ``w * KL + NLL``: None or 1 (the true ELBO, the default), a number,
    ``("warmup", E)`` (linear over the first E epochs), ``"blundell"`` (Blundell et al. 2015's per-minibatch
    weights) or a function ``(epoch, step, steps_per_epoch) -> w`` (:mod:`pyrobnn.klweight`); each record then
    holds the epoch's mean ``kl_weight``, and ``kl`` stays the unweighted KL.
    sync_every: read the running loss (progress bar) and the divergence guard's verdict every this many steps;
    by default once per epoch, so that a training step reads nothing back from the device.
    checkpoint / checkpoint_every / resume: see the module docstring. Returns a :class:`History`
    (``history.interrupted`` is True if a signal stopped training; the state is then saved).
    """
    schedule(kl_weight)  # a one-line error for a bad weight before anything is built
    _check_options(bnn, epochs=epochs, lr=lr, optimizer=optimizer, lr_decay=lr_decay, sync_every=sync_every,
                   resume=resume, checkpoint=checkpoint, keep_best=keep_best, val_data=val_data, seed=seed)
    bnn.check_guide(guide)
    dev = resolve_device(device)
    if seed is not None:
        pyro.set_rng_seed(seed)
    bnn.to(dev)
    was_training = bnn.training
    bnn.train()  # BatchNorm batch statistics, Dropout on; validation predicts in eval mode
    if isinstance(guide, nn.Module):
        guide.to(dev)
    elbo = _choose_elbo(bnn, guide, loss, num_particles, vectorize_particles, fast, estimator)
    carry = None
    if tbptt is not None:
        if num_particles != 1 or estimator != "reparam" or isinstance(data, torch.utils.data.DataLoader):
            raise Unsupported("tbptt needs num_particles=1, estimator='reparam' and (X, y) tensors")
        carry = CarriedState(bnn.net)
    batches = Batches(bnn, data, batch_size, dev, tbptt, carry)
    if estimator != "reparam" and batches.loader is None:
        check_rows_independent(bnn, batches.x)
    val = None if val_data is None else _validation_data(bnn, val_data, tbptt, dev)
    opts = LoopOptions(epochs=int(epochs), lr=lr, optimizer=optimizer, clip_norm=clip_norm, lr_decay=lr_decay,
                       val_every=val_every, val_samples=val_samples, checkpoint=checkpoint,
                       checkpoint_every=checkpoint_every, resume=resume, max_retries=max_retries,
                       retry_lr_factor=retry_lr_factor, keep_best=keep_best, callback=callback, progress=progress,
                       validate_model=validate_model, sync_every=sync_every,
                       kl_weight=kl_weight)
    try:
        return Trainer(bnn, guide, elbo, batches, dev, opts, val=val, carry=carry).run()
    finally:
        bnn.train(was_training)


def _check_options(bnn: BayesianNet, *, epochs, lr, optimizer, lr_decay, sync_every, resume, checkpoint, keep_best,
                   val_data, seed) -> None:
    """One-line errors for options that cannot work, before anything is built."""
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
    if lr_decay != 1.0 and optimizer != "clipped_adam":
        raise ValueError("lr_decay needs optimizer='clipped_adam'")
    if not 0 < lr_decay <= 1:
        raise ValueError(f"lr_decay must lie in (0, 1]; got {lr_decay!r}")
    if sync_every is not None and int(sync_every) < 1:
        raise ValueError(f"sync_every must be >= 1; got {sync_every}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path of the training state>")
    if keep_best is not None:
        allowed = ["rmse"] if bnn.likelihood.kind == "regression" else ["accuracy", "brier", "ece", "nll"]
        if val_data is None or keep_best not in allowed:
            raise ValueError(f"keep_best needs val_data and, for this likelihood, one of {allowed}; got {keep_best!r}")
    if world()[1] > 1 and seed is None:
        raise ValueError("fit under torch.distributed needs seed=... (every process must draw the same weights)")


def _choose_elbo(bnn: BayesianNet, guide, loss, num_particles, vectorize_particles, fast, estimator):
    """Pyro's ELBO, or the same estimator without Pyro's tracing where it applies (tested equal)."""
    elbo = make_elbo(loss, num_particles, vectorize_particles)
    if estimator != "reparam" and not (loss == "meanfield" and supports(bnn, guide)):
        raise Unsupported(f"estimator={estimator!r} needs loss='meanfield', a MeanFieldNormal guide and Normal priors")
    if estimator != "reparam" or (
            fast and loss == "meanfield" and (vectorize_particles or num_particles == 1) and supports(bnn, guide)):
        elbo = MeanFieldELBO(num_particles, estimator)
    return elbo


def _validation_data(bnn: BayesianNet, val_data, tbptt, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked validation inputs and targets on the device (sequences scored whole under tbptt); a DataLoader's
    batches are gathered."""
    if isinstance(val_data, torch.utils.data.DataLoader):
        val_data = gathered(val_data)
    if tbptt is not None:  # per-step targets as rows
        val_x, val_y = bnn.check_inputs(val_data[0], name="val X")[0], torch.as_tensor(val_data[1]).reshape(-1)
        val_y = bnn.likelihood.check(val_y, val_y.numel(), bnn.row_shape(val_x))
    else:
        val_x, val_y = bnn.check_inputs(*val_data, name="val X")
    return val_x.to(dev), val_y.to(dev)
