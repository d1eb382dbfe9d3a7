"""``pyrobnn predict`` and ``pyrobnn report`` on run directories made by ``pyrobnn run``."""
import json
import math
import re

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pyro
import pytest
import torch

import pyrobnn
from pyrobnn.checkpoint import load_posterior
from pyrobnn.experiments.cli import main
from pyrobnn.models.egg import CLASSES, EggNet

FAST = ["--epochs", "30", "--det-epochs", "10", "--num-samples", "200", "--pyro-baseline-samples", "0",
        "--no-progress"]
EGGS = [(58.0, 5.0), (60.0, 6.5), (47.9, 2.1)]


@pytest.fixture(scope="module")
def egg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "egg", *FAST, "--out", str(out)]) == 0
    (run_dir,) = (out / "egg").iterdir()
    return run_dir


def _egg_rows(text):
    """{(weight, time): (frequencies, entropy, MI, most likely)} from predict's table."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+) g, (\S+) min\s+(.*)$", line)
        if m:
            *nums, label = m.group(3).split()
            nums = [float(v) for v in nums]
            rows[(float(m.group(1)), float(m.group(2)))] = (nums[:3], nums[3], nums[4], label)
    return rows


def _load_egg_posterior(run_dir):
    """The run's posterior rebuilt by hand, the way a notebook would (not through the CLI)."""
    pyro.clear_param_store()
    bnn = pyrobnn.lift(EggNet((32, 32)), prior=pyrobnn.priors.Normal(0.0, 1.0),
                       likelihood=pyrobnn.likelihoods.Categorical(3))
    guide = pyrobnn.MeanFieldNormal(bnn)
    meta = load_posterior(run_dir / "posterior.pt", bnn, guide, torch.zeros(1, 2))
    assert meta["experiment"] == "egg"
    return bnn, guide


def test_predict_egg_matches_the_posterior_it_loads(egg_run, tmp_path, capsys):
    n = 4000
    png = tmp_path / "hist.png"
    args = ["predict", str(egg_run), *[f"--input={w:g},{t:g}" for w, t in EGGS], "--num-samples", str(n)]
    assert main([*args, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"over {n} draws" in out and "trained on: " in out
    rows = _egg_rows(out)
    assert list(rows) == EGGS
    for freq, _, _, _ in rows.values():
        assert sum(freq) == pytest.approx(1.0, abs=4 * 5e-5)  # printed to 4 decimals

    bnn, guide = _load_egg_posterior(egg_run)
    pp = pyrobnn.predict(bnn, guide, torch.tensor(EGGS), num_samples=n, seed=123)  # independent draws
    ref, ent, mi = pp.class_frequencies(), pp.predictive_entropy(), pp.mutual_information()
    for i, (freq, h, m, label) in enumerate(rows.values()):
        for c in range(3):
            p = float(ref[i, c])
            tol = 5 * math.sqrt(2 * max(p * (1 - p), 1 / n) / n) + 1e-4  # 5 s.d. of a difference of two estimates
            assert abs(freq[c] - p) <= tol, (EGGS[i], CLASSES[c], freq[c], p)
        assert h == pytest.approx(float(ent[i]), abs=0.03)
        assert m == pytest.approx(float(mi[i]), abs=0.03)
        assert label == CLASSES[int(np.argmax(freq))]
    img = mpimg.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 500

    # same seed, same numbers; the plot is optional
    assert main(args) == 0
    assert _egg_rows(capsys.readouterr().out) == rows
    _reproduces_the_runs_own_query_eggs(egg_run, capsys)


@pytest.mark.parametrize("guide", ["handwritten", "autonormal"])  # param-store guides, restored lazily
def test_predict_other_guides(tmp_path, capsys, guide):
    assert main(["run", "egg", *FAST, "--epochs", "5", "--guide", guide, "--out", str(tmp_path)]) == 0
    (run_dir,) = (tmp_path / "egg").iterdir()
    capsys.readouterr()
    assert f"{guide} guide" in _reproduces_the_runs_own_query_eggs(run_dir, capsys)


def _reproduces_the_runs_own_query_eggs(run_dir, capsys) -> str:
    """Same eggs, draws and seed as the run's own histogram: the same frequencies, so the posterior
    that predict rebuilds is the trained one."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    eggs = [f"--input={q['weight']:g},{q['time']:g}" for q in metrics["query_eggs"]]
    draws = json.loads((run_dir / "config.json").read_text())["num_samples"]
    assert main(["predict", str(run_dir), *eggs, "--num-samples", str(draws), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    rows = _egg_rows(out)
    for q in metrics["query_eggs"]:
        freq = rows[(q["weight"], q["time"])][0]
        assert freq == pytest.approx([q["class_frequencies"][c] for c in CLASSES], abs=6e-5)
    return out


def test_report_prints_flattened_metrics(egg_run, capsys):
    assert main(["report", str(egg_run)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((egg_run / "metrics.json").read_text())
    table = dict(line.split(None, 1) for line in out.splitlines()[2:])
    assert out.splitlines()[0].startswith(f"egg run {egg_run} (seed 0")
    assert table["bayesian.accuracy"] == f"{metrics['bayesian']['accuracy']:.4g}"
    assert table["deterministic.ece"] == f"{metrics['deterministic']['ece']:.4g}"
    assert table["n_train"] == str(metrics["n_train"]) and table["simulated"] == "true"
    q = metrics["query_eggs"][2]
    assert table["query_eggs.2.weight"] == "47.9"
    assert table["query_eggs.2.class_frequencies.underdone"] == f"{q['class_frequencies']['underdone']:.4g}"
    assert table["predictive_timing.pyro_predictive_seconds"] == "-"
    for value in table.values():  # every float to 4 significant digits at most
        for num in re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", value):
            assert len(num.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) <= 4, value


def test_report_summarises_long_lists(tmp_path, capsys):
    run_dir = tmp_path / "uci-yacht" / "20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"model": {"seed": 3}, "environment": {}}))
    metrics = {"rmse": [0.83214, 0.06612], "per_split": [{"split": k, "rmse": 1.0} for k in range(20)],
               "curve": list(range(100)), "published": {"VI": {"rmse": 6.89}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"uci run {run_dir} (seed 3)"
    table = dict(line.split(None, 1) for line in out.splitlines()[2:])
    assert table == {"rmse": "[0.8321, 0.06612]", "per_split": "(20 entries of rmse, split)",
                     "curve": "(100 values)", "published.VI.rmse": "6.89"}


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("pyrobnn: error: ") and "\n" not in err, err
    assert captured.out == ""
    return err


def test_predict_rejects_bad_inputs(egg_run, tmp_path, capsys):
    run = str(egg_run)
    assert "expected 2 comma-separated numbers (weight (g), boiling time (min)); got 1" in \
        _error(capsys, ["predict", run, "--input", "58"])
    assert "got 3" in _error(capsys, ["predict", run, "--input", "58,5", "--input", "58,5,1"])
    assert "boiling time (min) 'abc' is not a number" in _error(capsys, ["predict", run, "--input", "58,abc"])
    assert "weight (g) '' is not a number" in _error(capsys, ["predict", run, "--input", ",5"])
    assert "must be a finite number; got 'inf'" in _error(capsys, ["predict", run, "--input", "inf,5"])
    assert "num-samples must be >= 1" in _error(capsys, ["predict", run, "--input", "58,5", "--num-samples", "0"])
    assert "--plot: folder not found" in \
        _error(capsys, ["predict", run, "--input", "58,5", "--plot", str(tmp_path / "no" / "h.png")])
    with pytest.raises(SystemExit) as e:  # --input is required (argparse's own usage error)
        main(["predict", run])
    assert e.value.code == 2
    capsys.readouterr()


def test_predict_and_report_reject_bad_run_dirs(egg_run, tmp_path, capsys):
    missing = str(tmp_path / "nope")
    for argv in (["predict", missing, "--input", "58,5"], ["report", missing]):
        assert _error(capsys, argv) == f"pyrobnn: error: run directory not found: {missing}"
    assert "no config.json" in _error(capsys, ["predict", str(tmp_path), "--input", "58,5"])
    for exp in ("stocks", "uci-yacht", "mnist"):
        d = tmp_path / exp / "20260101-000000"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        err = _error(capsys, ["predict", str(d), "--input", "1,2"])
        assert f"does not handle {exp.split('-')[0]} runs" in err
    broken = tmp_path / "egg" / "broken"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    (broken / "posterior.pt").write_bytes(b"not a checkpoint")
    assert _error(capsys, ["predict", str(broken), "--input", "1,2"]).startswith("pyrobnn: error: posterior.pt: ")
    (broken / "metrics.json").write_text("{not json")
    assert "not readable" in _error(capsys, ["report", str(broken)])
    assert "the run did not finish" in _error(capsys, ["report", str(tmp_path / "stocks" / "20260101-000000")])


def test_an_interrupted_run_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from tests.conftest import sigint_when_training_starts

    sigint_when_training_starts(monkeypatch)
    assert main(["run", "egg", *FAST, "--out", str(tmp_path)]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    (run_dir,) = (tmp_path / "egg").iterdir()
    hint = f"the run was interrupted before it finished; continue it with: pyrobnn run egg --resume {run_dir}"
    assert _error(capsys, ["predict", str(run_dir), "--input", "58,5"]) == \
        f"pyrobnn: error: {run_dir} has no posterior.pt: {hint}"
    assert _error(capsys, ["report", str(run_dir)]) == f"pyrobnn: error: {run_dir} has no metrics.json: {hint}"


def _fake_boston_csv(path, n=160, seed=0):
    """A file in the BostonHousing.csv format: medv depends on rm and lstat, plus noise."""
    from pyrobnn.experiments.boston import COLUMNS

    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(COLUMNS))), columns=COLUMNS)
    df["medv"] = 22 + 6 * df["rm"] - 4 * df["lstat"] + rng.normal(scale=1.0, size=n)
    df.to_csv(path, index=False)
    return df


def test_predict_a_boston_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PYROBNN_BOSTON_CSV", raising=False)
    csv = tmp_path / "boston.csv"
    df = _fake_boston_csv(csv)
    assert main(["run", "boston", "--data", str(csv), "--steps", "150", "--num-samples", "200", "--no-progress",
                 "--drop-b", "--repeats", "1", "--out", str(tmp_path)]) == 0
    (run_dir,) = (tmp_path / "boston").iterdir()
    capsys.readouterr()
    cols = [c for c in df.columns if c not in ("b", "medv")]
    hi_row = ",".join("2" if c == "rm" else "-2" if c == "lstat" else "0" for c in cols)   # medv about 42
    lo_row = ",".join("-2" if c == "rm" else "2" if c == "lstat" else "0" for c in cols)   # medv about 2
    assert main(["predict", str(run_dir), f"--input={hi_row}", f"--input={lo_row}", "--level", "0.9",
                 "--num-samples", "3000"]) == 0
    out = capsys.readouterr().out
    assert "12-50-1 net" in out and "90% interval" in out
    rows = re.findall(r"^(\d)\s+(\S+)\s+(\S+)\s+\[(\S+), (\S+)\]$", out, flags=re.M)
    (_, m1, s1, lo1, hi1), (_, m2, s2, lo2, hi2) = [tuple(map(float, r)) for r in rows]
    assert lo1 < m1 < hi1 and lo2 < m2 < hi2 and s1 > 0 and s2 > 0
    assert m1 > 30 and m2 < 14  # in original units, on the right sides of the target mean (about 22)
    assert hi1 - lo1 == pytest.approx(2 * 1.645 * s1, rel=0.25)
    assert "expected 12 comma-separated numbers (crim, zn," in \
        _error(capsys, ["predict", str(run_dir), "--input", hi_row + ",0"])
    assert "a boston run is a regression" in \
        _error(capsys, ["predict", str(run_dir), f"--input={hi_row}", "--plot", str(tmp_path / "h.png")])
    # the target scaling travels with the posterior: the data file is no longer needed
    csv.unlink()
    assert main(["predict", str(run_dir), f"--input={hi_row}", "--level", "0.9", "--num-samples", "3000"]) == 0
    (again,) = re.findall(r"^(\d)\s+(\S+)\s+(\S+)\s+\[(\S+), (\S+)\]$", capsys.readouterr().out, flags=re.M)
    assert float(again[1]) == pytest.approx(m1)  # the same draws (same seed) give the same mean
    assert main(["report", str(run_dir)]) == 0
    assert "calibration" in capsys.readouterr().out


def test_predict_a_sentiment_run_on_sentences(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PYROBNN_SENTIMENT_DIR", raising=False)
    assert main(["run", "sentiment", "--epochs", "6", "--det-epochs", "1", "--num-samples", "20", "--no-progress",
                 "--out", str(tmp_path)]) == 0  # the SIMULATED template corpus
    (run_dir,) = (tmp_path / "sentiment").iterdir()
    capsys.readouterr()
    png = tmp_path / "s.png"
    assert main(["predict", str(run_dir), "--input", "the food was excellent", "--input", "the phone was terrible",
                 "--num-samples", "2000", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^the (?:food|phone) was \w+\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+(\w+)$", out, flags=re.M)
    assert len(rows) == 2 and all(float(a) + float(b) == pytest.approx(1.0, abs=1e-3) for a, b, _ in rows)
    assert [r[2] for r in rows] == ["positive", "negative"]  # the corpus's sentiment words, learned
    assert mpimg.imread(png).shape[0] > 100
