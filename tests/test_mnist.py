"""The image experiment's pipeline on the real MNIST t10k files (few images, few epochs): the
numbers it computes must be right; the full-length results are in docs/results.md."""
import json

import matplotlib.image as mpimg
import pytest
import torch

from pyrobnn import metrics
from pyrobnn.experiments.cli import main
from tests.conftest import data_file


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = data_file("mnist/t10k-images-idx3-ubyte.gz").parent
    out = tmp_path_factory.mktemp("runs")
    args = ["run", "mnist", "--data-dir", str(folder), "--n-train", "1500", "--n-test", "500", "--epochs", "20",
            "--det-epochs", "2", "--num-samples", "30", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    (d,) = (out / "mnist").iterdir()
    return d, json.loads((d / "metrics.json").read_text())


def test_pipeline_numbers(run):
    d, m = run
    ref = m["referral"]
    assert ref["fractions"][0] == 0.0
    assert ref["predictive entropy"][0] == pytest.approx(m["bayesian"]["accuracy"])
    assert ref["mutual information"][0] == pytest.approx(m["bayesian"]["accuracy"])
    oracle = ref["oracle"]
    assert all(b >= a for a, b in zip(oracle, oracle[1:]))  # referring wrong answers first only helps
    assert all(o >= e - 1e-9 for o, e in zip(oracle, ref["predictive entropy"]))
    assert m["bayesian"]["accuracy"] > 0.6 and m["deterministic"]["accuracy"] > 0.8  # learnt from 1500 images
    assert [p["fraction"] for p in m["pruning"]] == [0.0, 0.5, 0.75, 0.95, 0.98]
    for png in ("referral", "reliability_bayesian", "reliability_deterministic", "uncertain_gallery", "pruning"):
        assert mpimg.imread(d / f"{png}.png").shape[0] > 250


def test_referral_and_reliability_helpers_on_known_inputs():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    y = torch.tensor([0, 1, 1, 0])  # row 1 is the only mistake
    score = torch.tensor([0.1, 0.9, 0.2, 0.5])  # and it is the most uncertain
    assert metrics.referral_curve(probs, y, score, [0.0, 0.25]) == [0.75, 1.0]
    assert metrics.oracle_referral_curve(probs, y, [0.0, 0.25, 0.5]) == [0.75, 1.0, 1.0]
    bins = metrics.reliability_bins(probs, y, n_bins=5)
    assert sum(b["count"] for b in bins) == 4
    top = bins[-1]  # confidence in (0.8, 1.0]: 0.9 right (0.8 falls in (0.6, 0.8])
    assert top["count"] == 1 and top["accuracy"] == 1.0 and top["confidence"] == pytest.approx(0.9)


def test_fashion_train_files_and_out_of_distribution_scores(tmp_path, capsys):
    from tests.conftest import fashion_dir

    mnist = data_file("mnist/t10k-images-idx3-ubyte.gz").parent
    args = ["run", "mnist", "--data-dir", str(fashion_dir()), "--ood-dir", str(mnist), "--n-train", "3000",
            "--n-test", "500", "--epochs", "5", "--det-epochs", "1", "--num-samples", "20", "--no-progress",
            "--val-size", "500", "--keep-best", "nll", "--final-lr", "3e-4", "--prior-gain", "3",
            "--ood-val-size", "300", "--temperature-scale", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "out-of-distribution AUROC" in out and "2500 train / 500 validation / 500 test images" in out
    (d,) = (tmp_path / "mnist").iterdir()
    m = json.loads((d / "metrics.json").read_text())
    assert (m["n_train"], m["n_val"], m["n_test"]) == (2500, 500, 500)
    hist = json.loads((d / "history.json").read_text())
    assert m["best_epoch"] == min(hist, key=lambda r: r["val_nll"])["epoch"]
    assert f"kept epoch {m['best_epoch']}" in out
    assert hist[-1]["lr"] == pytest.approx(3e-4, rel=0.01)
    assert json.loads((d / "config.json").read_text())["prior_gain"] == 3.0
    assert 0.2 < m["temperature"] < 5 and m["temperature"] != 1.0  # fitted on the 500 validation images
    assert set(m["bayesian_before_temperature"]) == set(m["bayesian"]) and "temperature" in out
    assert set(m["ood_auroc"]) == set(m["ood_auroc_validation"]) == {"predictive entropy", "mutual information"}
    assert all(0.0 <= v <= 1.0 for v in [*m["ood_auroc"].values(), *m["ood_auroc_validation"].values()])
    assert m["n_ood"] == 500  # MNIST images 300..799; the first 300 were scored against the validation images
    assert mpimg.imread(d / "ood_scores.png").shape[0] > 250


def test_bayesian_lenet_lifted_from_a_plain_cnn(tmp_path, capsys):
    folder = data_file("mnist/t10k-images-idx3-ubyte.gz").parent
    args = ["run", "mnist", "--arch", "cnn", "--data-dir", str(folder), "--n-train", "3000", "--n-test", "300",
            "--epochs", "15", "--det-epochs", "2", "--num-samples", "20", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    (d,) = (tmp_path / "mnist").iterdir()
    m = json.loads((d / "metrics.json").read_text())
    assert json.loads((d / "config.json").read_text())["arch"] == "cnn"
    assert m["bayesian"]["accuracy"] > 0.3  # well above chance (0.1) after 15 short epochs
    assert m["referral"]["predictive entropy"][0] == pytest.approx(m["bayesian"]["accuracy"])


def test_prior_gain_sweep_scores_each_gain_on_validation_data_only(capsys):
    from pyrobnn.experiments.prior_gain_sweep import main as sweep
    from tests.conftest import fashion_dir

    mnist = data_file("mnist/t10k-images-idx3-ubyte.gz").parent
    assert sweep(["--data-dir", str(fashion_dir()), "--ood-dir", str(mnist), "--arch", "mlp", "--epochs", "1",
                  "--gains", "1", "4", "--n-val", "300", "--n-train", "1500"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["gain"] for r in rows] == [1.0, 4.0]
    for r in rows:
        assert 0.3 < r["val_accuracy"] <= 1 and 0 <= r["val_ece"] <= 1 and r["val_nll"] > 0
        assert 0 <= r["ood_val_auroc_mi"] <= 1 and 0 <= r["ood_val_auroc_entropy"] <= 1
    assert rows[0]["elbo_loss"] != rows[1]["elbo_loss"]  # the prior differs, so does the bound
