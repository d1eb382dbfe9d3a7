"""The notebooks in experiments/notebooks/ run end to end on small settings (PYROBNN_NOTEBOOK_FAST=1) on the
real data, in this interpreter's own Python (a throw-away kernelspec pointing at sys.executable). Each notebook
ends by printing one line of JSON, which is checked here. Nothing is written back into the repository."""
from __future__ import annotations

import json
import math
import os
import sys

import pytest

from tests.conftest import ROOT, data_file, fashion_dir

nbformat = pytest.importorskip("nbformat", reason="pip install -e .[notebooks] (or .[dev]) to run the notebooks")
nbclient = pytest.importorskip("nbclient", reason="pip install -e .[notebooks] (or .[dev]) to run the notebooks")
pytest.importorskip("ipykernel", reason="pip install -e .[notebooks] (or .[dev]) to run the notebooks")

NB_DIR = ROOT / "experiments" / "notebooks"
KERNEL = "pyrobnn-test-kernel"


def run_notebook(name: str, tmp_path, monkeypatch, **env) -> tuple[dict, dict]:
    """Execute ``name`` with the notebook folder as working directory; returns (executed notebook, summary)."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pyrobnn test (this venv)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # searched before user and system kernels
    kernel_env = {**os.environ, "PYROBNN_NOTEBOOK_FAST": "1", "OMP_NUM_THREADS": "1",
                  "IPYTHONDIR": str(tmp_path / "ipython"), "JUPYTER_PLATFORM_DIRS": "1",
                  "PYDEVD_DISABLE_FILE_VALIDATION": "1", **{k: str(v) for k, v in env.items()}}
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)  # executed in memory, never saved
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NB_DIR)}})
    client.execute(env=kernel_env)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = "".join(o.text for o in last.outputs if o.output_type == "stream" and o.name == "stdout")
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["fast"] is True
    assert summary["python_prefix"] == sys.prefix, "the kernel did not run in this environment's Python"
    n_images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert n_images >= 3, f"{name}: expected at least 3 figures, got {n_images}"
    return nb, summary


def markdown_outputs(nb) -> str:
    return "\n".join(o.data["text/markdown"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
                     if "text/markdown" in o.get("data", {}))


def test_egg_posterior_notebook(tmp_path, monkeypatch):
    csv = data_file("egg_times/egg_times.csv")
    nb, s = run_notebook("egg_posterior", tmp_path, monkeypatch, PYROBNN_EGG_CSV=csv)
    assert s["simulated"] is False and s["data"] == str(csv)
    assert f"real data, `{csv}`" in markdown_outputs(nb)
    # held-out metrics: the real split scores 0.88 at full settings; the fast run must be close
    assert 0.75 <= s["test"]["accuracy"] <= 1.0
    assert 0.0 < s["test"]["nll"] < 0.6 and 0.0 <= s["test"]["ece"] <= 1.0
    assert 0.0 <= s["mean_mutual_information"] <= s["mean_predictive_entropy"] <= math.log(3)
    # class histograms: frequencies sum to 1; the seed's clear eggs come out underdone and hard
    for egg in s["query_eggs"]:
        assert sum(egg["class_frequencies"].values()) == pytest.approx(1.0, abs=1e-5)
    assert s["query_eggs"][0]["class_frequencies"]["underdone"] > 0.8
    assert s["query_eggs"][1]["class_frequencies"]["hard"] > 0.8
    # outcome probabilities against boiling time, with their 5-95% band across draws
    times, mean, lo, hi = s["times"], s["mean_probs"], s["band_05"], s["band_95"]
    assert len(times) == len(mean) == len(lo) == len(hi) >= 20
    assert all(a < b for a, b in zip(times, times[1:]))
    for m, a, b in zip(mean, lo, hi):
        assert sum(m) == pytest.approx(1.0, abs=1e-4)
        assert all(0.0 <= ai <= bi <= 1.0 for ai, bi in zip(a, b))
        assert all(0.0 <= mi <= 1.0 for mi in m)
    assert mean[0][0] > 0.9 and mean[-1][2] > 0.9  # underdone at the shortest time, hard at the longest


def test_regression_uncertainty_notebook(tmp_path, monkeypatch):
    csv = data_file("boston_housing/BostonHousing.csv")
    nb, s = run_notebook("regression_uncertainty", tmp_path, monkeypatch, PYROBNN_BOSTON_CSV=csv)
    assert s["simulated"] is False and s["data"] == str(csv)
    assert "SIMULATED" not in markdown_outputs(nb)
    assert s["n_train"] + s["n_test"] == 506 and s["n_test"] == 126
    assert 0.0 <= s["coverage"] <= 1.0 and s["coverage"] == pytest.approx(s["coverage_95"])
    assert s["coverage"] >= 0.8 and s["width_95"] > 0
    assert 0.0 < s["rmse"] < 5.0 and -4.0 < s["log_likelihood"] < 0.0
    assert s["mean_epistemic_variance"] >= 0.0 and s["mean_aleatoric_variance"] > 0.0
    assert 0.0 <= s["epistemic_share"] <= 1.0
    levels = [c["level"] for c in s["calibration"]]
    observed = [c["observed"] for c in s["calibration"]]
    assert levels == sorted(levels) and all(0.0 <= o <= 1.0 for o in observed)
    assert all(a <= b + 1e-6 for a, b in zip(observed, observed[1:]))  # nested central intervals


def test_bring_your_own_net_notebook(tmp_path, monkeypatch):
    folder = fashion_dir()
    nb, s = run_notebook("bring_your_own_net", tmp_path, monkeypatch, PYROBNN_FASHION_DIR=folder)
    assert s["data"] == str(folder)
    assert s["n_train"] >= 2000 and 1000 <= s["n_test"] <= 2000
    # the user's own CNN, lifted and fitted: the ELBO loss falls, test accuracy far above chance (0.1);
    # the fast run scores about 0.83 accuracy and 0.50 NLL
    assert s["loss_last"] < s["loss_first"]
    assert s["test"]["accuracy"] >= 0.7
    assert 0.0 < s["test"]["nll"] < 1.0 and 0.0 <= s["test"]["ece"] <= 0.15
    # referral: accuracy on the kept images rises as the most uncertain are referred; the oracle bounds it
    r = s["referral"]
    assert r["fractions"][0] == 0.0 and len(r["fractions"]) >= 5
    assert len(r["entropy"]) == len(r["mi"]) == len(r["oracle"]) == len(r["fractions"])
    for curve in ("entropy", "mi", "oracle"):
        assert r[curve][0] == pytest.approx(s["test"]["accuracy"], abs=1e-6)  # nothing referred: plain accuracy
    for curve in ("entropy", "mi"):
        assert r[curve][-1] > r[curve][0] + 0.03
        assert all(a <= o + 1e-6 for a, o in zip(r[curve], r["oracle"]))
    assert all(a <= b + 1e-6 for a, b in zip(r["oracle"], r["oracle"][1:]))
    # checkpoint round trip into a fresh net: the same draws give identical predictions
    assert s["reload_identical"] is True
    # Pyro's own Predictive on bnn.model and the guide agrees with pyrobnn.predict within Monte Carlo error
    assert abs(s["predictive_accuracy"] - s["test"]["accuracy"]) <= 0.03
    assert s["predictive_mean_abs_diff"] <= 3 * s["seed_mean_abs_diff"] + 1e-3
    # a plain pyro.infer.SVI loop keeps training the same guide: its loss falls and its tensors move
    assert s["svi_loss_last"] < s["svi_loss_first"]
    assert s["svi_params_moved"] is True
