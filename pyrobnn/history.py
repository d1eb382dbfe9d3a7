"""What fit returns: the per-epoch records of a run and what happened during it."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field


@dataclass
class History:
    """Per-epoch records: ``loss`` is the mean minibatch ELBO loss (scaled to the full data)."""

    records: list[dict] = field(default_factory=list)
    interrupted: bool = False
    events: list[str] = field(default_factory=list)
    best_epoch: int | None = None  # with fit(keep_best=...): the epoch whose posterior was restored

    def append(self, **rec) -> None:
        """Add one epoch's record."""
        self.records.append(rec)

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.records]

    def __len__(self):
        return len(self.records)

    @property
    def last(self) -> dict:
        """The latest epoch's record ({} before the first)."""
        return self.records[-1] if self.records else {}

    def loss_rose(self, give_back: float = 0.25, min_epochs: int = 30) -> str | None:
        """A one-line account when training went backwards: the loss, averaged over windows of a tenth of the
        epochs, ended more than ``give_back`` of its fall above its best window (an optimiser unstable at its
        learning rate, typically); None otherwise, and for runs whose KL weight changed (the loss then changes
        meaning)."""
        if len(self.records) < min_epochs or len({r.get("kl_weight", 1.0) for r in self.records}) > 1 or \
                not all(isinstance(r.get("loss"), float) for r in self.records):
            return None
        cum = [0.0, *itertools.accumulate(r["loss"] for r in self.records)]
        w = max(3, len(self.records) // 10)
        smooth = [(cum[i + w] - cum[i]) / w for i in range(len(cum) - w)]
        best = min(range(len(smooth)), key=smooth.__getitem__)
        fall, rise = smooth[0] - smooth[best], smooth[-1] - smooth[best]
        if not (fall > 0 and rise > give_back * fall):
            return None
        return (f"the training loss rose after epoch {best + 1 + w // 2}: from {smooth[best]:.4g} to {smooth[-1]:.4g} "
                f"(means over {w} epochs), giving back {rise / fall:.0%} of its fall from {smooth[0]:.4g}; the "
                f"optimiser is likely unstable: lower lr, raise num_particles, or pass val_data with keep_best")
