"""fit's default path reads nothing back from the device per training step: loss, KL and NLL accumulate on the
device and the divergence guard keeps its verdict there; both are read once per epoch (or every ``sync_every``
steps). Counted by patching every Tensor method that moves a value to the host, during whole fit calls with 4 and
with 8 steps per epoch: the difference is what the extra steps read."""
from __future__ import annotations

import contextlib
import sys

import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal

READS = ["item", "__float__", "__int__", "__bool__", "__index__", "tolist", "numpy", "cpu"]


def _optimizer_step_counter(frame) -> bool:
    """torch's Adam reads its ``step`` counter with .item(); that tensor lives on the host even for CUDA
    parameters (unless capturable), so it is no device read."""
    return frame.f_back is not None and frame.f_back.f_code.co_filename.endswith("torch/optim/optimizer.py")


@contextlib.contextmanager
def counting():
    counts: dict[str, int] = {}
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name):
        method = originals[name]

        def counted(self, *args, **kwargs):
            if not _optimizer_step_counter(sys._getframe()):
                counts[name] = counts.get(name, 0) + 1
            return method(self, *args, **kwargs)
        return counted

    for name in READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def reads_in_fit(steps_per_epoch: int, epochs: int = 3, **kw) -> tuple[int, pyrobnn.History]:
    torch.manual_seed(0)
    x = torch.randn(32 * steps_per_epoch, 5)
    y = (x[:, 0] + x[:, 1] > 0).long()
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2)))
    guide = MeanFieldNormal(bnn)
    before = guide.loc_flat.detach().clone()
    with counting() as counts:
        hist = pyrobnn.fit(bnn, guide, (x, y), epochs=epochs, lr=0.02, batch_size=32, seed=0, progress=False, **kw)
    assert not torch.equal(before, guide.loc_flat.detach()), "fit did not move the guide"
    assert hist["loss"][-1] < hist["loss"][0], "the loss did not fall"
    return sum(counts.values()), hist


def test_the_default_path_reads_nothing_per_step():
    few, _ = reads_in_fit(4)
    many, hist = reads_in_fit(8)
    assert few > 0  # the once-per-epoch reads are counted: the patch works
    assert (many - few) / (3 * 4) == 0, f"{(many - few) / 12:.2f} host reads per training step"
    assert all(k in hist.last for k in ("loss", "nll", "kl"))  # the parts still reach the history


@pytest.mark.parametrize("k", [2, 4])
def test_sync_every_k_reads_once_per_k_steps(k):
    few, _ = reads_in_fit(4, sync_every=k)
    many, _ = reads_in_fit(8, sync_every=k)
    base, _ = reads_in_fit(8)
    per_step = (many - few) / 12
    assert 0 < per_step <= 2 / k  # the guard's verdict and the running loss, every k steps
    assert many > base
