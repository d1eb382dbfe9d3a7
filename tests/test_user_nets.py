"""Nets the seeds never used, on real data, through every route: an image-to-image denoiser and a per-pixel
classifier (outputs of several dims per row, flattened per row), an EmbeddingBag text classifier (token ids
to a first layer that is not an Embedding), and a float64 regressor whose pretrained first layer is frozen.
Each training test checks that the loss fell and the parameters moved."""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import pyrobnn
from pyrobnn import likelihoods, priors
from pyrobnn.experiments.boston import load_boston
from pyrobnn.experiments.mnist import read_set
from pyrobnn.experiments.sentiment import SOURCES, read_sentences
from pyrobnn.text import Vocabulary
from tests.conftest import data_file

SIDE = 14  # MNIST downsampled 28 -> 14 keeps the conv nets small


def _mnist_images(n: int) -> torch.Tensor:
    folder = data_file("mnist/t10k-images-idx3-ubyte.gz").parent
    x, _ = read_set(folder, "t10k")
    return nn.functional.avg_pool2d(x[:n].float()[:, None] / 255.0, 2)  # [n, 1, 14, 14] in [0, 1]


def _noisy(clean: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return clean + 0.4 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))


def _fit_trains(bnn, guide, data, drop: float = 1.0, **kw):
    """``fit`` with a MeanFieldNormal guide: the loss falls (below ``drop`` times its first epoch's) and both of the
    guide's tensors move. Returns the history."""
    before = {n: p.detach().clone() for n, p in guide.named_parameters()}
    hist = pyrobnn.fit(bnn, guide, data, progress=False, **kw)
    assert hist.records[-1]["loss"] < drop * hist.records[0]["loss"]
    moved = [n for n, p in guide.named_parameters() if not torch.equal(before[n], p.detach())]
    assert sorted(moved) == ["loc_flat", "rho_flat"]
    return hist


def _svi_loss_falls(bnn, guide, x, y, steps=30, lr=0.02) -> tuple[float, float]:
    svi = SVI(bnn.model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    losses = [svi.step(x, y, x.shape[0]) for _ in range(steps)]
    return sum(losses[:5]) / 5, sum(losses[-5:]) / 5


def test_an_image_to_image_denoiser_trains_on_rows_flattened_like_its_output():
    clean = _mnist_images(400)
    noisy = _noisy(clean)
    tr, te = slice(0, 300), slice(300, 400)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    bnn = pyrobnn.lift(net, prior=priors.Normal(0, 1), likelihood=likelihoods.Normal(scale=None))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
    _fit_trains(bnn, guide, (noisy[tr], clean[tr]), epochs=40, lr=0.02, batch_size=100, drop=0.5)
    assert bnn.out_row_shape == (1, SIDE, SIDE) and bnn.row_shape(noisy) == (SIDE * SIDE,)

    pp = pyrobnn.predict(bnn, guide, noisy[te], num_samples=20)
    assert tuple(pp.draws.shape) == (20, 100, SIDE * SIDE)
    denoised = pp.mean().unflatten(-1, bnn.out_row_shape)
    mse, mse_input = float(((denoised - clean[te]) ** 2).mean()), float(((noisy[te] - clean[te]) ** 2).mean())
    assert mse < 0.5 * mse_input, (mse, mse_input)  # the posterior mean removes most of the noise
    assert bool((pp.std() > 0).all())
    report = pyrobnn.metrics.regression_report(pp, clean[te])  # targets shaped like the images are flattened alike
    assert pp.log_likelihood(clean[te]).shape == (100,) and 0.8 < report["coverage_95"] <= 1.0, report
    conformal = pyrobnn.conformal.ConformalRegressor(0.9).calibrate(pp, clean[te])  # a threshold per pixel
    assert tuple(conformal.interval(pp)[0].shape) == (100, SIDE * SIDE)

    pyro.clear_param_store()  # a plain Pyro loop with unflattened targets, then Pyro's Predictive
    auto = AutoNormal(bnn.model, init_scale=0.01)
    first, last = _svi_loss_falls(bnn, auto, noisy[tr], clean[tr])
    assert last < first
    obs = Predictive(bnn.model, guide=auto, num_samples=5, parallel=True)(noisy[te])["obs"]
    assert tuple(obs.shape) == (5, 100, SIDE * SIDE)


def _segmentation_likelihood() -> likelihoods.Custom:
    """Two logits per pixel, [..., N, 2 * H * W] flattened: one Categorical per pixel, pixels as the event."""
    def per_pixel(out):
        return dist.Categorical(logits=out.unflatten(-1, (2, -1)).transpose(-1, -2)).to_event(1)
    return likelihoods.Custom(per_pixel, name="per_pixel")


def test_a_per_pixel_classifier_trains_through_a_custom_likelihood_and_categorical_names_the_route():
    clean = _mnist_images(300)
    noisy, stroke = _noisy(clean, seed=1), (clean > 0.3).long()  # [N, 1, 14, 14] labels: stroke or background
    labels = stroke[:, 0]  # one label per pixel, [N, 14, 14]
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    plain = pyrobnn.lift(net)  # the default Categorical likelihood
    with pytest.raises(ValueError) as e:
        pyrobnn.fit(plain, pyrobnn.MeanFieldNormal(plain), (noisy, labels), epochs=1, progress=False)
    assert "Categorical scores one label per row, but the net returns [2, 14, 14] per row" in str(e.value)
    assert "likelihoods.Custom" in str(e.value) and "\n" not in str(e.value)

    bnn = pyrobnn.lift(net, likelihood=_segmentation_likelihood())
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
    _fit_trains(bnn, guide, (noisy[:200], labels[:200]), epochs=30, lr=0.02, batch_size=50)
    pp = pyrobnn.predict(bnn, guide, noisy[200:], num_samples=20)
    assert tuple(pp.draws.shape) == (20, 100, SIDE * SIDE)
    vote = (pp.draws.float().mean(0) > 0.5).long()
    truth = labels[200:].flatten(1)
    majority = max(float(truth.float().mean()), 1 - float(truth.float().mean()))
    accuracy = float((vote == truth).float().mean())
    assert accuracy > majority + 0.05, (accuracy, majority)

    pyro.clear_param_store()
    bnn = pyrobnn.lift(net, likelihood=_segmentation_likelihood())
    auto = AutoNormal(bnn.model, init_scale=0.01)
    first, last = _svi_loss_falls(bnn, auto, noisy[:200], labels[:200])
    assert last < first
    obs = Predictive(bnn.model, guide=auto, num_samples=4, parallel=True)(noisy[200:])["obs"]
    assert tuple(obs.shape) == (4, 100, SIDE * SIDE)


def test_a_multi_label_net_trains_through_a_custom_bernoulli_and_bernoulli_names_the_route():
    folder = data_file("mnist/t10k-images-idx3-ubyte.gz").parent
    images, digits = read_set(folder, "t10k")
    x = nn.functional.avg_pool2d(images[:600].float()[:, None] / 255.0, 2).flatten(1)  # [600, 196]
    labels = torch.stack([digits[:600] % 2, (digits[:600] >= 5).long()], 1).float()  # odd? five or more?
    net = nn.Sequential(nn.Linear(196, 32), nn.ReLU(), nn.Linear(32, 2))
    plain = pyrobnn.lift(net, likelihood=likelihoods.Bernoulli())
    with pytest.raises(ValueError, match=r"Bernoulli needs one logit per row .* for several labels per row, Custom"):
        pyrobnn.fit(plain, pyrobnn.MeanFieldNormal(plain), (x, labels), epochs=1, progress=False)

    multilabel = likelihoods.Custom(lambda out: dist.Bernoulli(logits=out).to_event(1), name="multilabel")
    bnn = pyrobnn.lift(net, likelihood=multilabel)
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
    _fit_trains(bnn, guide, (x[:500], labels[:500]), epochs=30, lr=0.01, batch_size=100)
    pp = pyrobnn.predict(bnn, guide, x[500:], num_samples=50)
    assert tuple(pp.draws.shape) == (50, 100, 2)
    accuracy = ((pp.mean() > 0.5).float() == labels[500:]).float().mean(0)  # per label; chance about 0.5
    assert bool((accuracy > 0.7).all()), accuracy

    pyro.clear_param_store()
    auto = AutoNormal(bnn.model, init_scale=0.01)
    first, last = _svi_loss_falls(bnn, auto, x[:500], labels[:500])
    assert last < first
    obs = Predictive(bnn.model, guide=auto, num_samples=4, parallel=True)(x[500:])["obs"]
    assert tuple(obs.shape) == (4, 100, 2)


class BagOfWords(nn.Module):
    """Mean of word vectors (an EmbeddingBag that skips padding) and a linear read-out."""

    def __init__(self, vocab: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, 16, mode="mean", padding_idx=0)
        self.out = nn.Linear(16, 2)

    def forward(self, ids):
        return self.out(self.bag(ids))


def _sentences():
    """All three sources' sentences, labels, a vocabulary of the training part, and a fixed 2400/600 split."""
    folder = data_file(f"sentiment_labelled_sentences/{SOURCES['yelp']}").parent
    texts, labels = [], []
    for f in SOURCES.values():
        t, lab = read_sentences(folder / f)
        texts, labels = texts + t, labels + lab
    perm = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:2400], perm[2400:]
    return texts, torch.tensor(labels), Vocabulary.build([texts[i] for i in tr], min_count=2), tr, te


def test_an_embedding_bag_classifier_takes_token_ids_on_the_real_sentences():
    texts, y, vocab, tr, te = _sentences()
    ids = vocab.encode(texts, max_len=24)
    net = BagOfWords(len(vocab))
    bnn = pyrobnn.lift(net, prior=priors.Normal(0, 1))
    assert bnn.vocab_size == len(vocab)  # read from the EmbeddingBag: X is token ids, not features
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
    _fit_trains(bnn, guide, (ids[tr], y[tr]), epochs=15, lr=0.03, batch_size=100)
    pp = pyrobnn.predict(bnn, guide, ids[te], num_samples=50)
    accuracy = float((pp.mean_probs().argmax(-1) == y[te]).float().mean())
    assert accuracy > 0.7, accuracy  # balanced classes: chance is 0.5
    with pytest.raises(ValueError, match=r"token ids outside \[0, "):
        pyrobnn.predict(bnn, guide, ids[te] + len(vocab), num_samples=2)

    pyro.clear_param_store()
    auto = AutoNormal(bnn.model, init_scale=0.01)
    first, last = _svi_loss_falls(bnn, auto, ids[tr[:500]], y[tr[:500]], lr=0.05)
    assert last < first
    obs = Predictive(bnn.model, guide=auto, num_samples=4, parallel=True)(ids[te])["obs"]
    assert tuple(obs.shape) == (4, len(te))


class SentenceTransformer(nn.Module):
    """What users write: torch's default TransformerEncoder (nested tensors on) with a padding mask from the ids,
    read out at the first token. In eval mode torch takes its fused path, which vmap cannot batch."""

    def __init__(self, vocab: int, d: int = 16, length: int = 24):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(length, d))
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(d, 2)

    def forward(self, ids):
        return self.head(self.encoder(self.emb(ids) + self.pos, src_key_padding_mask=ids == 0)[:, 0])


def test_a_default_transformer_with_a_padding_mask_trains_and_predicts_vectorised():
    texts, y, vocab, tr, te = _sentences()
    ids = vocab.encode(texts, max_len=24)
    bnn = pyrobnn.lift(SentenceTransformer(len(vocab)), prior=priors.Normal(0, 1))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
    start = guide.loc_flat.detach().clone()
    hist = pyrobnn.fit(bnn, guide, (ids[tr], y[tr]), epochs=6, lr=0.01, batch_size=100, num_particles=2,
                       progress=False)
    assert hist.records[-1]["loss"] < hist.records[0]["loss"] and not torch.equal(start, guide.loc_flat)
    fused = pyrobnn.predict(bnn, guide, ids[te], num_samples=8, seed=1, strategy="loop")  # torch's fused path
    batched = pyrobnn.predict(bnn, guide, ids[te], num_samples=8, seed=1, strategy="vectorize")
    torch.testing.assert_close(batched.outputs, fused.outputs, atol=1e-4, rtol=0)
    accuracy = float((batched.mean_probs().argmax(-1) == y[te]).float().mean())
    assert accuracy > 0.6, accuracy
    bnn.eval()
    obs = Predictive(bnn.model, guide=guide, num_samples=4, parallel=True)(ids[te])["obs"]
    assert tuple(obs.shape) == (4, len(te))


class PackedGRU(nn.Module):
    """What users write for sentences of different lengths: pack_padded_sequence (imported by name), a
    bidirectional GRU, and its final states of both directions."""

    def __init__(self, vocab: int, d: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.gru = nn.GRU(d, d, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * d, 2)

    def forward(self, ids):
        lengths = (ids != 0).sum(1).clamp_min(1).cpu()
        _, h = self.gru(pack_padded_sequence(self.emb(ids), lengths, batch_first=True, enforce_sorted=False))
        return self.head(torch.cat([h[0], h[1]], -1))


def test_a_packed_sequence_gru_trains_vectorised_and_predicts_as_torchs_kernel_on_the_real_sentences():
    """Packed sequences were refused ("packed sequences are not supported in a lifted net")."""
    texts, y, vocab, tr, te = _sentences()
    ids = vocab.encode(texts, max_len=20)
    bnn = pyrobnn.lift(PackedGRU(len(vocab)), prior=priors.Normal(0, 1))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
    _fit_trains(bnn, guide, (ids[tr], y[tr]), epochs=6, lr=0.02, batch_size=100, num_particles=2)
    fused = pyrobnn.predict(bnn, guide, ids[te], num_samples=8, seed=1, strategy="loop")  # torch's packed kernel
    batched = pyrobnn.predict(bnn, guide, ids[te], num_samples=8, seed=1, strategy="vectorize")
    torch.testing.assert_close(batched.outputs, fused.outputs, atol=1e-4, rtol=0)
    accuracy = float((batched.mean_probs().argmax(-1) == y[te]).float().mean())
    assert accuracy > 0.7, accuracy  # balanced classes: chance is 0.5
    obs = Predictive(bnn.model, guide=guide, num_samples=4, parallel=True)(ids[te])["obs"]
    assert tuple(obs.shape) == (4, len(te))


def test_a_float64_regressor_with_a_frozen_pretrained_layer_keeps_it_fixed_and_its_dtype():
    x, y, _ = load_boston(data_file("boston_housing/BostonHousing.csv"))
    x = ((x - x.mean(0)) / x.std(0)).double()
    y = ((y - y.mean()) / y.std()).double()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:400], perm[400:]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(13, 32), nn.Tanh(), nn.Linear(32, 1), nn.Flatten(0)).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(300):  # a deterministic pretraining, then the first layer is frozen
        opt.zero_grad()
        ((net(x[tr]) - y[tr]) ** 2).mean().backward()
        opt.step()
    net[0].requires_grad_(False)
    frozen = net[0].weight.detach().clone()
    with torch.no_grad():
        rmse_pretrained = float(((net(x[te]) - y[te]) ** 2).mean().sqrt())

    bnn = pyrobnn.lift(net, prior=priors.Normal(0, 1), likelihood=likelihoods.Normal(scale=None))
    assert bnn.net_sites == ["2.weight", "2.bias"] and bnn.dtype == torch.float64
    assert [n for n, _ in bnn.named_point_parameters()] == ["likelihood.raw_scale"]  # the frozen layer is not trained
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.01)
    assert guide.loc_flat.dtype == torch.float64
    _fit_trains(bnn, guide, (x[tr], y[tr]), epochs=200, lr=0.01, batch_size=100)
    assert torch.equal(net[0].weight, frozen)
    pp = pyrobnn.predict(bnn, guide, x[te].float(), num_samples=100)  # float32 inputs are cast to the net's dtype
    assert pp.mean().dtype == torch.float64
    rmse = float(((pp.mean() - y[te]) ** 2).mean().sqrt())
    assert rmse < min(0.6, 1.2 * rmse_pretrained), (rmse, rmse_pretrained)  # standardised: 1.0 predicts the mean

    overridden = pyrobnn.lift(net, priors={"0": priors.Normal(0, 1)})  # a prior naming the frozen layer lifts it
    assert overridden.net_sites == ["0.weight", "0.bias", "2.weight", "2.bias"]

    pyro.clear_param_store()
    auto = AutoNormal(bnn.model, init_scale=0.01)
    first, last = _svi_loss_falls(bnn, auto, x[tr], y[tr], steps=60)
    assert last < first
    obs = Predictive(bnn.model, guide=auto, num_samples=4, parallel=True)(x[te])["obs"]
    assert obs.dtype == torch.float64 and tuple(obs.shape) == (4, 106)
    posterior = pyrobnn.mcmc.nuts(bnn, (x[tr], y[tr]), num_samples=30, warmup_steps=30, progress=False, seed=0)
    draws = posterior.sample_posterior(30)
    assert draws["2.weight"].dtype == torch.float64
