"""Boston (seed 004) and the UCI runner on the real files, with short training (pipeline checks;
the full-length results are in docs/results.md)."""
import json
import math

import matplotlib.image as mpimg
import pytest
import torch

import pyrobnn
from pyrobnn.autoguides import _init_locs
from pyrobnn.experiments import uci
from pyrobnn.experiments.cli import main
from pyrobnn.experiments.regression import RegressionConfig, fit_regressor
from tests.conftest import data_file

FAST = ["--steps", "400", "--num-samples", "300", "--no-progress"]


def test_boston_run_writes_intervals_metrics_and_figures(tmp_path, capsys):
    csv = data_file("boston_housing/BostonHousing.csv")
    assert main(["run", "boston", "--data", str(csv), *FAST, "--repeats", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "inside their 95% interval" in out and "2 random splits (mean ± s.e.)" in out
    (run,) = (tmp_path / "boston").iterdir()
    m = json.loads((run / "metrics.json").read_text())
    assert (m["n_train"], m["n_test"]) == (380, 126) and "b" in m["features"]
    first, second = m["repeats"]["per_split"]
    assert first["rmse"] == m["rmse"] and second["rmse"] != m["rmse"]  # the figures' split, then another one
    assert m["repeats"]["coverage_95"][0] == pytest.approx((first["coverage_95"] + second["coverage_95"]) / 2)
    assert m["rmse"] < 5.5  # the target's std is 9.2: the model learnt something in 400 steps
    assert 0.8 <= m["inside_interval"] <= 1.0 and m["inside_interval"] == m["coverage_95"]
    levels = [c["observed"] for c in m["calibration"]]
    assert levels == sorted(levels)  # wider intervals never cover less
    for png in ("intervals_sorted.png", "calibration.png"):
        assert mpimg.imread(run / png).shape[0] > 300


def test_boston_without_column_b(tmp_path, capsys):
    csv = data_file("boston_housing/BostonHousing.csv")
    assert main(["run", "boston", "--data", str(csv), "--drop-b", *FAST, "--steps", "50", "--repeats", "1",
                 "--out", str(tmp_path)]) == 0
    (run,) = (tmp_path / "boston").iterdir()
    assert "b" not in json.loads((run / "metrics.json").read_text())["features"]
    capsys.readouterr()


@pytest.mark.parametrize("dataset,steps", [("yacht", 400), ("naval", 30)])
def test_uci_runner_reports_mean_and_standard_error_beside_published(tmp_path, capsys, dataset, steps):
    root = data_file("uci_regression/yacht/data/data.txt").parents[2]
    args = ["run", "uci", "--dataset", dataset, "--splits", "2", "--data-dir", str(root), *FAST,
            "--steps", str(steps), "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    (run,) = (tmp_path / f"uci-{dataset}").iterdir()
    m = json.loads((run / "metrics.json").read_text())
    assert m["splits"] == 2 and len(m["per_split"]) == 2
    rmses = [s["rmse"] for s in m["per_split"]]
    assert m["rmse"][0] == pytest.approx(sum(rmses) / 2)
    assert m["rmse"][1] == pytest.approx(abs(rmses[0] - rmses[1]) / 2, rel=1e-6)  # s.e. of two values
    assert all(math.isfinite(s["log_likelihood"]) for s in m["per_split"])  # naval's constant columns
    pub = m["published"]["PBP"]
    assert f"{pub[0]:.2f} / {pub[1]:.2f}" in out and f"{pub[0]:.2f} / {pub[1]:.2f}" in (run / "table.md").read_text()
    if dataset == "yacht":
        assert m["rmse"][0] < 6.0  # yacht's target std is 15


def test_uci_bad_input(tmp_path, capsys):
    root = data_file("uci_regression/yacht/data/data.txt").parents[2]
    assert main(["run", "uci", "--dataset", "yacht", "--splits", "21", "--data-dir", str(root), "--out",
                 str(tmp_path)]) == 2
    assert "splits must be between 1 and 20 for yacht; got 21" in capsys.readouterr().err
    assert main(["run", "uci", "--dataset", "yacht", "--data-dir", str(tmp_path)]) == 2
    assert "no data.txt for yacht" in capsys.readouterr().err


@pytest.mark.parametrize("learned", [False, True])
def test_uci_with_nuts_as_the_inference(tmp_path, capsys, learned):
    """learned: empirical Bayes, the prior sigmas that maximise the ELBO, then NUTS under them."""
    root = data_file("uci_regression/yacht/data/data.txt").parents[2]
    args = ["run", "uci", "--dataset", "yacht", "--splits", "1", "--data-dir", str(root), "--inference", "nuts",
            "--nuts-samples", "40", "--nuts-warmup", "40", "--max-tree-depth", "5", "--num-samples", "80",
            "--no-progress", "--out", str(tmp_path)] + (["--learn-prior-scales", "--steps", "300"] if learned else [])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ("learned prior sigmas" in out) == learned
    if learned:
        (run,) = (tmp_path / "uci-yacht").iterdir()
        scales = json.loads((run / "metrics.json").read_text())["per_split"][0]["prior_scales"]
        fan_in = {"1.weight": 6 ** -0.5, "3.weight": 50 ** -0.5}  # the starts: 1/sqrt(fan-in)
        assert all(abs(math.log(scales[k] / v)) > 0.1 for k, v in fan_in.items()), scales
    assert "| yacht (NUTS) | 1 |" in out and "NUTS over the splits: predictive R-hat max" in out
    (run,) = (tmp_path / "uci-yacht").iterdir()
    m = json.loads((run / "metrics.json").read_text())
    diag = m["per_split"][0]["nuts"]
    assert diag["chains"] == 2 and diag["draws_per_chain"] == 40 and diag["grad_evals"][0] > 80
    assert m["rmse"][0] < 6.0 and math.isfinite(m["log_likelihood"][0])  # yacht's target std is 15


@pytest.mark.parametrize("guide", ["laplace", "laplace_glm"])
def test_uci_with_the_laplace_approximation(tmp_path, capsys, guide):
    """--guide laplace[_glm]: a MAP fit (the loss falls, the weights leave the net's start), then a full-Hessian Normal
    whose draws spread the predictive beyond the MAP net's, scored over a split like the mean-field rows."""
    root = data_file("uci_regression/yacht/data/data.txt").parents[2]
    args = ["run", "uci", "--dataset", "yacht", "--splits", "1", "--data-dir", str(root), "--guide", guide, *FAST,
            "--out", str(tmp_path)]
    assert main(args) == 0
    (run,) = (tmp_path / "uci-yacht").iterdir()
    m = json.loads((run / "metrics.json").read_text())
    assert m["rmse"][0] < 6.0 and math.isfinite(m["log_likelihood"][0])  # yacht's target std is 15
    label = {"laplace": "| yacht (Laplace) | 1 |", "laplace_glm": "| yacht (Laplace, linearised) | 1 |"}[guide]
    assert m["method"] == guide and label in capsys.readouterr().out and label in (run / "table.md").read_text()
    losses = [json.loads(line)["loss"] for line in (run / "history_split0.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]

    x, y, _ = uci.load(uci.data_folder(uci.UCIConfig(dataset="yacht", data_dir=str(root))))
    cfg = RegressionConfig(guide=guide, steps=300)
    bnn, post, scaling, _ = fit_regressor(x, y, cfg)
    start = post.layout.join(_init_locs(bnn, "net"))
    assert post.approximated and not torch.allclose(post.loc, start)
    spread = pyrobnn.predict(bnn, post, x[:20], num_samples=200, seed=0).outputs[..., 0].std(0)
    assert (spread > 1e-3).all()  # (standardised units) the weights' uncertainty reaches the predictive


def test_uci_laplace_needs_vi_without_learned_priors(tmp_path, capsys):
    root = data_file("uci_regression/yacht/data/data.txt").parents[2]
    for extra in (["--inference", "nuts"], ["--learn-prior-scales"]):
        assert main(["run", "uci", "--dataset", "yacht", "--data-dir", str(root), "--guide", "laplace", *extra,
                     "--out", str(tmp_path)]) == 2
        assert "--guide laplace fits a MAP: it goes with --inference vi" in capsys.readouterr().err
    assert not (tmp_path / "uci-yacht").exists()
