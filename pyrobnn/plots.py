"""Figures. Each function takes data or summaries and returns a matplotlib Figure (Agg backend)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from ._types import ArrayLike  # noqa: E402

COLORS = ["tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown"]


def _np(a: ArrayLike) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def scatter_by_class(x: ArrayLike, y: ArrayLike, labels: ArrayLike, class_names: Sequence[str],
                     axis_names: Sequence[str] = ("x", "y"), title: str = "") -> Figure:
    """Scatter of two features coloured by class (seed fig. 2.01)."""
    x, y, labels = _np(x), _np(y), _np(labels)
    fig, ax = plt.subplots(figsize=(7, 5))
    for c, name in enumerate(class_names):
        m = labels == c
        ax.scatter(x[m], y[m], s=14, alpha=0.7, color=COLORS[c % len(COLORS)], label=f"{name} ({m.sum()})")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title)
    ax.legend(title="outcome")
    fig.tight_layout()
    return fig


def histograms_by_class(values: ArrayLike, labels: ArrayLike, class_names: Sequence[str], value_name: str = "value",
                        bins: int = 20, title: str = "") -> Figure:
    """Overlaid histograms of one feature per class, raw counts (seed fig. 2.02)."""
    values, labels = _np(values), _np(labels)
    edges = np.histogram_bin_edges(values, bins=bins)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, name in enumerate(class_names):
        ax.hist(values[labels == c], bins=edges.tolist(), alpha=0.55, color=COLORS[c % len(COLORS)], label=name)
    ax.set_xlabel(value_name)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(title="outcome")
    fig.tight_layout()
    return fig


def violins_by_class(values: ArrayLike, labels: ArrayLike, class_names: Sequence[str], value_name: str = "value",
                     title: str = "") -> Figure:
    """Violin plot of one feature per class with the mean marked (seed fig. 2.03)."""
    values, labels = _np(values), _np(labels)
    groups = [values[labels == c] for c in range(len(class_names))]
    present = [i for i, g in enumerate(groups) if len(g) > 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    parts = ax.violinplot([groups[i] for i in present], positions=[i + 1 for i in present],
                          showmeans=True, showextrema=True)
    # a list of PolyCollection at run time (matplotlib's stub types it as one Collection)
    for body, i in zip(cast("list[Any]", parts["bodies"]), present):
        body.set_facecolor(COLORS[i % len(COLORS)])
        body.set_alpha(0.6)
    ax.set_xticks(range(1, len(class_names) + 1), class_names)
    ax.set_ylabel(value_name)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def class_frequency_histogram(frequencies: ArrayLike, class_names: Sequence[str], input_labels: Sequence[str],
                              num_samples: int, title: str = "") -> Figure:
    """Grouped bars: for each chosen input, the share of posterior draws predicting each class
    (seed fig. 2.04, 'histogram of 5000 samples for 3 test inputs')."""
    freq = _np(frequencies)
    n_in, n_cls = freq.shape
    width = 0.8 / n_in
    x = np.arange(n_cls)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i in range(n_in):
        counts = freq[i] * num_samples
        bars = ax.bar(x + (i - (n_in - 1) / 2) * width, counts, width, color=COLORS[i % len(COLORS)],
                      alpha=0.8, label=input_labels[i])
        for b, f in zip(bars, freq[i]):
            if f > 0:
                ax.annotate(f"{f:.1%}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=8)
    ax.set_xticks(x, class_names)
    ax.set_ylabel(f"draws (of {num_samples})")
    ax.set_ylim(0, num_samples * 1.08)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def intervals_sorted_by_target(y: ArrayLike, mean: ArrayLike, lower: ArrayLike, upper: ArrayLike, level: float,
                               ylabel: str = "target", title: str = "") -> Figure:
    """Test targets in increasing order with the predictive mean and its credible interval."""
    y, mean, lower, upper = (_np(a) for a in (y, mean, lower, upper))
    order = np.argsort(y)
    i = np.arange(len(y))
    inside = (y >= lower) & (y <= upper)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    ax.fill_between(i, lower[order], upper[order], color="tab:blue", alpha=0.25, label=f"{level:.0%} interval")
    ax.plot(i, mean[order], color="tab:blue", lw=1.2, label="predictive mean")
    ax.scatter(i[inside[order]], y[order][inside[order]], s=10, color="black", label="target (inside)")
    ax.scatter(i[~inside[order]], y[order][~inside[order]], s=18, color="tab:red", marker="x",
               label=f"target (outside: {int((~inside).sum())} of {len(y)})")
    ax.set_xlabel("test examples, sorted by target")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibration_curve(curve: list[dict], title: str = "") -> Figure:
    """Regression calibration: expected vs observed coverage of central intervals."""
    exp = np.array([c["level"] for c in curve])
    obs = np.array([c["observed"] for c in curve])
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    ax.plot(exp, obs, marker="o", color="tab:blue", label="model")
    ax.set_xlabel("interval level (expected coverage)")
    ax.set_ylabel("observed coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def coverage_width(curve: list[dict], title: str = "") -> Figure:
    """Bayesian against conformal intervals: observed coverage (left) and mean width (right) at each nominal level
    (``curve``: dicts with level, bayes_coverage, bayes_width, conformal_coverage, conformal_width)."""
    lv = np.array([c["level"] for c in curve])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 4.3))
    a1.plot([lv.min() - 0.05, 1], [lv.min() - 0.05, 1], color="grey", ls="--", lw=1, label="coverage = level")
    for key, name, color in (("bayes", "Bayesian credible interval", "tab:blue"),
                             ("conformal", "conformal (calibrated)", "tab:orange")):
        a1.plot(lv, [c[f"{key}_coverage"] for c in curve], marker="o", color=color, label=name)
        a2.plot(lv, [c[f"{key}_width"] for c in curve], marker="o", color=color, label=name)
    a1.set_xlabel("nominal level")
    a1.set_ylabel("observed coverage on the test rows")
    a2.set_xlabel("nominal level")
    a2.set_ylabel("mean interval width")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def set_size_histogram(size_counts: Sequence[int], level: float, observed: float, title: str = "") -> Figure:
    """How many classes the conformal prediction sets hold: a bar per set size (0 .. C)."""
    counts = np.asarray(size_counts)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(np.arange(len(counts)), counts / max(1, counts.sum()), color="tab:orange")
    ax.set_xticks(np.arange(len(counts)))
    ax.set_xlabel("classes in the prediction set")
    ax.set_ylabel("fraction of test inputs")
    ax.set_title(title + ("\n" if title else "") + f"level {level:.0%}, observed coverage {observed:.1%}, "
                 f"mean size {float((np.arange(len(counts)) * counts).sum() / max(1, counts.sum())):.2f}")
    fig.tight_layout()
    return fig


def continual_accuracy(runs: Mapping[str, Sequence[Sequence[float]]], task_names: Sequence[str],
                       title: str = "") -> Figure:
    """Continual learning: one panel per method, each task's test accuracy (a line from the task it arrived in)
    against the number of tasks trained so far, and the average over the tasks seen (``runs[name][T][t]``)."""
    ncols = len(runs) if len(runs) <= 3 else 2
    nrows = -(-len(runs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (name, rows) in zip(axes.flat, runs.items()):
        n = len(rows)
        for t in range(n):
            ax.plot(range(t + 1, n + 1), [rows[k][t] for k in range(t, n)], marker="o", color=colors(t),
                    label=f"task {task_names[t]}")
        ax.plot(range(1, n + 1), [sum(r) / len(r) for r in rows], color="black", ls="--", lw=2,
                label="average over tasks seen")
        ax.set_xticks(range(1, n + 1))
        ax.set_xlabel("tasks trained")
        ax.set_title(f"{name}: average {sum(rows[-1]) / len(rows[-1]):.3f} after the last")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def probability_curves(grid: ArrayLike, curves: Mapping[str, ArrayLike], band: tuple[ArrayLike, ArrayLike],
                       class_names: Sequence[str], grid_name: str, band_name: str = "reference 5-95%",
                       title: str = "") -> Figure:
    """Class probabilities along a 1-D slice of the inputs: one panel per class, one line per method (``curves[name]``
    ``[G, C]`` mean probabilities; the first is drawn black, as the reference) and the reference's per-draw band
    ``band = (low, high)``, each ``[G, C]``."""
    g = _np(grid)
    lo, hi = _np(band[0]), _np(band[1])
    fig, axes = plt.subplots(1, len(class_names), figsize=(4.6 * len(class_names), 4.0), sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    for c, (ax, cname) in enumerate(zip(axes[0], class_names)):
        ax.fill_between(g, lo[:, c], hi[:, c], color="grey", alpha=0.3, label=band_name)
        for i, (name, probs) in enumerate(curves.items()):
            ax.plot(g, _np(probs)[:, c], color="black" if i == 0 else colors(i - 1), lw=2.2 if i == 0 else 1.4,
                    ls="-" if i == 0 else "--", label=name)
        ax.set_title(f"P({cname})")
        ax.set_xlabel(grid_name)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("predictive probability")
    axes[0][-1].legend(fontsize=8, loc="center right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def regression_bands(grid: ArrayLike, bands: Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike]], grid_name: str,
                     title: str = "") -> Figure:
    """Predictive bands along a 1-D slice of the inputs: ``bands[name] = (mean, low, high)``, each ``[G]``; the first
    is the reference (a grey band with its mean in black), the others their band's edges as dashed lines."""
    g = _np(grid)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colors = plt.get_cmap("tab10")
    for i, (name, (mean, lo, hi)) in enumerate(bands.items()):
        if i == 0:
            ax.fill_between(g, _np(lo), _np(hi), color="grey", alpha=0.3, label=f"{name} band")
            ax.plot(g, _np(mean), color="black", lw=2, label=f"{name} mean")
        else:
            ax.plot(g, _np(lo), color=colors(i - 1), ls="--", lw=1.3, label=name)
            ax.plot(g, _np(hi), color=colors(i - 1), ls="--", lw=1.3)
    ax.set_xlabel(grid_name)
    ax.set_ylabel("target")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def referral_curves(fractions: ArrayLike, curves: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Accuracy on the retained inputs against the fraction referred, one line per ranking."""
    f = 100 * np.asarray(fractions)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    styles: dict[str, dict[str, Any]] = {"oracle": dict(color="grey", ls="--"), "random": dict(color="grey", ls=":")}
    for i, (name, acc) in enumerate(curves.items()):
        ax.plot(f, acc, label=name, **styles.get(name, dict(color=COLORS[i % len(COLORS)], marker=".")))
    ax.set_xlabel("% of test inputs referred (most uncertain first)")
    ax.set_ylabel("accuracy on the inputs kept")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reliability_diagram(bins: list[dict], title: str = "") -> Figure:
    """Accuracy against confidence per bin, with the bin counts underneath."""
    used = [b for b in bins if b["count"]]
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = used[0]["upper"] - used[0]["lower"] if used else 0.1
    ax.bar([b["lower"] for b in used], [b["accuracy"] for b in used], width=width, align="edge",
           color="tab:blue", alpha=0.7, edgecolor="k", label="accuracy")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    axc.bar([b["lower"] for b in used], [b["count"] for b in used], width=width, align="edge", color="grey")
    axc.set_yscale("log")
    axc.yaxis.set_minor_formatter(NullFormatter())  # labels on the decades only: the minor ones overlap
    axc.set_xlabel("confidence")
    axc.set_ylabel("count")
    fig.tight_layout()
    return fig


def uncertain_gallery(images: ArrayLike, frequencies: ArrayLike, labels: ArrayLike, class_names: Sequence[str],
                      title: str = "") -> Figure:
    """The given images, each above the histogram of posterior predictive classes for it."""
    images, freq, labels = _np(images), _np(frequencies), _np(labels)
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.2))
    axes = np.asarray(axes).reshape(2, n)
    for i in range(n):
        axes[0, i].imshow(images[i], cmap="gray_r")
        axes[0, i].set_axis_off()
        axes[0, i].set_title(f"true {class_names[int(labels[i])]}", fontsize=8)
        axes[1, i].bar(range(len(class_names)), freq[i], color="tab:blue")
        axes[1, i].set_xticks(range(len(class_names)), class_names, fontsize=6)
        axes[1, i].set_ylim(0, 1)
        axes[1, i].tick_params(axis="y", labelsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pruning_curve(fractions: ArrayLike, accuracies: Sequence[float], title: str = "") -> Figure:
    """Test accuracy against the percentage of weights pruned (lowest signal-to-noise first)."""
    fig, ax = plt.subplots(figsize=(5.6, 4))
    ax.plot(100 * np.asarray(fractions), accuracies, marker="o", color="tab:blue")
    ax.set_xlabel("% of weights removed (lowest |mu| / sigma first)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def score_histograms(scores: Mapping[str, tuple[ArrayLike, ArrayLike]], in_label: str, out_label: str) -> Figure:
    """One panel per score: histograms of in-distribution and out-of-distribution values."""
    fig, axes = plt.subplots(1, len(scores), figsize=(5.2 * len(scores), 4))
    for ax, (name, (a, b)) in zip(np.atleast_1d(axes), scores.items()):
        a, b = _np(a), _np(b)
        edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=40)
        ax.hist(a, bins=edges, alpha=0.6, color="tab:blue", label=in_label, density=True)
        ax.hist(b, bins=edges, alpha=0.6, color="tab:red", label=out_label, density=True)
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def forecast_band(dates: ArrayLike, series: ArrayLike, pred_dates: ArrayLike, mean: ArrayLike, lower: ArrayLike,
                  upper: ArrayLike, title: str = "", zoom: bool = False,
                  k_std: tuple[float, ArrayLike] | None = None) -> Figure:
    """A series with forecasts over its final period: the predictive mean, its quantile band and,
    with ``k_std=(k, std)``, the mean +- k std band (seed 003's plots). ``zoom`` shows the
    forecast period only."""
    dates, series = np.asarray(dates), _np(series)
    pred_dates, mean, lower, upper = np.asarray(pred_dates), _np(mean), _np(lower), _np(upper)
    fig, ax = plt.subplots(figsize=(11 if not zoom else 9, 4.8))
    keep = dates >= pred_dates[0] if zoom else np.ones(len(dates), bool)
    ax.plot(dates[keep], series[keep], color="black", lw=0.8, label="close")
    ax.fill_between(pred_dates, lower, upper, color="tab:blue", alpha=0.3, label="predictive quantile band")
    if k_std is not None:
        k, std = k_std[0], _np(k_std[1])
        ax.plot(pred_dates, mean - k * std, color="tab:orange", lw=0.7, ls="--", label=f"mean \u00b1 {k:g} std")
        ax.plot(pred_dates, mean + k * std, color="tab:orange", lw=0.7, ls="--")
    ax.plot(pred_dates, mean, color="tab:blue", lw=1.0, label="predictive mean")
    if zoom:
        outside = (series[keep] < np.interp(dates[keep].astype("int64"), pred_dates.astype("int64"), lower)) | \
                  (series[keep] > np.interp(dates[keep].astype("int64"), pred_dates.astype("int64"), upper))
        ax.scatter(dates[keep][outside], series[keep][outside], color="tab:red", s=12, zorder=3,
                   label=f"outside the band ({int(outside.sum())})")
    ax.set_ylabel("price ($)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
