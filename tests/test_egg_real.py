"""The egg experiment on the real egg_times.csv (last 50 rows held out, the seed's protocol)."""
import math

import pytest

from pyrobnn.experiments.egg import EggConfig, run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    from tests.conftest import data_file

    csv = data_file("egg_times/egg_times.csv")
    out = tmp_path_factory.mktemp("runs")
    common = dict(data=str(csv), num_samples=2000, pyro_baseline_samples=0, out=str(out), progress=False)
    return {g: run(EggConfig(guide=g, **common)) for g in ("meanfield", "handwritten")}


def test_bayesian_model_on_real_eggs(runs):
    res = runs["meanfield"]
    assert res["simulated"] is False and res["n_test"] == 50 and res["n_train"] == 589
    bay, det = res["bayesian"], res["deterministic"]
    # 0.88 is what every seed we tried reaches (the seed article: 0.88); see docs/results.md
    assert bay["accuracy"] >= 0.86
    assert det["accuracy"] >= 0.80
    for m in (bay, det):
        assert math.isfinite(m["nll"]) and 0 < m["nll"] < 1.0
        assert 0 <= m["ece"] < 0.2
    assert bay["nll"] < 0.4


def test_seed_query_eggs_get_the_expected_answers(runs):
    q = {(e["weight"], e["time"]): e["class_frequencies"] for e in runs["meanfield"]["query_eggs"]}
    assert q[(54.0, 1.5)]["underdone"] > 0.9
    assert q[(53.0, 6.0)]["hard"] > 0.9
    assert q[(47.9, 2.1)]["underdone"] > 0.75  # seed fig. 2.04: 4614 / 5000 underdone


def test_handwritten_guide_trains_to_the_same_accuracy_as_the_automatic_one(runs):
    auto, hand = runs["meanfield"]["bayesian"], runs["handwritten"]["bayesian"]
    assert abs(hand["accuracy"] - auto["accuracy"]) <= 0.02 + 1e-9  # at most one of 50 eggs apart
    assert abs(hand["nll"] - auto["nll"]) < 0.05


def test_standard_classifiers_on_the_same_split(egg_csv, capsys):
    from pyrobnn.experiments.egg_baselines import main

    assert main(["--data", str(egg_csv)]) == 0
    out = capsys.readouterr().out
    rows = [line.rsplit(maxsplit=2) for line in out.splitlines()[1:7]]
    assert len(rows) == 6 and all(0.5 < float(cv) <= 1 and 0.5 < float(ho) <= 1 for _, cv, ho in rows)
    blocks = out.splitlines()[-1].split(": ")[1].split()
    assert len(blocks) == 13  # 639 rows in blocks of 50
