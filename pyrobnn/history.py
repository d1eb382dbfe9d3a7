"""What fit returns: the per-epoch records of a run and what happened during it."""
from __future__ import annotations

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
