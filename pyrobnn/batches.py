"""Minibatches for fit: from (X, y) tensors (index slicing, resumable mid-epoch, sharded under torch.distributed),
from a DataLoader, or as truncated-BPTT chunks of sequences."""
from __future__ import annotations

import torch

from .distributed import shard, world
from .lift import BayesianNet


class Batches:
    """Minibatches from (X, y) tensors (index slicing, resumable mid-epoch) or from a DataLoader.

    With ``tbptt=k`` (truncated BPTT), X is ``[N, T, ...]`` sequences and y ``[N, T]`` per-step
    targets: each minibatch of sequences is visited chunk by chunk (k steps each, in order, the
    recurrent state carried by ``carry``), y flattened to rows, and the data size is N*T steps,
    so the KL counts once per minibatch and truncated sequence (Fortunato et al. 2017: 1/(B*C)).
    """

    def __init__(self, bnn: BayesianNet, data, batch_size, device, tbptt: int | None = None, carry=None):
        self.bnn, self.loader, self.device, self.tbptt, self.carry = bnn, None, device, tbptt, carry
        self.rank, self.world = world()
        if isinstance(data, torch.utils.data.DataLoader):
            if self.world > 1:
                raise ValueError("under torch.distributed pass (X, y) tensors (each process takes its shard of "
                                 "every minibatch), not a DataLoader")
            self.loader = data
            self.size = len(data.dataset)  # type: ignore[arg-type]  # map-style datasets have a length
            if self.size == 0:
                raise ValueError("data: the DataLoader's dataset is empty")
            return
        if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) == 2:
            data = data.tensors
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            hint = ", e.g. DataLoader(dataset, batch_size=128, shuffle=True)" \
                if isinstance(data, torch.utils.data.Dataset) else ""
            raise TypeError(f"data must be an (X, y) pair of tensors or a torch DataLoader{hint}")
        if tbptt:
            x, y = self._sequences(*data)
        else:
            x, y = bnn.check_inputs(*data)
        self.x, self.y = x.to(device), y.to(device)
        self.size = self.n_rows = x.shape[0]
        self.batch_size = self.size if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if self.batch_size > self.size:
            raise ValueError(f"batch_size {self.batch_size} is larger than the data ({self.size} rows)")
        if tbptt:
            self.size = x.shape[0] * x.shape[1]  # the likelihood's rows are time steps

    def _sequences(self, x, y):
        x = self.bnn.check_inputs(x)[0]
        y = torch.as_tensor(y)
        if x.dim() < 2 or y.dim() != 2 or tuple(y.shape) != tuple(x.shape[:2]):
            raise ValueError(f"tbptt needs X [sequences, steps, ...] and y [sequences, steps]; got X "
                             f"{tuple(x.shape)} and y {tuple(y.shape)}")
        if self.tbptt is None or not 1 <= self.tbptt <= x.shape[1]:
            raise ValueError(f"tbptt must lie in [1, {x.shape[1]}] (the sequence length); got {self.tbptt}")
        return x, self.bnn.likelihood.check(y.reshape(-1), y.numel(), self.bnn.row_shape(x)).reshape(y.shape)

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch (minibatches, times the chunks of each under tbptt)."""
        if self.loader is not None:
            return len(self.loader)
        chunks = -(-self.x.shape[1] // self.tbptt) if self.tbptt else 1
        return -(-self.n_rows // self.batch_size) * chunks

    def new_order(self):
        if self.loader is not None or self.batch_size == self.n_rows:
            return None
        return torch.randperm(self.n_rows)

    def iterate(self, order, start: int = 0):
        """(step, x, y, weight) from step ``start`` on, in ``order`` (a permutation, or None = as
        stored); ``weight`` is this process's share of the global minibatch (1 in one process)."""
        if self.loader is not None:
            for i, batch in enumerate(self.loader):
                if i >= start:
                    xb, yb = self.bnn.check_inputs(*_pair(batch))
                    yield i, xb.to(self.device), yb.to(self.device), 1.0
            return
        k = self.tbptt or 0
        chunks: range | list[None] = range(0, self.x.shape[1], k) if k else [None]
        i = -1
        for lo in range(0, self.n_rows, self.batch_size):
            idx = torch.arange(lo, min(lo + self.batch_size, self.n_rows)) if order is None \
                else order[lo:lo + self.batch_size]
            mine = shard(idx, self.rank, self.world)
            weight = len(mine) / len(idx)
            if len(mine) == 0:  # fewer rows than processes: a zero-weight stand-in keeps every process in step
                mine = idx[:1]
            mine = mine.to(self.device)
            xb, yb = self.x[mine], self.y[mine]
            for c in chunks:
                i += 1
                if i < start:
                    continue
                if c is None:
                    yield i, xb, yb, weight
                    continue
                if c == 0:
                    self.carry.reset()
                yield i, xb[:, c:c + k], yb[:, c:c + k].reshape(-1), weight


def gathered(loader: torch.utils.data.DataLoader, targets: bool = True) -> tuple:
    """A DataLoader's batches concatenated: ``(X, y)``, or ``(X,)`` with ``targets=False`` (batches may then be bare
    inputs or pairs whose targets are dropped). For validation sets and prediction inputs, which are held whole."""
    xs, ys = [], []
    for batch in loader:
        if targets:
            xb, yb = _pair(batch)
            ys.append(torch.as_tensor(yb))
        else:
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
        xs.append(torch.as_tensor(xb))
    if not xs:
        raise ValueError("the DataLoader yielded no batches")
    return (torch.cat(xs), torch.cat(ys)) if targets else (torch.cat(xs),)


def _pair(batch) -> tuple:
    """A DataLoader's batch as (X, y), or a one-line error naming what it yielded."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return tuple(batch)
    what = f"a dict with keys {list(batch)}" if isinstance(batch, dict) else \
        f"{len(batch)} tensor{'s' * (len(batch) != 1)}" if isinstance(batch, (tuple, list)) else \
        f"a {type(batch).__name__}"
    raise ValueError(f"the DataLoader must yield (X, y) pairs; it yielded {what}: have the dataset return (x, y)")
