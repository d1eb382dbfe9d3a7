"""The posterior as the next prior: tensor Normal priors (fast path, checkpoints), the conjugate check against the
closed-form posterior, and variational continual learning on split MNIST (``pyrobnn run continual``)."""
import copy
import json
import signal

import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn import likelihoods, priors
from pyrobnn.checkpoint import load_posterior, read_checkpoint, save_posterior, saved_priors
from pyrobnn.experiments.cli import main
from pyrobnn.fastelbo import supports
from tests.conftest import data_file


def _regression(n=600, d=5, sigma=0.5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, generator=g) + sigma * torch.randn(n, generator=g)
    return x, y, sigma


def _fit_linear(x, y, sigma, prior=None, priors_=None, init=None, steps=800):
    torch.manual_seed(0)
    net = nn.Linear(x.shape[1], 1, bias=False)
    bnn = pyrobnn.lift(net, prior=prior, priors=priors_, likelihood=likelihoods.Normal(scale=sigma))
    guide = pyrobnn.MeanFieldNormal(bnn, init=init or "net", init_scale=0.05)
    assert supports(bnn, guide)  # tensor priors stay on the fast path
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=steps, lr=0.02, num_particles=8, optimizer="clipped_adam",
                       lr_decay=(0.001 / 0.02) ** (1 / steps), seed=0, progress=False)
    assert hist["loss"][-1] < hist["loss"][0]
    return bnn, guide


def test_posterior_of_one_half_as_prior_for_the_other_equals_the_closed_form_posterior():
    """Bayesian linear regression with known noise: prior N(0, 1) on 5 weights; mean-field VI on the first 300 rows,
    its posterior as the prior for the last 300; against the exact posterior on all 600 rows."""
    x, y, sigma = _regression()
    precision = torch.eye(5, dtype=torch.float64) + x.double().T @ x.double() / sigma**2
    cov = torch.linalg.inv(precision)
    mean = cov @ x.double().T @ y.double() / sigma**2
    bnn1, guide1 = _fit_linear(x[:300], y[:300], sigma, prior=priors.Normal(0.0, 1.0))
    updated = priors.from_posterior(bnn1, guide1)
    assert set(updated) == {"weight"} and isinstance(updated["weight"], priors.TensorNormal)
    bnn2, guide2 = _fit_linear(x[300:], y[300:], sigma, priors_=updated,
                               init={"weight": guide1.loc["weight"].detach().clone()})
    m, s = guide2.loc["weight"].detach().double().reshape(-1), guide2.scale("weight").detach().double().reshape(-1)
    mean_err = float((m - mean).norm() / mean.norm())
    std_err = float((s / cov.diagonal().sqrt() - 1).abs().max())
    print(f"sequential vs closed form: mean relative error {mean_err:.4f}, worst std ratio error {std_err:.4f}")
    assert mean_err < 0.02 and std_err < 0.10


def test_from_posterior_inflates_takes_draws_and_refuses_bad_input():
    bnn = pyrobnn.lift(nn.Linear(3, 2))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.2)
    p = priors.from_posterior(bnn, guide, inflate=2.0)
    torch.testing.assert_close(p["weight"].scale, torch.full((2, 3), 0.4))
    torch.testing.assert_close(p["bias"].loc, guide.loc["bias"].detach())
    draws = {"weight": torch.randn(500, 2, 3) * 0.3 + 1.0, "bias": torch.randn(500, 2)}
    q = priors.from_posterior(bnn, draws)
    assert abs(float(q["weight"].loc.mean()) - 1.0) < 0.05 and abs(float(q["weight"].scale.mean()) - 0.3) < 0.03
    auto = pyrobnn.auto_normal(bnn)
    r = priors.from_posterior(bnn, auto, x=torch.randn(4, 3), num_samples=300)
    assert r["bias"].loc.shape == (2,)
    with pytest.raises(ValueError, match="pass x"):
        priors.from_posterior(bnn, auto)
    with pytest.raises(ValueError, match=r"draws of 'bias' must be \[S >= 2, \*\(2,\)\]"):
        priors.from_posterior(bnn, {"weight": draws["weight"], "bias": torch.randn(500, 3)})
    with pytest.raises(ValueError, match="inflate must be a finite number > 0"):
        priors.from_posterior(bnn, guide, inflate=0)
    with pytest.raises(ValueError, match="scale finite and > 0"):
        priors.TensorNormal(torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"TensorNormal of shape \(2,\) given to a parameter of shape \(3, 2\)"):
        pyrobnn.lift(nn.Linear(2, 3), priors={"weight": priors.TensorNormal(torch.zeros(2), torch.ones(2))}).model(
            torch.randn(1, 2))


def test_checkpoints_hold_tensor_priors(tmp_path):
    net = nn.Linear(3, 2)
    tensor = {"weight": priors.TensorNormal(torch.randn(2, 3), torch.rand(2, 3) + 0.1)}
    bnn = pyrobnn.lift(net, priors=tensor)
    guide = pyrobnn.MeanFieldNormal(bnn)
    save_posterior(tmp_path / "p.pt", bnn, guide, torch.randn(1, 3))
    back = saved_priors(read_checkpoint(tmp_path / "p.pt"))
    assert back["weight"] == tensor["weight"]
    same = pyrobnn.lift(copy.deepcopy(net), priors=back)
    load_posterior(tmp_path / "p.pt", same, pyrobnn.MeanFieldNormal(same), torch.randn(1, 3))
    for other in ({}, {"weight": priors.TensorNormal(torch.zeros(2, 3), torch.ones(2, 3))}):
        b = pyrobnn.lift(copy.deepcopy(net), priors=other)
        with pytest.raises(ValueError, match="checkpoint does not match the priors"):
            load_posterior(tmp_path / "p.pt", b, pyrobnn.MeanFieldNormal(b), torch.randn(1, 3))


FAST = ["--epochs", "3", "--hidden", "32", "--num-samples", "20", "--coreset-epochs", "3", "--no-progress"]


@pytest.fixture(scope="module")
def mnist_dir():
    return data_file("mnist/t10k-images-idx3-ubyte.gz").parent


def test_continual_sigint_in_a_later_task_resumes_to_the_same_result(mnist_dir, tmp_path, capsys, monkeypatch):
    args = ["run", "continual", "--data-dir", str(mnist_dir), *FAST]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    (ref_dir,) = (tmp_path / "a" / "continual").iterdir()
    ref = json.loads((ref_dir / "metrics.json").read_text())

    import pyrobnn.infer as infer

    calls = {"fits": 0, "steps": 0}
    real_enter, real_zero = infer._StopSignal.__enter__, torch.optim.Optimizer.zero_grad

    def enter(self):  # count the fits: task t's, then its coreset fit; task t is the (2t + 1)-th
        calls["fits"] += 1
        return real_enter(self)

    def zero_grad_then_signal(self, *a, **k):  # a real SIGINT 5 steps into task 3 (prior: task 2's posterior)
        if calls["fits"] == 7:
            calls["steps"] += 1
            if calls["steps"] == 5:
                signal.raise_signal(signal.SIGINT)
        return real_zero(self, *a, **k)

    monkeypatch.setattr(infer._StopSignal, "__enter__", enter)
    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", zero_grad_then_signal)
    assert main([*args, "--out", str(tmp_path / "b")]) == 130
    monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", real_zero)
    monkeypatch.setattr(infer._StopSignal, "__enter__", real_enter)
    (run_dir,) = (tmp_path / "b" / "continual").iterdir()
    assert (run_dir / "train_state.pt").is_file() and not (run_dir / "metrics.json").exists()
    assert main(["run", "continual", "--resume", str(run_dir), "--no-progress"]) == 0
    res = json.loads((run_dir / "metrics.json").read_text())
    assert res["vcl"] == ref["vcl"] and res["fine_tuning"] == ref["fine_tuning"]
    assert res["vcl_coreset"] == ref["vcl_coreset"] and res["fine_tuning_coreset"] == ref["fine_tuning_coreset"]
    assert [len(r) for r in res["vcl"]] == [1, 2, 3, 4, 5] == [len(r) for r in res["vcl_coreset"]]
    assert saved_priors(read_checkpoint(run_dir / "task_3.pt"))  # task 3 trained against tensor priors
    assert (run_dir / "continual_accuracy.png").stat().st_size > 10_000
