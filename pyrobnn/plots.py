"""Figures. Each function takes data or summaries and returns a matplotlib Figure (Agg backend)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = ["tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown"]


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def scatter_by_class(x, y, labels, class_names: Sequence[str], axis_names=("x", "y"), title: str = ""):
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


def histograms_by_class(values, labels, class_names: Sequence[str], value_name: str = "value",
                        bins: int = 20, title: str = ""):
    """Overlaid histograms of one feature per class, raw counts (seed fig. 2.02)."""
    values, labels = _np(values), _np(labels)
    edges = np.histogram_bin_edges(values, bins=bins)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, name in enumerate(class_names):
        ax.hist(values[labels == c], bins=edges, alpha=0.55, color=COLORS[c % len(COLORS)], label=name)
    ax.set_xlabel(value_name)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(title="outcome")
    fig.tight_layout()
    return fig


def violins_by_class(values, labels, class_names: Sequence[str], value_name: str = "value", title: str = ""):
    """Violin plot of one feature per class with the mean marked (seed fig. 2.03)."""
    values, labels = _np(values), _np(labels)
    groups = [values[labels == c] for c in range(len(class_names))]
    present = [i for i, g in enumerate(groups) if len(g) > 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    parts = ax.violinplot([groups[i] for i in present], positions=[i + 1 for i in present],
                          showmeans=True, showextrema=True)
    for body, i in zip(parts["bodies"], present):
        body.set_facecolor(COLORS[i % len(COLORS)])
        body.set_alpha(0.6)
    ax.set_xticks(range(1, len(class_names) + 1), class_names)
    ax.set_ylabel(value_name)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def class_frequency_histogram(frequencies, class_names: Sequence[str], input_labels: Sequence[str],
                              num_samples: int, title: str = ""):
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


def intervals_sorted_by_target(y, mean, lower, upper, level: float, ylabel: str = "target", title: str = ""):
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


def calibration_curve(curve: list[dict], title: str = ""):
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
