"""lift: turn the parameters of any nn.Module into Pyro sample sites with priors.

The user's net is never modified or copied layer by layer. Its forward is run with sampled weights
through ``torch.func.functional_call``; when the weights carry leading sample dimensions (vectorised
ELBO particles, vectorised predictive draws) the call is mapped over them with ``torch.func.vmap``,
so one code path serves every Linear/Conv/normalisation layer the net is made of.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Union, overload

import numpy as np
import pyro
import torch
from torch import nn
from torch.func import functional_call, vmap

from ._types import ArrayLike
from .data import check_features, check_tokens
from .likelihoods import Custom, Likelihood, make_likelihood
from .netcheck import (
    check_final_activation,
    check_net,
    replaying,
    unbatchable,
    unreached,
    warn_no_targets,
    warn_unreached,
)
from .normalization import per_draw_statistics, training_batch_norms, update_running
from .paramstore import expose
from .priors import LearnedNormal, Normal, Prior, PriorSpec, TensorNormal, make_prior
from .transformable import batchable, pure_embeddings, stateful_embeddings

#: A likelihood: a :mod:`pyrobnn.likelihoods` instance or a name (``"categorical"``, ``"normal"``).
LikelihoodSpec = Union[Likelihood, str]


def _resolve_priors(net: nn.Module, default: Prior | None,
                    overrides: Mapping[str, PriorSpec]) -> dict[str, Prior | None]:
    """Per-parameter prior: the longest matching key of ``overrides`` (a parameter or module name,
    ``""`` for the whole net) wins; parameters matched by none get ``default``. A frozen parameter
    (``requires_grad=False``, e.g. a pretrained backbone) stays fixed unless a key naming it or its module
    gives it a prior."""
    params = dict(net.named_parameters())
    names = list(params)
    modules = {n for n, _ in net.named_modules()}
    for key in overrides:
        if key not in modules and key not in names:
            raise ValueError(f"priors: {key!r} names no module or parameter of the net; "
                             f"parameters are {names}")
    out = {}
    for name in names:
        chosen: PriorSpec
        best, chosen = -1, default
        for key, spec in overrides.items():
            if key == "" or name == key or name.startswith(key + "."):
                if len(key) > best:
                    best, chosen = len(key), spec
        frozen = not params[name].requires_grad and best <= 0  # 0: only the whole-net key "" matched
        out[name] = None if frozen else make_prior(chosen)
    return out


class BayesianNet(nn.Module):
    """A lifted net. ``model(x, y=None, data_size=None)`` is the Pyro model.

    Sites: one ``pyro.sample`` per stochastic parameter, named as in ``net.named_parameters()``
    (e.g. ``"0.weight"``), with the parameter's shape as event shape; then ``"obs"`` from the
    likelihood inside the data plate. Parameters with prior ``None`` stay ordinary trainable
    parameters of the net (point estimates), declared to Pyro as ``pyro.param`` sites
    ``"bnn$$$net.<name>"`` (a learned noise: ``"bnn$$$likelihood.raw_scale"``) so a plain
    ``pyro.infer.SVI`` loop trains them too.

    The net runs in the mode it is in (``bnn.train()`` / ``bnn.eval()``): BatchNorm in train mode
    normalises each weight draw by its own batch statistics and updates the running statistics once
    per forward pass (:mod:`pyrobnn.normalization`); Dropout draws its masks independently per draw.
    """

    def __init__(self, net: nn.Module, prior: PriorSpec = None, likelihood: LikelihoodSpec = "categorical",
                 priors: Mapping[str, PriorSpec] | None = None, n_features: int | None = None,
                 output: str | int | None = None):
        super().__init__()
        self.output = output  # the part of a tuple / dict output that the likelihood scores
        check_net(net)
        self.net = net
        self._stateful_embeddings = stateful_embeddings(net)  # max_norm / sparse: run without their in-place effects
        self._warned_no_targets = False
        self._integer_input: bool | None = None  # X of integers the net indexes with (decided on the first X)
        self.likelihood: Likelihood = make_likelihood(likelihood).to(_float_dtype(net))  # noise in the net's dtype
        default = make_prior(Normal() if prior is None else prior)
        self.priors = {k: p for k, p in _resolve_priors(net, default, priors or {}).items() if p is not None}
        if not self.priors:
            raise ValueError("lift: every parameter was kept deterministic (prior None, or frozen with "
                             "requires_grad=False); nothing to make Bayesian")
        params = dict(net.named_parameters())
        self.shapes = {k: params[k].shape for k in self.priors}
        # learned prior scales (LearnedNormal): one log-sigma per module, shared by its weight and bias
        self._scale_key = {k: (k.rpartition(".")[0] or "net").replace(".", "_") for k, p in self.priors.items()
                           if isinstance(p, LearnedNormal)}
        self.prior_log_scales = nn.ParameterDict()
        for k, key in self._scale_key.items():  # a module's first learned site sets its starting sigma
            if key not in self.prior_log_scales:
                start = math.log(self.priors[k].scale)  # type: ignore[attr-defined]
                self.prior_log_scales[key] = nn.Parameter(torch.tensor(start, dtype=self.dtype))
        self.net_sites = list(self.priors)
        for name, (shape, p) in self.likelihood.latents().items():  # e.g. an inferred noise scale
            self.priors[name], self.shapes[name] = p, torch.Size(shape)
        first = _first_layer(net)  # a Linear fixes the feature count, an Embedding takes token ids
        self.n_features = n_features if n_features is not None else \
            (first.in_features if isinstance(first, nn.Linear) else None)
        self._features_guessed = n_features is None and self.n_features is not None
        # token ids when the first layer is an Embedding, unless n_features says X holds float features
        self.vocab_size = first.num_embeddings if isinstance(first, _EMBEDDINGS) and n_features is None else None
        self._row_shape: tuple[int, ...] | None = None
        self.out_row_shape: tuple[int, ...] = ()  # the net's own output per row, once measured

    # --- structure -----------------------------------------------------------------------------
    @property
    def site_names(self) -> list[str]:
        """Every sample site of the model but ``"obs"``: the lifted parameters, then the likelihood's latents."""
        return list(self.priors)

    def named_point_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Trainable tensors that are not sampled, by name: deterministic net parameters
        (``"net.<name>"``), a learned likelihood noise (``"likelihood.raw_scale"``)."""
        ps = [(f"net.{n}", p) for n, p in self.net.named_parameters() if n not in self.priors and p.requires_grad]
        ps += [(f"prior.{n}", p) for n, p in self.prior_log_scales.items()]
        return ps + [(f"likelihood.{n}", p) for n, p in self.likelihood.named_parameters() if p.requires_grad]

    def prior_scales(self) -> dict[str, float]:
        """The current sigma of every learned prior (:class:`pyrobnn.priors.LearnedNormal`), by site."""
        return {k: float(self.prior_log_scales[key].detach().exp()) for k, key in self._scale_key.items()}

    def prior_scale_tensor(self, site: str) -> torch.Tensor | None:
        """The learned prior sigma of ``site`` (a differentiable scalar), or None for a fixed prior."""
        key = self._scale_key.get(site)
        return None if key is None else self.prior_log_scales[key].exp()

    def normal_prior(self, site: str) -> tuple[Any, Any] | None:
        """``(loc, scale)`` of a Normal-family prior (Normal, TensorNormal, LearnedNormal; a learned sigma as a
        differentiable tensor), or None for any other prior: what closed-form computations (KL, log prior) use."""
        p = self.priors[site]
        if type(p) not in (Normal, TensorNormal, LearnedNormal):
            return None
        sigma = self.prior_scale_tensor(site)
        return getattr(p, "loc"), (getattr(p, "scale") if sigma is None else sigma)

    def prior_distribution(self, site: str) -> pyro.distributions.TorchDistribution:
        """The prior of one sample site over its whole shape (a learned sigma at its current value)."""
        prior, shape = self.priors[site], self.shapes[site]
        sigma = self.prior_scale_tensor(site)
        if sigma is None:
            return prior.distribution(shape, self.device, self.dtype)
        loc = torch.tensor(float(getattr(prior, "loc")), device=sigma.device, dtype=sigma.dtype)
        return pyro.distributions.Normal(loc, sigma).expand(shape).to_event(len(shape))

    def check_guide(self, guide: Any) -> None:
        """A one-line error for a guide that cannot serve this net: not a callable, or built for another net (a
        guide that names its sites and their shapes, e.g. :class:`pyrobnn.MeanFieldNormal`)."""
        if not callable(guide):
            raise TypeError(f"guide must be a Pyro guide for this net, e.g. pyrobnn.MeanFieldNormal(bnn) or "
                            f"pyrobnn.auto_normal(bnn); got {type(guide).__name__}")
        sites, shapes = getattr(guide, "sites", None), getattr(guide, "shapes", None)
        if isinstance(sites, list) and isinstance(shapes, dict):
            theirs = {k: tuple(shapes[k]) for k in sites if k in shapes}
            ours = {k: tuple(self.shapes[k]) for k in self.site_names}
            if theirs != ours:
                diff = sorted(set(theirs.items()) ^ set(ours.items()))[:3]
                raise ValueError(f"the guide was built for another net (sites differ: {diff}); build it from this "
                                 f"one, e.g. {type(guide).__name__}(bnn)")

    def point_parameters(self) -> list[nn.Parameter]:
        """Trainable tensors that are not sampled: deterministic net parameters, likelihood noise."""
        return [p for _, p in self.named_point_parameters()]

    @contextmanager
    def frozen_buffers(self) -> Iterator[None]:
        """Within the block the net's buffers (BatchNorm running statistics) may change; on exit they
        are restored. For evaluations that must not count as training (predictions, diagnostics)."""
        saved = [(b, b.clone()) for b in self.net.buffers()]
        try:
            yield
        finally:
            with torch.no_grad():
                for b, v in saved:
                    b.copy_(v)

    def row_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The net's output per input row as the likelihood sees it, ``(k,)``: ``(1,)`` for a net that returns
        ``[N]``, ``(C*H*W,)`` for one that returns ``[N, C, H, W]``; measured once on ``x[:2]`` in eval mode
        without changing any state (the unflattened shape is kept in ``out_row_shape``). A net ending in a softmax
        (sigmoid) for a Categorical (Bernoulli) likelihood, which reads logits, is refused here, and lifted parameters
        the output does not depend on are named in a warning."""
        if self._row_shape is None:
            row = tuple(self._pick(self._probe(x, check=True)).shape[1:]) or (1,)
            if len(row) > 1 and self.likelihood.kind == "classification" and not isinstance(self.likelihood, Custom):
                raise ValueError(f"{type(self.likelihood).__name__} scores one label per row, but the net returns "
                                 f"{list(row)} per row; for a label per position (segmentation) use "
                                 f"likelihoods.Custom on the flattened output, e.g. Categorical(logits="
                                 f"out.unflatten(-1, ({row[0]}, -1)).transpose(-1, -2)).to_event(1)")
            self.out_row_shape, self._row_shape = row, (math.prod(row),)
        return self._row_shape

    def _flat_targets(self, y: ArrayLike, x: torch.Tensor) -> ArrayLike:
        """Targets of a net with several output dims per row, ``[N, C, H, W]`` (or one label per position,
        ``[N, H, W]``), flattened per row as the net's output is."""
        self.row_shape(x)
        row, shape = self.out_row_shape, tuple(getattr(y, "shape", ()))[1:]
        if len(row) > 1 and shape in (row, row[1:]):
            return torch.as_tensor(y).flatten(1)
        return y

    def _probe(self, x: torch.Tensor, check: bool = False) -> Any:
        """The plain net on ``x[:2]`` (two rows, for layers that normalise by batch statistics even in eval mode)
        in eval mode without any change of state; with ``check``, the output's last op and its dependence on the
        lifted parameters are checked (:mod:`pyrobnn.netcheck`)."""
        was = self.net.training
        try:
            with torch.set_grad_enabled(check), self.frozen_buffers():
                self.net.eval()
                row = x[:2].to(self.device)
                out = self.net(row.to(self.dtype) if row.is_floating_point() else row)
                if check:  # before the buffers are put back, which autograd would see as in-place changes
                    scored = self._pick(out)
                    check_final_activation(scored, type(self.likelihood).__name__)
                    params = dict(self.net.named_parameters())
                    warn_unreached(unreached(scored, {k: params[k] for k in self.net_sites}))
                return out
        finally:
            self.net.train(was)

    def initial_values(self) -> dict[str, torch.Tensor]:
        """Current values of every site: the net's weights, the likelihood's starting latents."""
        params = dict(self.net.named_parameters())
        init = {k: params[k].detach() for k in self.net_sites}
        return {**init, **{k: v.to(self.device) for k, v in self.likelihood.initial_latents().items()}}

    def describe(self) -> dict:
        """JSON-able structure: sites, shapes, priors, likelihood (for run directories and checkpoints)."""
        params = dict(self.net.named_parameters())
        return {
            "net": type(self.net).__name__,
            "sites": {k: {"shape": list(self.shapes[k]), "prior": p.config()} for k, p in self.priors.items()},
            "deterministic": [k for k in params if k not in self.priors],
            "likelihood": self.likelihood.config(),
            "n_features": self.n_features,
            **({} if self.output is None else {"output": self.output}),
        }

    @property
    def device(self) -> torch.device:
        """The device of the net's first parameter or buffer (CPU if it has none)."""
        for t in list(self.net.parameters()) + list(self.net.buffers()):
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The float dtype of the net's parameters (float32 unless the net was cast, e.g. ``net.double()``):
        weights, priors, inputs and targets follow it."""
        return _float_dtype(self.net)

    # --- the Pyro model ----------------------------------------------------------------------------
    def sample_weights(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw every stochastic parameter from its prior (``pyro.sample`` sites). Arguments are
        ignored, so this is also the weights-only model that automatic guides are built on."""
        return {name: pyro.sample(name, self.prior_distribution(name)) for name in self.priors}

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the net with ``weights``; leading sample dims of the weights lead the output.

        weights[name] has shape ``[*lead, *param_shape]`` with the same ``lead`` for all (or
        broadcastable); the output is ``[*lead, *net(x).shape]``, with a trailing axis added to a
        net output of one value per row (``[N]`` becomes ``[N, 1]``). With no leading dims the net
        runs as it is (fused kernels included); with them, the net runs on ops ``vmap`` can batch
        (:func:`pyrobnn.transformable.batchable`: written-out recurrences, a composite EmbeddingBag, attention off
        torch's fused path) and BatchNorm in train mode on its per-draw statistics (:mod:`pyrobnn.normalization`).
        """
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)  # float32 features for a float64 net, as check_inputs casts them
        weights = {k: weights[k] for k in self.net_sites if k in weights}
        first = next(iter(weights.values()), None)
        if first is not None and first.dtype != self.dtype and first.is_floating_point():
            raise ValueError(f"the weight draws are {first.dtype} but the net is {self.dtype} (cast after its guide "
                             f"was built?): build the guide, or load the posterior, after casting the net")
        leads = [w.shape[: w.dim() - len(self.shapes[k])] for k, w in weights.items()]
        lead = torch.broadcast_shapes(*leads) if leads else torch.Size()
        if len(lead) == 0:
            call = _traced_call if torch.jit.is_tracing() else functional_call
            with pure_embeddings(self._stateful_embeddings):
                return self.scored(call(self.net, weights, (x,)))
        flat = {k: w.expand(*lead, *self.shapes[k]).reshape(-1, *self.shapes[k]) for k, w in weights.items()}
        norms = training_batch_norms(self.net)
        with pure_embeddings(self._stateful_embeddings), batchable(self.net), per_draw_statistics(norms) as record:
            def run(p):
                record.calls.clear()
                record.stats.clear()
                return self._pick(functional_call(self.net, p, (x,))), list(record.stats)

            try:
                out, stats = vmap(run, randomness="different")(flat)
            except RuntimeError as e:
                raise unbatchable(e, next(iter(flat.values())).shape[0]) from e
        update_running(record.calls, stats)
        return _with_row_axis(out.reshape(*lead, *out.shape[1:]), len(lead))

    def scored(self, out: Any, n_lead: int = 0) -> torch.Tensor:
        """The net's raw output as the likelihood sees it, ``[*lead, N, k]``: the part ``output`` of a tuple or dict,
        with a trailing axis for one value per row, flattened per row for several dims."""
        return _with_row_axis(self._pick(out), n_lead)

    def _pick(self, out: Any) -> torch.Tensor:
        """The tensor the likelihood scores: the net's output, or its part ``output`` (a key or an index)."""
        if self.output is None:
            return _tensor(out)
        try:
            part = out[self.output]
        except (KeyError, IndexError, TypeError):
            keys = list(out) if isinstance(out, dict) else f"{len(out)} parts" if isinstance(out, (tuple, list)) else \
                type(out).__name__
            raise ValueError(f"lift(output={self.output!r}): the net's output has no such part ({keys})") from None
        return _tensor(part)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, data_size: int | None = None) -> torch.Tensor:
        """Pyro model: weights ~ prior; y ~ likelihood(net(x; weights)) in a plate scaled to data_size.

        Labels/targets are checked (and converted, e.g. integer labels to floats for Bernoulli), so a
        plain ``pyro.infer.SVI`` loop gets the same one-line errors as :func:`pyrobnn.fit`."""
        expose("bnn", self.named_point_parameters())
        if isinstance(x, np.ndarray):  # as fit and predict take it
            x = torch.as_tensor(x, device=self.device)
        latents = _aligned_leads(self.sample_weights(), self.shapes)
        out = self.forward(x, latents)
        k = self.net_sites[0]
        lead = latents[k].dim() - len(self.shapes[k])
        if lead and out.shape[lead - 1] == 1:
            # Under an outer plate (vectorised particles or draws) the weights' batch shape is
            # (..., P, 1): the trailing 1 is the data plate's slot, which the rows fill.
            out = out.squeeze(lead - 1)
            latents = {n: v.squeeze(lead - 1) for n, v in latents.items() if n not in self.net_sites}
        if y is not None:
            y = self.likelihood.check(self._flat_targets(y, x), out.shape[-2], tuple(out.shape[-1:]))
        elif not self._warned_no_targets and replaying():
            self._warned_no_targets = True
            warn_no_targets()
        try:
            return self.likelihood(out, y, data_size, latents)
        except ValueError:  # Pyro's argument validation; is it the net's output that is bad?
            if torch.isfinite(out).all():
                raise
            raise ValueError(
                "the net returned NaN/inf at these weights; for instance a guide that starts every weight at 0 "
                "(Pyro's AutoNormal with its default init_to_feasible) breaks nets that divide by a weight's norm "
                "(weight_norm): start from the net's weights with pyrobnn.auto_normal(bnn), or pass "
                "init_loc_fn=init_to_sample") from None

    # --- input checks ----------------------------------------------------------------------------
    @overload
    def check_inputs(self, x: ArrayLike, y: None = None, *, name: str = "X") -> tuple[torch.Tensor, None]: ...

    @overload
    def check_inputs(self, x: ArrayLike, y: ArrayLike, *, name: str = "X") -> tuple[torch.Tensor, torch.Tensor]: ...

    def check_inputs(self, x: ArrayLike, y: ArrayLike | None = None, *,
                     name: str = "X") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Checked tensors: ``x`` as token ids (Embedding nets) or float features, ``y`` by the likelihood.

        Raises a one-line ValueError naming ``name`` on bad input."""
        if self.vocab_size is not None and self._float_input_runs(x):  # an Embedding fed from float columns
            self.vocab_size = None
        raw = x
        if self.vocab_size is not None or self._takes_integers(x):
            x = check_tokens(x, self.vocab_size, name)
        else:
            x = check_features(x, None if self._features_guessed else self.n_features, name, guess=self.n_features)
            if self._features_guessed and x.dim() == 2 and x.shape[1] != self.n_features:
                self._check_guess(x, name, raw)
        if x.is_floating_point():
            x = x.to(self.dtype)
        self.row_shape(x)  # once: a per-pixel output under a one-label likelihood is refused here
        if y is not None:
            y = self.likelihood.check(self._flat_targets(y, x), x.shape[0], self.row_shape(x))
            y = y.to(self.dtype) if y.is_floating_point() else y
            if isinstance(self.likelihood, Custom):  # its event shape is known only from a distribution
                self._check_custom_event(x, y)
        return x, y

    @torch.no_grad()
    def _check_custom_event(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """A Custom likelihood's event shape against the targets', from its distribution on the first two rows (a
        bad batch shape is left to the first step, which names the data's own row count)."""
        try:
            d = self.likelihood.distribution(self.scored(self._probe(x)))
        except ValueError:
            return
        self.likelihood.check_event(d, y[:2])

    def _takes_integers(self, x: ArrayLike) -> bool:
        """True when the net indexes with an integer ``x`` (node ids of a graph net, ids into a raw embedding
        table): it runs on ``x`` as it is but not cast to floats, as features are. Decided once."""
        if self._integer_input is None and _is_integer(x):
            t = torch.as_tensor(x)
            self._integer_input = self._runs(t.float()) is not None and self._runs(t) is None
        return bool(self._integer_input)

    def _runs(self, x: torch.Tensor) -> str | None:
        """None when the net runs on ``x``, else the first line of what it raised."""
        try:
            self._probe(x)
        except Exception as e:  # noqa: BLE001 - any failure means: not on these inputs
            return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        return None

    def _float_input_runs(self, x: ArrayLike) -> bool:
        """True when ``x`` holds floats and the net runs on them although its first layer is an Embedding (a
        wrapper that casts some columns to ids, e.g. one concatenating numeric and categorical inputs)."""
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()) and not \
                (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)):
            return False
        return self._runs(torch.as_tensor(x)) is None  # if not, the floats are refused as token ids

    def _check_guess(self, x: torch.Tensor, name: str, raw: ArrayLike) -> None:
        """The feature count was guessed from the first Linear the net registers, which need not be the
        first one its forward calls (raw parameters, layers defined out of order): when ``x`` does not
        fit the guess but the net runs on it, the guess was wrong and is dropped. For integer ``raw`` inputs the
        error also says what the net raised on them as they are (ids out of range, say)."""
        if self._runs(x) is not None:
            as_is = self._runs(torch.as_tensor(raw)) if _is_integer(raw) else None
            hint = f" (on X's integers as they are the net raised {as_is})" if as_is else ""
            raise ValueError(f"{name} has {x.shape[1]} features; the net expects {self.n_features}{hint}")
        self.n_features, self._features_guessed = None, False


def _traced_call(net: nn.Module, weights: dict[str, torch.Tensor], args: tuple) -> torch.Tensor:
    """``functional_call`` for one weight set under ``torch.jit.trace`` (Pyro's ``JitTrace_ELBO``), which
    torch's stateless API refuses: each parameter, and every alias of it (tied weights), is swapped for
    the given tensor while the net runs, then put back."""
    slots: dict[str, list[tuple[nn.Module, str]]] = {}
    owner = {id(p): n for n, p in net.named_parameters()}  # first name of each (possibly shared) tensor
    for name, p in net.named_parameters(remove_duplicate=False):
        mod_name, _, attr = name.rpartition(".")
        if owner[id(p)] in weights:
            slots.setdefault(owner[id(p)], []).append((net.get_submodule(mod_name), attr))
    saved = [(m, a, m._parameters[a]) for places in slots.values() for m, a in places]
    try:
        for name, places in slots.items():
            for m, a in places:
                del m._parameters[a]
                setattr(m, a, weights[name])
        return net(*args)
    finally:
        for m, a, param in saved:
            delattr(m, a)
            m._parameters[a] = param


def _with_row_axis(out: torch.Tensor, n_lead: int) -> torch.Tensor:
    """``[*lead, N, k]`` as the likelihood sees it: ``[*lead, N]`` (one value per row) gains a trailing axis,
    ``[*lead, N, C, H, W]`` is flattened per row to ``[*lead, N, C*H*W]``."""
    per_row = out.dim() - n_lead - 1
    return out.unsqueeze(-1) if per_row == 0 else out.flatten(n_lead + 1) if per_row > 1 else out


def _tensor(out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        hint = " (pass lift(output=...) with the key or index of the part the likelihood scores)" \
            if isinstance(out, (tuple, list, dict)) else ""
        raise TypeError(f"the net must return a tensor; it returned {type(out).__name__}{hint}")
    return out


def _aligned_leads(values: dict[str, torch.Tensor], shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Site values whose leading (sample) dims differ in number only by trailing singletons made alike. Pyro's
    ``Predictive(parallel=True)`` reshapes each posterior draw to ``[S, 1, *shape]`` only while the site's shape has
    fewer dims than the model's plates, so a scalar site comes as ``[S, 1]`` beside a matrix's ``[S, *shape]``; taken
    as they are, the two would broadcast to ``[S, S]``."""
    leads = {k: v.shape[: v.dim() - len(shapes[k])] for k, v in values.items()}
    longest = max(leads.values(), key=len, default=torch.Size())
    out = dict(values)
    for k, lead in leads.items():
        extra = longest[len(lead):]
        if extra and all(d == 1 for d in extra) and tuple(longest[:len(lead)]) == tuple(lead):
            out[k] = values[k].reshape(*lead, *extra, *shapes[k])
    return out


def _is_integer(x: ArrayLike) -> bool:
    if isinstance(x, torch.Tensor):
        return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer)


def _float_dtype(net: nn.Module) -> torch.dtype:
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)


_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)  # first layers that take token ids


def _first_layer(net: nn.Module) -> nn.Module | None:
    """The first Linear, Conv, recurrent or Embedding layer of the net (what its input must fit)."""
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase, *_EMBEDDINGS)):
            return m
    return None


def lift(net: nn.Module, prior: PriorSpec = None, likelihood: LikelihoodSpec = "categorical",
         priors: Mapping[str, PriorSpec] | None = None, n_features: int | None = None,
         output: str | int | None = None) -> BayesianNet:
    """Lift ``net`` into a Bayesian net whose ``.model`` is a Pyro model.

    Args:
        prior: default prior for every parameter (a :mod:`pyrobnn.priors` object, a name such as
            ``"laplace"``, or ``{"name": "scale_mixture", "pi": 0.5, ...}``); Normal(0, 1) if omitted.
        priors: per-module / per-parameter overrides, ``{"0": priors.Laplace(), "4.bias": None}``;
            ``None`` keeps that part of the net deterministic (trained as a point estimate).
        likelihood: ``"categorical"`` / ``"normal"`` or a :mod:`pyrobnn.likelihoods` instance.
        output: for a net that returns a tuple or a dict (``{"logits": ..., "features": ...}``), the index or key of
            the part the likelihood scores.

    The net's forward takes one tensor ``X [rows, ...]``; a net of several inputs is lifted through a wrapper that
    splits one concatenated tensor (integer columns such as category ids are cast back with ``.long()``).
    """
    return BayesianNet(net, prior=prior, likelihood=likelihood, priors=priors, n_features=n_features, output=output)
