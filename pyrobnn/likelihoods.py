"""Likelihoods: the observation site of a lifted net, inside a minibatch-scaled data plate.

``pyro.plate("data", size=N, subsample=...)`` scales the log-likelihood of a minibatch of B rows by
N / B, so one minibatch step is an unbiased estimate of the full-data ELBO.

A likelihood sees the net's output with a trailing axis, ``out: [..., N, k]`` (a net that returns
``[N]``, e.g. after ``.squeeze(-1)``, is seen as ``[N, 1]``), and builds a distribution whose batch
shape ends in the N rows.

- ``Categorical(num_classes=None)``: logits ``[N, C]``; C is read from the net when not given.
- ``Bernoulli()``: one logit per row (``[N]`` or ``[N, 1]``), labels in {0, 1}.
- ``Normal(scale, ...)``: ``[N]``/``[N, 1]`` (one target) or ``[N, k]`` (k independent targets);
  noise fixed, learned (``scale=None``) or inferred (``log_scale_prior``); or heteroscedastic.
- ``StudentT(df, scale, ...)``: as Normal, heavy tails with ``df`` degrees of freedom.
- ``Poisson()``: one log-rate per row, non-negative integer counts.
- ``Custom(fn)``: any ``fn(out) -> pyro distribution`` with batch shape ``[..., N]``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import nn
from torch.nn.functional import logsigmoid, softplus

from ._types import ArrayLike
from .data import as_float_tensor, check_labels, check_targets

if TYPE_CHECKING:
    from .priors import PriorSpec


class Likelihood(nn.Module):
    """Base class. ``forward(out, y, data_size, latents)`` samples or observes site ``"obs"``.

    A likelihood may own latent sites of its own (e.g. a noise scale with a prior): ``latents()``
    names them with their shape and prior, and lift turns them into sample sites like weights.
    Subclasses define ``distribution`` and, for the predictive summaries, ``mean``/``variance``
    (regression, counts) or ``log_probs`` (classification).
    """

    kind = "generic"

    def latents(self) -> dict:
        """{site name: (shape, prior)} of the likelihood's own latent variables."""
        return {}

    def initial_latents(self) -> dict[str, torch.Tensor]:
        """Starting values of the latent sites (used to initialise guides)."""
        return {}

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """The per-row distribution of y given the net's outputs ``out`` (and the latent sites' values)."""
        raise NotImplementedError

    def check(self, y: ArrayLike, n_rows: int, out_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Targets ``y`` checked and converted for this likelihood, one per input row; ``out_shape`` is
        the net's output per row (``(k,)``) when known."""
        return check_targets(y, n_rows)

    def cast(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` in the dtype the distribution's ``log_prob`` takes."""
        return y.float()

    def mean(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """Per-draw mean of y, ``[..., N]`` (or ``[..., N, k]``)."""
        return self.distribution(out, latents).mean

    def variance(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """Per-draw variance of y (the aleatoric part), shaped like ``mean``."""
        return self.distribution(out, latents).variance

    def forward(self, out: torch.Tensor, y: torch.Tensor | None = None, data_size: int | None = None,
                latents: dict | None = None) -> torch.Tensor:
        """Sample (``y=None``) or observe site ``"obs"`` in a data plate of ``data_size`` rows."""
        n = out.shape[-2]
        if y is not None and y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} rows but the inputs have {n}")
        size = n if data_size is None else int(data_size)
        d = self.distribution(out, latents)
        if y is not None:
            self.check_event(d, y)
        with pyro.plate("data", size=size, subsample=torch.arange(n, device=out.device)):
            return pyro.sample("obs", d, obs=y)

    def check_event(self, d: dist.TorchDistribution, y: torch.Tensor) -> None:
        """One line when a target row's shape is not the event shape of ``d``, the distribution of a row."""
        if tuple(y.shape[1:]) != tuple(d.event_shape):
            raise ValueError(f"{self.name()}: each target row has shape {tuple(y.shape[1:])} but the distribution "
                             f"is over {tuple(d.event_shape)} per row")

    def name(self) -> str:
        """How errors name this likelihood."""
        return f"likelihood {type(self).__name__}"

    def config(self) -> dict:
        """JSON-able description (written into run directories and checkpoints)."""
        return {"name": type(self).__name__}


def _width(out_shape: tuple[int, ...] | None) -> int | None:
    return None if not out_shape else int(out_shape[-1])


def _one_per_row(width: int | None, what: str, hint: str) -> None:
    """Raise unless the net gives one value per row (or its width is not known yet)."""
    if width not in (None, 1):
        raise ValueError(f"{what} per row (net output [N] or [N, 1]); the net outputs {width}{hint}")


class Categorical(Likelihood):
    """Class labels from logits: the net's last layer has one output per class (read from the net
    when ``num_classes`` is not given)."""

    kind = "classification"

    def __init__(self, num_classes: int | None = None):
        super().__init__()
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}")
        self.num_classes = None if num_classes is None else int(num_classes)

    def _check_width(self, width: int) -> None:
        if self.num_classes is not None and width != self.num_classes:
            raise ValueError(f"the net outputs {width} logits but the likelihood has {self.num_classes} classes")
        if width < 2:
            raise ValueError(f"Categorical needs one logit per class (>= 2); the net outputs {width} "
                             f"(for binary labels use likelihoods.Bernoulli)")

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """Categorical over the classes, logits ``out[..., C]``."""
        self._check_width(out.shape[-1])
        return dist.Categorical(logits=out)

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        """Per-draw log class probabilities ``[..., N, C]``."""
        return torch.log_softmax(out, dim=-1)

    def check(self, y: ArrayLike, n_rows: int, out_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Integer labels in [0, C), one per row (C = num_classes, or the net's output width)."""
        width = _width(out_shape)
        if width is not None:
            self._check_width(width)
        return check_labels(y, self.num_classes or width, n_rows)

    def cast(self, y: torch.Tensor) -> torch.Tensor:
        """Labels as integers."""
        return y.long()

    def config(self) -> dict:
        """JSON-able description (written into run directories and checkpoints)."""
        return {"name": "Categorical", "num_classes": self.num_classes}


class Bernoulli(Likelihood):
    """Binary labels in {0, 1} from one logit per row (net output ``[N]`` or ``[N, 1]``). The predictive
    summaries are those of two classes (class 1 = the logit's event)."""

    kind = "classification"
    num_classes = 2

    @staticmethod
    def _check_width(width: int | None) -> None:
        _one_per_row(width, "Bernoulli needs one logit", " (for more classes use likelihoods.Categorical; for several "
                     "labels per row, Custom(lambda out: dist.Bernoulli(logits=out).to_event(1)))")

    def _logit(self, out: torch.Tensor) -> torch.Tensor:
        self._check_width(out.shape[-1])
        return out[..., 0]

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """Bernoulli(logits=out[..., 0]) per row."""
        return dist.Bernoulli(logits=self._logit(out))

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        """Per-draw log probabilities of classes 0 and 1, ``[..., N, 2]``."""
        z = self._logit(out)
        return torch.stack([logsigmoid(-z), logsigmoid(z)], dim=-1)

    def check(self, y: ArrayLike, n_rows: int, out_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Labels in {0, 1}, one per row, as floats."""
        self._check_width(_width(out_shape))
        return check_labels(y, 2, n_rows, allowed="{0, 1}").float()

    def cast(self, y: torch.Tensor) -> torch.Tensor:
        """Labels as floats (what Bernoulli's log_prob takes)."""
        return y.float()


NOISE_SITE = "obs_log_scale"


class Normal(Likelihood):
    """Real targets, y ~ Normal(loc, scale), loc from the net's output.

    Output ``[N]`` or ``[N, 1]``: one target per row; ``[N, k]``: k independent targets (y ``[N, k]``).
    scale: a fixed noise std (a float); or ``None`` to learn it, as a point estimate, or, with
    ``log_scale_prior`` (a prior on log sigma, e.g. ``priors.Normal(math.log(0.5), 1.0)``, i.e. a
    log-normal prior on sigma), as a latent site ``"obs_log_scale"`` that the guide infers.
    targets: with k > 1 targets, the learned or inferred noise has one sigma per target (k of them);
    with the default 1, one sigma is shared by every target.
    heteroscedastic: the net outputs ``[..., 2]``: loc and a raw scale, sigma = softplus(raw) + 1e-3.
    """

    kind = "regression"
    MIN_SCALE = 1e-3

    def __init__(self, scale: float | None = 1.0, log_scale_prior: PriorSpec = None, heteroscedastic: bool = False,
                 init_scale: float = 1.0, targets: int = 1):
        super().__init__()
        from .priors import make_prior

        if heteroscedastic and (scale is not None or log_scale_prior is not None):
            raise ValueError("a heteroscedastic likelihood takes its scale from the net: pass scale=None "
                             "and no log_scale_prior")
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"likelihood scale must be > 0 or None (learned); got {scale!r}")
        if log_scale_prior is not None and scale is not None:
            raise ValueError("log_scale_prior needs scale=None (the noise is then inferred)")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0; got {init_scale!r}")
        if not (isinstance(targets, int) and targets >= 1) or (heteroscedastic and targets != 1):
            raise ValueError(f"targets must be an integer >= 1 (1 when heteroscedastic); got {targets!r}")
        self.fixed_scale = None if scale is None else float(scale)
        self.heteroscedastic = bool(heteroscedastic)
        self.log_scale_prior = make_prior(log_scale_prior)
        self.init_scale = float(init_scale)
        self.targets = targets
        self.noise_shape = torch.Size(() if targets == 1 else (targets,))
        if scale is None and log_scale_prior is None and not heteroscedastic:
            raw = torch.log(torch.expm1(torch.tensor(float(init_scale))))
            self.raw_scale = nn.Parameter(raw.expand(self.noise_shape).clone())

    def latents(self) -> dict:
        """``{"obs_log_scale": (shape, prior)}`` when the noise is inferred, else nothing."""
        return {} if self.log_scale_prior is None else {NOISE_SITE: (self.noise_shape, self.log_scale_prior)}

    def initial_latents(self) -> dict[str, torch.Tensor]:
        """log(init_scale) for the inferred noise site, if there is one."""
        if self.log_scale_prior is None:
            return {}
        return {NOISE_SITE: torch.full(self.noise_shape, math.log(self.init_scale))}

    def _targets_in(self, width: int) -> int:
        """How many targets an output of ``width`` values per row predicts."""
        want = 2 if self.heteroscedastic else None
        if want is not None and width != want:
            raise ValueError(f"the net must output {want} values per row for this likelihood; got {width}")
        if self.targets > 1 and width != self.targets:
            raise ValueError(f"the likelihood has {self.targets} targets but the net outputs {width} values per row")
        return 1 if self.heteroscedastic else width

    def loc(self, out: torch.Tensor) -> torch.Tensor:
        """The predictive mean: ``[..., N]`` for one target, ``[..., N, k]`` for k."""
        k = self._targets_in(out.shape[-1])
        return out[..., 0] if k == 1 else out

    def scale(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """Noise std, broadcastable against ``loc(out)``."""
        if self.heteroscedastic:
            return softplus(out[..., 1]) + self.MIN_SCALE
        if self.fixed_scale is not None:
            return torch.tensor(self.fixed_scale, device=out.device, dtype=out.dtype)
        if self.log_scale_prior is None:
            return softplus(self.raw_scale)
        if latents is None or NOISE_SITE not in latents:
            raise ValueError(f"this likelihood infers its noise: pass latents holding {NOISE_SITE!r}")
        log_s = latents[NOISE_SITE]  # [*draws, *noise_shape]: a row axis goes in before the targets
        return log_s.unsqueeze(log_s.dim() - len(self.noise_shape)).exp()

    def family(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        """The location-scale family of the noise."""
        return dist.Normal(loc, scale)

    def from_loc_scale(self, out: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        """The per-row distribution with this location and scale (k targets form its event)."""
        d = self.family(loc, scale.expand_as(loc) if scale.dim() > loc.dim() else scale)
        return d.to_event(1) if self._targets_in(out.shape[-1]) > 1 else d

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """Normal(loc(out), scale(out, latents)) per row (k targets as its event)."""
        return self.from_loc_scale(out, self.loc(out), self.scale(out, latents))

    def mean(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """Per-draw mean: the location."""
        return self.loc(out)

    def variance(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """Per-draw noise variance, shaped like the mean."""
        loc = self.loc(out)
        return (self.scale(out, latents) ** 2).expand_as(loc)

    def check(self, y: ArrayLike, n_rows: int, out_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Real targets without NaN/inf: ``[rows]`` for one target (a ``[rows, 1]`` column is
        flattened), ``[rows, k]`` for k."""
        width = _width(out_shape)
        k = self._targets_in(width) if width is not None else self.targets
        y = check_targets(y, n_rows)
        if k == 1:
            if y.dim() == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.dim() != 1:
                raise ValueError(f"targets must be 1-D [rows] (or [rows, 1]) for a net with one output; "
                                 f"got shape {tuple(y.shape)}")
        elif tuple(y.shape[1:]) != (k,):
            raise ValueError(f"targets must be [rows, {k}] for a net with {k} outputs; got shape {tuple(y.shape)}")
        return y

    def config(self) -> dict:
        """JSON-able description (written into run directories and checkpoints)."""
        out = {"name": type(self).__name__, "scale": self.fixed_scale, "heteroscedastic": self.heteroscedastic,
               "log_scale_prior": None if self.log_scale_prior is None else self.log_scale_prior.config()}
        return out if self.targets == 1 else {**out, "targets": self.targets}


class StudentT(Normal):
    """Heavy-tailed real targets, y ~ StudentT(df, loc, scale): ``df`` degrees of freedom (fixed), loc
    and scale as in :class:`Normal` (fixed, learned, inferred or heteroscedastic noise; k targets)."""

    def __init__(self, df: float = 4.0, scale: float | None = 1.0, log_scale_prior: PriorSpec = None,
                 heteroscedastic: bool = False, init_scale: float = 1.0, targets: int = 1):
        if not (isinstance(df, (int, float)) and math.isfinite(df) and df > 0):
            raise ValueError(f"StudentT df must be a finite number > 0; got {df!r}")
        super().__init__(scale, log_scale_prior, heteroscedastic, init_scale, targets)
        self.df = float(df)

    def family(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        """Student-t with ``df`` degrees of freedom."""
        return dist.StudentT(torch.tensor(self.df, device=loc.device, dtype=loc.dtype), loc, scale)

    def variance(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """scale^2 * df / (df - 2) (infinite for df <= 2)."""
        factor = self.df / (self.df - 2) if self.df > 2 else math.inf
        return super().variance(out, latents) * factor

    def config(self) -> dict:
        """JSON-able description (written into run directories and checkpoints)."""
        return {**super().config(), "df": self.df}


class Poisson(Likelihood):
    """Counts y in {0, 1, 2, ...} ~ Poisson(exp(out)): one log-rate per row (``[N]`` or ``[N, 1]``)."""

    kind = "regression"

    @staticmethod
    def rate(out: torch.Tensor) -> torch.Tensor:
        """The per-row rate exp(log-rate)."""
        _one_per_row(out.shape[-1], "Poisson needs one log-rate", "")
        return out[..., 0].exp()

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """Poisson(exp(out[..., 0])) per row."""
        return dist.Poisson(self.rate(out))

    def check(self, y: ArrayLike, n_rows: int, out_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Non-negative integer counts, one per row (as floats)."""
        _one_per_row(_width(out_shape), "Poisson needs one log-rate", "")
        y = as_float_tensor(y, "counts")
        if y.dim() == 2 and y.shape[1] == 1:
            y = y[:, 0]
        y = check_targets(y, n_rows, name="counts")
        if y.dim() != 1:
            raise ValueError(f"counts must be 1-D [rows]; got shape {tuple(y.shape)}")
        bad = (y < 0) | (y != torch.round(y))
        if bad.any():
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"counts must be non-negative integers; got {float(y[i]):g} at row {i}")
        return y


class Custom(Likelihood):
    """Any likelihood: ``fn(out)`` returns a Pyro distribution over one row's target, batch shape
    ``[..., N]`` (``out`` is ``[..., N, k]``, a net returning ``[N]`` giving ``[..., N, 1]``); per-row
    target dims go into the event (``.to_event(1)``). The predictive summaries (mean, std, intervals,
    log-likelihood) use the distribution's ``mean``, ``variance`` and samples.

        likelihoods.Custom(lambda out: dist.Gamma(softplus(out[..., 0]) + 1e-3, 1.0))
    """

    kind = "regression"

    def __init__(self, fn: Callable[[torch.Tensor], dist.TorchDistribution], name: str | None = None):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"Custom likelihood needs a callable net_output -> distribution; got {type(fn).__name__}")
        self.fn = fn
        self.label = name or getattr(fn, "__name__", "custom")

    def distribution(self, out: torch.Tensor, latents: dict | None = None) -> dist.TorchDistribution:
        """``fn(out)``, checked: a Pyro distribution whose batch shape ends in the rows."""
        d = self.fn(out)
        if not isinstance(d, TorchDistributionMixin):
            what = f"{type(d).__module__}.{type(d).__name__}"
            raise TypeError(f"{self.name()} must return a pyro.distributions distribution; "
                            f"got {what}")
        n = out.shape[-2]
        if len(d.batch_shape) == 0 or d.batch_shape[-1] != n:
            raise ValueError(f"{self.name()}: the distribution's batch shape "
                             f"{tuple(d.batch_shape)} must end in the {n} rows (put per-row dims in the event "
                             f"with .to_event(1))")
        return d

    def mean(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """The distribution's mean (one line if it has none)."""
        return self._moment(out, "mean")

    def variance(self, out: torch.Tensor, latents: dict | None = None) -> torch.Tensor:
        """The distribution's variance (one line if it has none)."""
        return self._moment(out, "variance")

    def _moment(self, out: torch.Tensor, what: str) -> torch.Tensor:
        d = self.distribution(out)
        try:
            return getattr(d, what)
        except NotImplementedError:
            raise NotImplementedError(f"{self.name()}: its {type(d).__name__} has no {what}, so the predictive "
                                      f"summaries built on it cannot be made; log_likelihood still works") from None

    def name(self) -> str:
        """How errors name this likelihood."""
        return f"custom likelihood {self.label!r}"

    def config(self) -> dict:
        """JSON-able description (the callable itself is not saved)."""
        return {"name": "Custom", "fn": self.label}


LIKELIHOODS = {"categorical": Categorical, "bernoulli": Bernoulli, "normal": Normal, "studentt": StudentT,
               "poisson": Poisson}


def make_likelihood(spec: Likelihood | str) -> Likelihood:
    """A Likelihood from an instance or a name (``"categorical"``, ``"bernoulli"``, ``"normal"``,
    ``"studentt"``, ``"poisson"``)."""
    if isinstance(spec, Likelihood):
        return spec
    if isinstance(spec, str):
        key = spec.lower().replace("_", "").replace("-", "")
        if key not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {spec!r}; choose one of {sorted(LIKELIHOODS)}")
        return LIKELIHOODS[key]()
    if callable(spec):
        raise TypeError("a callable likelihood goes in likelihoods.Custom(fn)")
    raise TypeError(f"likelihood must be a pyrobnn Likelihood or a name; got {type(spec).__name__}")
