"""Data-parallel training: 2 CPU processes under torchrun (gloo, localhost) give the same guide as
one process on the same global minibatches."""
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from torch import nn

import pyrobnn

ROOT = Path(__file__).resolve().parents[1]


def train(n_rows, checkpoint=None, epochs=3):
    """The run both sides do, batch 32: with 103 rows the last global batch of 7 splits 4 + 3; with 97
    it has one row, so one process gets nothing of it (a zero-weight stand-in)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_rows, 2, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 0] > 1).long()
    pyro.clear_param_store()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
    bnn = pyrobnn.lift(net)
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.05)
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=epochs, lr=0.01, batch_size=32, seed=1, progress=False,
                       checkpoint=checkpoint)
    return guide, hist


@pytest.mark.parametrize("n_rows", [103, 97])
def test_two_processes_match_one_process(tmp_path, n_rows):
    out, ckpt = tmp_path / "ddp.pt", tmp_path / "state.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(n_rows), str(out), str(ckpt)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(out, weights_only=False)
    guide, hist = train(n_rows)
    torch.testing.assert_close(ddp["loc"], guide.loc_flat.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ddp["rho"], guide.rho_flat.detach(), atol=1e-5, rtol=0)
    for a, b in zip(ddp["history"], hist.records):  # the reduced loss and its parts are the global ones
        for key in ("loss", "nll", "kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert ckpt.is_file()  # written by rank 0


def test_distributed_needs_a_seed_and_tensors(monkeypatch):
    import pyrobnn.distributed as d
    import pyrobnn.infer as infer

    monkeypatch.setattr(infer, "world", lambda: (0, 2))
    monkeypatch.setattr(d, "world", lambda: (0, 2))
    bnn = pyrobnn.lift(nn.Linear(2, 3))
    guide = pyrobnn.MeanFieldNormal(bnn)
    with pytest.raises(ValueError, match="needs seed="):
        pyrobnn.fit(bnn, guide, (torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), epochs=1, progress=False)
