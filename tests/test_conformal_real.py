"""Conformal coverage on real data: UCI concrete through ``pyrobnn run uci --conformal 0.9`` (the 10 first standard
splits, 20% of each split's training rows reserved for calibration) and Fashion-MNIST (a Bayesian MLP, 20 random
calibration/test partitions of 6,000 held-out images); 90% coverage averaged over splits lies in [0.87, 0.93]."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyrobnn
from pyrobnn import priors
from pyrobnn.conformal import ConformalClassifier, set_coverage
from pyrobnn.data import read_idx
from pyrobnn.experiments.regression import RegressionConfig
from pyrobnn.experiments.uci import UCIConfig, print_summary, run
from tests.conftest import data_file, fashion_dir


def test_uci_concrete_conformal_coverage_over_splits(tmp_path, capsys):
    root = data_file("uci_regression/concrete/data/data.txt").parents[2]
    model = RegressionConfig(steps=100, num_samples=100, conformal=0.9)
    res = run(UCIConfig(dataset="concrete", splits=10, data_dir=str(root), model=model, out=str(tmp_path),
                        progress=False))
    c = res["conformal"]
    print_summary(res)
    assert "conformal 90% intervals (cqr): coverage" in capsys.readouterr().out
    assert 0.87 <= c["conformal_coverage"][0] <= 0.93, c
    per_split = json.loads((tmp_path / "uci-concrete").glob("*/splits.json").__next__().read_text())
    assert len(per_split) == 10 and all(s["conformal"]["n_calibration"] == 185 for s in per_split)
    assert all(s["n_train"] == 927 - 185 for s in per_split)  # the calibration rows were not trained on
    curve = per_split[0]["conformal"]["curve"]
    assert [p["level"] for p in curve] == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    assert all(a["conformal_width"] < b["conformal_width"] for a, b in zip(curve, curve[1:]))
    assert next((tmp_path / "uci-concrete").glob("*/conformal_coverage_width.png")).stat().st_size > 10_000


@pytest.fixture(scope="module")
def fashion_predictive():
    folder = fashion_dir()
    x = read_idx(folder / "t10k-images-idx3-ubyte.gz")[:8000].float().div(255).unsqueeze(1)
    y = read_idx(folder / "t10k-labels-idx1-ubyte.gz")[:8000].long()
    x = F.avg_pool2d(x, 2).flatten(1)  # 14x14
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(196, 64), nn.ReLU(), nn.Linear(64, 10))
    bnn = pyrobnn.lift(net, priors=priors.fan_in_normal(net))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=1e-3)
    hist = pyrobnn.fit(bnn, guide, (x[:2000], y[:2000]), epochs=8, lr=3e-3, batch_size=128, seed=0, progress=False)
    assert hist["loss"][-1] < hist["loss"][0]
    return pyrobnn.predict(bnn, guide, x[2000:], num_samples=50, seed=0), y[2000:]


@pytest.mark.parametrize("score", ["aps", "lac"])
def test_fashion_mnist_conformal_coverage_over_splits(fashion_predictive, score):
    pp, y = fashion_predictive
    g = torch.Generator().manual_seed(0)
    cover, sizes = [], []
    for k in range(20):
        perm = torch.randperm(len(y), generator=g)
        cal, test = perm[:1000], perm[1000:]
        sets = ConformalClassifier(0.9, score, seed=k).calibrate(pp.select(cal), y[cal]).predict_sets(pp.select(test))
        cover.append(set_coverage(sets, y[test]))
        sizes.append(float(sets.sum(1).float().mean()))
    mean = sum(cover) / len(cover)
    print(f"Fashion-MNIST {score}: coverage {mean:.4f} over 20 splits, mean set size {sum(sizes) / len(sizes):.2f}")
    assert 0.87 <= mean <= 0.93
    assert 1.0 < sum(sizes) / len(sizes) < 5.0  # informative: neither single labels nor every class
