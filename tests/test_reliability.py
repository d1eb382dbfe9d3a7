"""Resume after an interrupt, the divergence guard, and same-seed reproducibility."""
import json
import math
import signal

import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal
from pyrobnn.checkpoint import read_checkpoint
from pyrobnn.experiments.cli import main
from pyrobnn.infer import STATE_FORMAT, DivergenceError


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 2, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


class SignalAt(nn.Module):
    """Wraps a guide and raises a real signal at its ``at``-th call (a deterministic Ctrl-C)."""

    def __init__(self, inner, at=-1, sig=signal.SIGTERM):
        super().__init__()
        self.inner, self.at, self.sig, self.calls = inner, at, sig, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            signal.raise_signal(self.sig)
        return self.inner(*args, **kwargs)

    def sample_posterior(self, n):
        return self.inner.sample_posterior(n)


def make(at=-1, sig=signal.SIGTERM):
    torch.manual_seed(0)
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3)))
    return bnn, SignalAt(MeanFieldNormal(bnn), at, sig)


KW = dict(epochs=6, lr=0.02, batch_size=25, seed=3, progress=False, loss="trace", num_particles=2,
          val_every=2, val_samples=20)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, sig):
    x, y = data()
    bnn, guide = make()
    ref = pyrobnn.fit(bnn, guide, (x, y), val_data=(x, y), **KW)
    want = {k: v.detach().clone() for k, v in guide.state_dict().items()}

    ck = tmp_path / "state.pt"
    bnn, guide = make(at=14, sig=sig)  # mid-epoch 3
    part = pyrobnn.fit(bnn, guide, (x, y), val_data=(x, y), checkpoint=ck, **KW)
    assert part.interrupted and signal.Signals(sig).name in part.events[-1]
    state = read_checkpoint(ck, STATE_FORMAT)
    # guide calls: 1 setup, then per epoch 5 steps + 1 checkpoint write; call 14 = epoch 3, step 0
    assert (state["epoch"], state["step"]) == (3, 1)

    bnn, guide = make()  # a fresh process would start from nothing
    done = pyrobnn.fit(bnn, guide, (x, y), val_data=(x, y), checkpoint=ck, resume=True, **KW)
    assert not done.interrupted and len(done) == 6
    for k, v in guide.state_dict().items():
        torch.testing.assert_close(v, want[k], atol=1e-6, rtol=0)
    assert done["loss"] == pytest.approx(ref["loss"], abs=1e-6)
    assert done["val_accuracy"] == ref["val_accuracy"]


class Boom(nn.Module):
    """Identity until armed; then turns its input into NaN (a stand-in for numerical overflow)."""

    armed_calls = set()
    calls = 0

    def forward(self, x):
        Boom.calls += 1
        return x * math.nan if Boom.calls in Boom.armed_calls or -1 in Boom.armed_calls else x


def boom_net():
    torch.manual_seed(0)
    Boom.calls = 0
    return pyrobnn.lift(nn.Sequential(nn.Linear(2, 8), Boom(), nn.ReLU(), nn.Linear(8, 3)))


def test_a_transient_nan_restores_the_epoch_and_retries_at_a_lower_lr():
    x, y = data()
    bnn = boom_net()
    Boom.armed_calls = {5}  # calls 1-2 are setup (output-width probe, parameter discovery): NaN at epoch 1 step 2
    guide = MeanFieldNormal(bnn)
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=3, lr=0.02, batch_size=40, progress=False)
    assert len(hist) == 3 and all(math.isfinite(v) for v in hist["loss"])
    assert "non-finite" in hist.events[0] and "epoch 1 step 2" in hist.events[0]
    assert "retrying with lr=0.01" in hist.events[0]
    assert hist.last["lr"] == 0.01


def test_a_persistent_nan_stops_names_the_site_and_never_overwrites_the_checkpoint(tmp_path):
    x, y = data()
    bnn = boom_net()
    Boom.armed_calls = set()
    guide = MeanFieldNormal(bnn)
    ck = tmp_path / "state.pt"
    pyrobnn.fit(bnn, guide, (x, y), epochs=2, lr=0.02, batch_size=40, progress=False, checkpoint=ck)
    good = ck.read_bytes()
    before = {k: v.detach().clone() for k, v in guide.state_dict().items()}
    Boom.armed_calls = {-1}  # every call from now on
    with pytest.raises(DivergenceError) as e:
        pyrobnn.fit(bnn, guide, (x, y), epochs=4, lr=0.02, batch_size=40, progress=False, checkpoint=ck,
                    resume=True, max_retries=1)
    msg = str(e.value)
    assert "at epoch 3 step 0" in msg and "site 'obs' has a NaN/inf log-density" in msg and "\n" not in msg
    assert ck.read_bytes() == good
    for k, v in guide.state_dict().items():
        torch.testing.assert_close(v, before[k])  # the last good state is back in place
    Boom.armed_calls = set()


def test_the_same_seed_gives_the_same_metrics(tmp_path, capsys):
    fast = ["run", "egg", "--epochs", "15", "--det-epochs", "15", "--num-samples", "500",
            "--pyro-baseline-samples", "0", "--no-progress", "--seed", "4", "--out"]
    runs = []
    for sub in ("a", "b"):
        assert main([*fast, str(tmp_path / sub)]) == 0
        (d,) = (tmp_path / sub / "egg").iterdir()
        m = json.loads((d / "metrics.json").read_text())
        m.pop("predictive_timing")
        m.pop("train_seconds")
        runs.append(m)
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["seed"] == 4 and cfg["environment"]["pyro"] and "git_commit" in cfg["environment"]
    assert runs[0] == runs[1]
    capsys.readouterr()


def test_cli_sigterm_then_resume_matches_an_uninterrupted_run(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = [sys.executable, "-m", "pyrobnn.experiments.cli", "run", "egg", "--epochs", "150", "--det-epochs", "5",
            "--num-samples", "300", "--pyro-baseline-samples", "0", "--no-progress", "--seed", "2"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "a")], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "a").glob("egg/*/train_state.pt")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "interrupted: SIGTERM at epoch" in out and "continue with: pyrobnn run egg --resume" in out
    (run_dir,) = (tmp_path / "a" / "egg").iterdir()
    assert not (run_dir / "metrics.json").exists()

    resumed = subprocess.run([*args[:3], "run", "egg", "--resume", str(run_dir), "--no-progress"], cwd=root,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    straight = subprocess.run([*args, "--out", str(tmp_path / "b")], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0
    (ref_dir,) = (tmp_path / "b" / "egg").iterdir()
    a = json.loads((run_dir / "metrics.json").read_text())
    b = json.loads((ref_dir / "metrics.json").read_text())
    assert a["bayesian"] == pytest.approx(b["bayesian"], abs=1e-6)
    assert a["query_eggs"] == b["query_eggs"]


def test_other_experiments_stop_cleanly_on_a_signal_without_writing_results(tmp_path, capsys, monkeypatch):
    from tests.conftest import data_file, sigint_when_training_starts

    csv = data_file("boston_housing/BostonHousing.csv")
    sigint_when_training_starts(monkeypatch)
    assert main(["run", "boston", "--data", str(csv), "--steps", "50", "--repeats", "1", "--no-progress",
                 "--out", str(tmp_path)]) == 130
    assert "interrupted: SIGINT" in capsys.readouterr().err
    (run_dir,) = (tmp_path / "boston").iterdir()
    assert not (run_dir / "metrics.json").exists()


def test_boston_sigint_then_resume_matches_a_straight_run(tmp_path, capsys, monkeypatch):
    """Two splits, each a held-out fit for the noise (60 steps) then the model (60 steps): the signal
    comes in split 0's second fit, after the first has finished."""
    from tests.conftest import data_file

    csv = data_file("boston_housing/BostonHousing.csv")
    args = ["run", "boston", "--data", str(csv), "--steps", "60", "--num-samples", "200", "--repeats", "2",
            "--calibrate", "0.25", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    (ref_dir,) = (tmp_path / "b" / "boston").iterdir()

    calls = {"n": 0}
    real_step = torch.optim.Optimizer.zero_grad

    def zero_grad_then_signal(self, *a, **k):  # a real SIGINT after the 90th optimiser step
        calls["n"] += 1
        if calls["n"] == 90:
            signal.raise_signal(signal.SIGINT)
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", zero_grad_then_signal)
    assert main([*args, "--out", str(tmp_path / "a")]) == 130
    err = capsys.readouterr().err
    assert "interrupted: SIGINT" in err and "continue with: pyrobnn run boston --resume" in err
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "a" / "boston").iterdir()
    assert (run_dir / "train_state_0.pt").is_file() and (run_dir / "calibration_train_state_0.pt").is_file()
    assert not (run_dir / "metrics.json").exists()
    assert main(["run", "boston", "--resume", str(run_dir), "--no-progress"]) == 0
    a = json.loads((run_dir / "metrics.json").read_text())
    b = json.loads((ref_dir / "metrics.json").read_text())
    assert a["noise_factor"] == b["noise_factor"] != 1.0
    for key in ("rmse", "log_likelihood", "coverage_95"):
        assert a[key] == pytest.approx(b[key], abs=1e-5)
        assert a["repeats"][key] == pytest.approx(b["repeats"][key], abs=1e-5)
    assert not list(run_dir.glob("*train_state*"))


def test_keep_best_restores_the_best_validated_epoch_also_after_a_resume(tmp_path):
    x, y = data()
    # validation labels permuted against the rule the net learns: validation NLL worsens as it learns,
    # so the best epoch is an early one and restoring it is visible
    kw = dict(KW, epochs=8, val_every=1, keep_best="nll", val_data=(x[80:], (y[80:] + 1) % 3))
    bnn, guide = make()
    seen = {}

    def remember(rec):
        seen[rec["epoch"]] = {k: v.detach().clone() for k, v in guide.state_dict().items()}

    ref = pyrobnn.fit(bnn, guide, (x[:80], y[:80]), callback=remember, **kw)
    best = min(ref.records, key=lambda r: r["val_nll"])["epoch"]
    assert ref.best_epoch == best < 8
    assert f"restored epoch {best}" in ref.events[-1]
    for k, v in guide.state_dict().items():
        torch.testing.assert_close(v, seen[best][k], atol=0, rtol=0)
    assert any(not torch.equal(v, seen[8][k]) for k, v in guide.state_dict().items())

    ck = tmp_path / "state.pt"
    bnn, guide = make(at=20)
    assert pyrobnn.fit(bnn, guide, (x[:80], y[:80]), checkpoint=ck, **kw).interrupted
    bnn, guide = make()
    done = pyrobnn.fit(bnn, guide, (x[:80], y[:80]), checkpoint=ck, resume=True, **kw)
    assert done.best_epoch == best
    for k, v in guide.state_dict().items():
        torch.testing.assert_close(v, seen[best][k], atol=1e-6, rtol=0)


def test_keep_best_needs_validation_data_and_a_metric_of_the_likelihood():
    x, y = data()
    bnn, guide = make()
    with pytest.raises(ValueError, match="keep_best needs val_data"):
        pyrobnn.fit(bnn, guide, (x, y), epochs=1, progress=False, keep_best="nll")
    with pytest.raises(ValueError, match=r"one of \['accuracy', 'brier', 'ece', 'nll'\]; got 'rmse'"):
        pyrobnn.fit(bnn, guide, (x, y), val_data=(x, y), epochs=1, progress=False, keep_best="rmse")
