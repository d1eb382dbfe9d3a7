"""Per-epoch logging: the ELBO's parts in every record, CSV/JSONL in the run directory, TensorBoard."""
import json

import pandas as pd
import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn.runs import EpochLog


def _fit(tmp_path, epochs, log):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 2, generator=g)
    y = (x[:, 0] > 0).long()
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)))
    guide = pyrobnn.MeanFieldNormal(bnn)
    return pyrobnn.fit(bnn, guide, (x, y), epochs=epochs, batch_size=32, seed=0, progress=False, callback=log,
                       val_data=(x[:32], y[:32]), val_every=2)


def test_records_split_the_loss_and_land_in_csv_jsonl_and_tensorboard(tmp_path):
    hist = _fit(tmp_path, 4, EpochLog(tmp_path))
    for rec in hist.records:  # per-epoch means of the per-step parts
        assert rec["nll"] + rec["kl"] == pytest.approx(rec["loss"], rel=1e-6)
        assert rec["kl"] > 0 and rec["nll"] > 0
    df = pd.read_csv(tmp_path / "history.csv")
    assert list(df["epoch"]) == [1, 2, 3, 4]
    assert df["loss"].tolist() == pytest.approx(hist["loss"])
    assert df["val_accuracy"].notna().tolist() == [False, True, False, True]
    # a resumed run continues the same files
    _fit(tmp_path, 2, EpochLog(tmp_path))
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 1, 2]
    assert len(pd.read_csv(tmp_path / "history.csv")) == 6

    event_acc = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_acc.EventAccumulator(str(tmp_path / "tensorboard" / "history"))
    acc.Reload()
    assert {"loss", "nll", "kl", "val_accuracy"} <= set(acc.Tags()["scalars"])
    losses = [e.value for e in acc.Scalars("loss")]
    assert losses[:4] == pytest.approx(hist["loss"], rel=1e-6)


def test_pyro_elbos_get_a_one_draw_estimate_of_the_parts():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)))
    hist = pyrobnn.fit(bnn, pyrobnn.auto_normal(bnn), (x, y), epochs=2, batch_size=32, seed=0, progress=False,
                       loss="trace")
    for rec in hist.records:
        assert rec["nll"] > 0 and abs(rec["kl"]) < 1e4  # -log p(y|w) of labels is positive; finite KL estimate
        assert rec["nll"] + rec["kl"] == pytest.approx(rec["loss"], rel=0.5)  # one draw vs the epoch mean
