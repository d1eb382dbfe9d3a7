"""``--conformal`` in the experiments: calibration rows reserved from the training set, conformal sets / intervals
reported beside the Bayesian ones, the figure written, and ``pyrobnn predict`` printing them for a calibrated run."""
import json
import re

import pytest

from pyrobnn.experiments.cli import main
from pyrobnn.experiments.mnist import MNISTConfig
from pyrobnn.experiments.mnist import run as run_mnist
from tests.conftest import data_file

FAST_EGG = ["--epochs", "30", "--det-epochs", "10", "--num-samples", "300", "--pyro-baseline-samples", "0",
            "--no-progress", "--conformal", "0.9"]


def test_egg_conformal_sets_and_predict(tmp_path, capsys):
    assert main(["run", "egg", *FAST_EGG, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"conformal 90% sets \(aps, \d+ calibration rows\): coverage", out)
    (run_dir,) = (tmp_path / "egg").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    c = metrics["conformal"]
    assert c["n_calibration"] == round(0.2 * (metrics["n_train"] + c["n_calibration"])) > 0  # kept out of training
    assert sum(c["size_counts"]) == metrics["n_test"] and len(c["query_sets"]) == 3
    assert (run_dir / "conformal_set_sizes.png").stat().st_size > 10_000
    assert main(["predict", str(run_dir), "--input", "58,5", "--input", "47.9,2.1", "--num-samples", "500"]) == 0
    out = capsys.readouterr().out
    assert "conformal 90% prediction sets (aps, calibrated on" in out
    assert len(re.findall(r"^\S.* min\s+\{[a-z, ]+\}$", out, flags=re.M)) == 2


def test_mnist_conformal_on_the_embedded_digits(tmp_path):
    res = run_mnist(MNISTConfig(epochs=3, det_epochs=1, num_samples=30, conformal=0.8, conformal_size=300,
                                out=str(tmp_path), progress=False))
    c = res["conformal"]
    assert res["n_train"] == 1437 - 300 and c["n_calibration"] == 300
    assert 0.7 <= c["coverage"] <= 0.9 and 0 < c["mean_set_size"] < 10
    assert (tmp_path / "mnist").glob("*/conformal_set_sizes.png").__next__().is_file()


def test_boston_conformal_intervals_and_predict(tmp_path, capsys):
    csv = data_file("boston_housing/BostonHousing.csv")
    assert main(["run", "boston", "--data", str(csv), "--repeats", "1", "--steps", "200", "--num-samples", "200",
                 "--conformal", "0.9", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"first split: conformal 90% intervals \(cqr, \d+ calibration rows\): coverage", out)
    (run_dir,) = (tmp_path / "boston").iterdir()
    assert (run_dir / "conformal_coverage_width.png").is_file()
    row = ",".join(["0.1", "0", "8", "0", "0.5", "6", "60", "4", "5", "300", "17", "390", "10"])
    assert main(["predict", str(run_dir), "--input", row]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    lo, hi, clo, chi = map(float, re.findall(r"-?\d+\.\d+", line)[2:])
    assert lo < hi and clo < chi


def test_too_few_calibration_rows_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"--conformal 0.99: 50 calibration rows are too few \(level 0.99 needs at "
                                         r"least 99\)"):
        run_mnist(MNISTConfig(epochs=1, conformal=0.99, conformal_size=50, out=str(tmp_path), progress=False))
