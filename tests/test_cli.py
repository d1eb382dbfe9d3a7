import json

import matplotlib.image as mpimg
import pytest

from pyrobnn.experiments.cli import main

FAST = ["--epochs", "20", "--det-epochs", "20", "--num-samples", "300", "--pyro-baseline-samples", "30",
        "--no-progress"]


def test_egg_run_on_the_embedded_simulator_writes_a_complete_run_dir(tmp_path, capsys):
    assert main(["run", "egg", *FAST, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "bayesian" in out
    (run,) = (tmp_path / "egg").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["simulated"] is True
    for model in ("deterministic", "bayesian"):
        assert set(metrics[model]) >= {"accuracy", "nll", "brier", "ece"}
        assert 0.0 <= metrics[model]["accuracy"] <= 1.0
    freqs = [q["class_frequencies"] for q in metrics["query_eggs"]]
    assert [(q["weight"], q["time"]) for q in metrics["query_eggs"]] == [(54.0, 1.5), (53.0, 6.0), (47.9, 2.1)]
    assert all(abs(sum(f.values()) - 1) < 1e-6 for f in freqs)
    assert metrics["predictive_timing"]["pyro_predictive_seconds"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 0 and config["environment"]["torch"]
    for png in ("fig_2_01_scatter", "fig_2_02_time_histograms", "fig_2_03_time_violins",
                "fig_2_04_class_histograms"):
        img = mpimg.imread(run / f"{png}.png")
        assert img.shape[0] > 300 and img.shape[1] > 500
    assert (run / "posterior.pt").stat().st_size > 1000
    assert not list(run.glob("*train_state*.pt"))  # a finished run keeps results, not its training state
    assert len(json.loads((run / "history.json").read_text())) == 20


def test_list_and_errors(tmp_path, capsys):
    assert main(["list"]) == 0
    assert "egg" in capsys.readouterr().out
    assert main(["run", "egg", "--data", str(tmp_path / "missing.csv"), *FAST, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyrobnn: error: data file not found") and "\n" not in err
    bad = tmp_path / "bad.csv"
    bad.write_text(",weight,time\n0,55,3\n")
    assert main(["run", "egg", "--data", str(bad), *FAST, "--out", str(tmp_path)]) == 2
    assert "missing column(s) ['outcome']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "egg", "--guide", "nope"])
