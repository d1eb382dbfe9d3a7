"""The new likelihoods on real data: Bernoulli against Categorical(2) on the sentiment sentences, and a
two-target Normal on two stock tickers' daily returns."""
from __future__ import annotations

import pandas as pd
import pyro
import torch
from torch import nn

import pyrobnn
from pyrobnn import likelihoods, metrics
from pyrobnn.experiments.sentiment import SOURCES, read_sentences
from pyrobnn.experiments.stocks import read_closes
from pyrobnn.history import History
from pyrobnn.text import Vocabulary
from tests.conftest import data_file


class BagOfEmbeddings(nn.Module):
    """Token ids (0 = padding) -> mean of the word embeddings -> ``n_out`` logits."""

    def __init__(self, vocab: int, dim: int, n_out: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.out = nn.Linear(dim, n_out)

    def forward(self, tokens):
        mask = (tokens != 0).float().unsqueeze(-1)
        return self.out((self.emb(tokens) * mask).sum(1) / mask.sum(1).clamp(min=1))


def test_bernoulli_matches_categorical_on_the_sentiment_sentences():
    texts, labels = [], []
    for name in SOURCES.values():
        t, lab = read_sentences(data_file(f"sentiment_labelled_sentences/{name}"))
        texts, labels = texts + t, labels + lab
    y = torch.tensor(labels)
    folds = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).chunk(5)
    probs = {"bernoulli": torch.zeros(len(y), 2), "categorical": torch.zeros(len(y), 2)}
    for k, test in enumerate(folds):  # 5-fold cross-validation: every sentence is scored once
        train = torch.cat([f for j, f in enumerate(folds) if j != k])
        vocab = Vocabulary.build([texts[i] for i in train], min_count=2)
        x = vocab.encode(texts, max_len=40)
        for name, lik, width in (("bernoulli", likelihoods.Bernoulli(), 1),
                                 ("categorical", likelihoods.Categorical(2), 2)):
            torch.manual_seed(k)
            pyro.clear_param_store()
            bnn = pyrobnn.lift(BagOfEmbeddings(len(vocab), 16, width), likelihood=lik)
            guide = pyrobnn.MeanFieldNormal(bnn, init_scale=1e-3)
            pyrobnn.fit(bnn, guide, (x[train], y[train]), epochs=20, lr=0.01, batch_size=64, progress=False, seed=k)
            probs[name][test] = pyrobnn.predict(bnn, guide, x[test], num_samples=100, seed=k).mean_probs()
    acc = {name: metrics.accuracy(p, y) for name, p in probs.items()}
    nll = {name: metrics.nll(p, y) for name, p in probs.items()}
    print(f"5-fold CV over {len(y)} sentences: accuracy {acc}, NLL {nll}")
    assert acc["bernoulli"] > 0.75
    assert abs(acc["bernoulli"] - acc["categorical"]) <= 0.01


def test_two_target_normal_covers_both_tickers():
    closes = pd.concat({t: read_closes(data_file(f"stock_prices/{t}_2006-01-01_to_2018-01-01.csv"))[0]
                        for t in ("IBM", "MSFT")}, axis=1).dropna()  # the days both traded
    r = torch.tensor(closes.to_numpy(), dtype=torch.float32).log().diff(dim=0)  # [days, 2] daily log returns
    window = 5
    x = torch.stack([r[i - window:i].reshape(-1) for i in range(window, len(r))])  # both tickers' last 5 days
    y = r[window:]
    coverage = []
    for split in range(3):  # random 80/20 splits of the days
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(split))
        test, train = perm[: len(y) // 5], perm[len(y) // 5:]
        xs = (x - x[train].mean(0)) / x[train].std(0)
        ys = (y - y[train].mean(0)) / y[train].std(0)
        torch.manual_seed(split)
        pyro.clear_param_store()
        net = nn.Sequential(nn.Linear(2 * window, 16), nn.ReLU(), nn.Linear(16, 2))
        bnn = pyrobnn.lift(net, likelihood=likelihoods.Normal(scale=None, targets=2))  # one noise per ticker
        guide = pyrobnn.MeanFieldNormal(bnn, init_scale=1e-3)
        pyrobnn.fit(bnn, guide, (xs[train], ys[train]), epochs=10, lr=0.01, batch_size=128, progress=False, seed=split)
        lo, hi = pyrobnn.predict(bnn, guide, xs[test], num_samples=200, seed=split).interval(0.95)
        coverage.append(((ys[test] >= lo) & (ys[test] <= hi)).float().mean(0))
    cov = torch.stack(coverage)  # [split, ticker]
    print(f"95% coverage per split (rows) and ticker (IBM, MSFT): {cov.tolist()}")
    assert ((cov >= 0.90) & (cov <= 0.98)).all()


def _mixture_density_net(k: int = 3):
    """A user's mixture-density head (a likelihood pyrobnn does not ship) on a tanh MLP, as ``Custom``."""
    import pyro.distributions as dist
    from torch.nn.functional import softplus

    def mixture(out):
        return dist.MixtureSameFamily(dist.Categorical(logits=out[..., :k]),
                                      dist.Normal(out[..., k:2 * k], softplus(out[..., 2 * k:]) + 1e-2))

    torch.manual_seed(0)
    pyro.clear_param_store()
    net = nn.Sequential(nn.Linear(13, 32), nn.Tanh(), nn.Linear(32, 3 * k))
    return pyrobnn.lift(net, likelihood=likelihoods.Custom(mixture, name="mixture"))


def test_a_run_that_goes_backwards_says_so(recwarn):
    """Boston, standardised, a mixture-density net: at lr 0.005 the loss falls and fit stays quiet; at lr 0.05 Adam
    is unstable (the loss climbs back above where it started) and fit warns, naming the epoch, in the history too."""
    import numpy as np

    table = torch.from_numpy(np.loadtxt(data_file("uci_regression/bostonHousing/data/data.txt"))).float()
    x, y = table[:, :13], table[:, 13]
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    runs = {}
    for lr in (0.005, 0.05):
        bnn = _mixture_density_net()
        guide = pyrobnn.MeanFieldNormal(bnn)
        start = guide.loc_flat.detach().clone()
        hist = pyrobnn.fit(bnn, guide, (x, y), epochs=1500, lr=lr, progress=False)
        assert not torch.equal(start, guide.loc_flat.detach())
        runs[lr] = (hist, [str(w.message) for w in recwarn.list if w.category is RuntimeWarning], bnn, guide)
        recwarn.clear()
    calm, calm_warnings, bnn, guide = runs[0.005]
    assert sum(calm["loss"][-150:]) < sum(calm["loss"][:150]) and not calm_warnings and calm.loss_rose() is None
    pp = pyrobnn.predict(bnn, guide, x[:50], num_samples=200, seed=0)
    assert pp.draws.shape == (200, 50) and float((pp.mean() - y[:50]).pow(2).mean()) < 0.5  # y has variance 1
    wild, wild_warnings, _, _ = runs[0.05]
    (msg,) = wild_warnings
    assert msg.startswith("pyrobnn.fit: the training loss rose after epoch ") and "lower lr" in msg
    assert msg.removeprefix("pyrobnn.fit: ") in wild.events
    warmed = History(records=[{**r, "kl_weight": min(1.0, i / 750)} for i, r in enumerate(wild.records)])
    assert warmed.loss_rose() is None  # under a KL warm-up a rising loss is expected
