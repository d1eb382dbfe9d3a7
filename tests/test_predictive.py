import pyro
import pytest
import torch
from pyro.infer import Predictive
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal, auto_normal, predict


def trained():
    torch.manual_seed(0)
    x = torch.randn(300, 2)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    bnn = pyrobnn.lift(nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)))
    guide = MeanFieldNormal(bnn)
    pyrobnn.fit(bnn, guide, (x, y), epochs=40, lr=0.03, batch_size=100, seed=0, progress=False)
    return bnn, guide, x, y


def test_summaries_are_consistent():
    bnn, guide, x, _ = trained()
    pp = predict(bnn, guide, x[:20], num_samples=3000, seed=0)
    assert pp.outputs.shape == (3000, 20, 3) and pp.draws.shape == (3000, 20)
    freq = pp.class_frequencies()
    torch.testing.assert_close(freq.sum(1), torch.ones(20))
    # sampled labels converge to the mean probabilities (3000 draws: s.e. <= 0.01)
    assert (freq - pp.mean_probs()).abs().max() < 0.05
    torch.testing.assert_close(pp.class_frequencies(votes=True).sum(1), torch.ones(20))
    h, eh, mi = pp.predictive_entropy(), pp.expected_entropy(), pp.mutual_information()
    assert (mi >= 0).all() and (h <= torch.log(torch.tensor(3.0)) + 1e-6).all()
    torch.testing.assert_close(h, eh + mi, atol=1e-5, rtol=0)


def test_matches_pyros_own_predictive_in_distribution():
    bnn, guide, x, _ = trained()
    xq = x[:5]
    ours = predict(bnn, guide, xq, num_samples=4000, seed=1).class_frequencies()
    obs = Predictive(bnn.model, guide=guide, num_samples=4000, return_sites=["obs"])(xq)["obs"]
    theirs = torch.nn.functional.one_hot(obs.reshape(4000, 5), 3).float().mean(0)
    assert (ours - theirs).abs().max() < 0.04


def test_chunked_draws_and_generic_guides():
    bnn, guide, x, _ = trained()
    full = predict(bnn, guide, x[:8], num_samples=2000, seed=3)
    chunked = predict(bnn, guide, x[:8], num_samples=2000, seed=3, chunk_size=300)
    assert chunked.outputs.shape == full.outputs.shape
    assert (chunked.mean_probs() - full.mean_probs()).abs().max() < 0.05
    pyro.clear_param_store()
    an = auto_normal(bnn)
    pp = predict(bnn, an, x[:8], num_samples=50)
    assert pp.outputs.shape == (50, 8, 3)
    assert pp.outputs.std(0).min() > 0  # draws differ


def test_regression_summaries():
    bnn = pyrobnn.lift(nn.Linear(1, 1), likelihood=pyrobnn.likelihoods.Normal(scale=0.5))
    guide = MeanFieldNormal(bnn, init_scale=0.01)
    pp = predict(bnn, guide, torch.zeros(4, 1), num_samples=20000, seed=0)
    torch.testing.assert_close(pp.std(), torch.full((4,), 0.5), atol=0.01, rtol=0)
    lo, hi = pp.interval(0.95)
    assert (lo < hi).all()
    assert abs(float((hi - lo).mean()) - 2 * 1.96 * 0.5) < 0.05


@pytest.mark.parametrize("make,x", [
    (lambda: nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)), torch.randn(50, 4)),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)),
     torch.randn(20, 1, 8, 8)),
])
def test_loop_and_vectorize_give_the_same_draws(make, x):
    torch.manual_seed(0)
    bnn = pyrobnn.lift(make())
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.1)
    pps = {k: pyrobnn.predict(bnn, guide, x, num_samples=12, seed=4, chunk_size=5, strategy=k)
           for k in ("loop", "vectorize", "auto")}
    torch.testing.assert_close(pps["loop"].outputs, pps["vectorize"].outputs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pps["auto"].outputs, pps["vectorize"].outputs, rtol=1e-4, atol=1e-5)
    assert pps["loop"].outputs.shape == (12, x.shape[0], 3)
    with pytest.raises(ValueError, match="strategy must be"):
        pyrobnn.predict(bnn, guide, x, num_samples=2, strategy="fast")


def test_the_strategy_follows_the_size_of_one_pass():
    from pyrobnn.predictive import LOOP_FLOATS, choose_strategy

    assert choose_strategy(3, 131) == "vectorize"  # the egg net's 5000 draws for 3 eggs
    assert choose_strategy(10_000, 1_600) == "loop"  # an MNIST-size MLP over 10,000 images
    assert choose_strategy(1, LOOP_FLOATS) == "loop" and choose_strategy(1, LOOP_FLOATS - 1) == "vectorize"


def test_a_learned_noise_gives_plain_summaries_fixed_at_predict_time():
    """The learned noise is a parameter: pp.std() once carried its gradient (``.numpy()`` refused) and followed it
    if training went on."""
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    y = x[:, 0] + 0.3 * torch.randn(40)
    bnn = pyrobnn.lift(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1),
                                           torch.nn.Flatten(0)), likelihood=pyrobnn.likelihoods.Normal(scale=None))
    guide = pyrobnn.MeanFieldNormal(bnn)
    pyrobnn.fit(bnn, guide, (x, y), epochs=20, lr=0.02, progress=False)
    pp = pyrobnn.predict(bnn, guide, x, num_samples=20, seed=0)
    std, ll = pp.std(), pp.log_likelihood(y)
    assert not std.requires_grad and not ll.requires_grad and std.numpy().shape == (40,)
    pyrobnn.fit(bnn, guide, (x, y), epochs=20, lr=0.05, progress=False)  # the noise moves on; pp does not
    assert torch.equal(pp.std(), std) and torch.equal(pp.log_likelihood(y), ll)
