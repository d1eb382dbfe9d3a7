"""Plain nets of the kinds users bring, none of them written for pyrobnn, each with a small task.

The conformance suite (``tests/test_conformance.py``, ``python -m pyrobnn.experiments.conformance``) lifts
every one of them and pushes it through every guide and training route. Each ``Case`` builds a fresh
net, the likelihood that fits its output, and a small data set with signal in it (so the loss can
fall), from a fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from pyrobnn import likelihoods


class DropoutMLP(nn.Module):
    def __init__(self, n_in: int = 4, hidden: int = 16, n_out: int = 3, p: float = 0.2):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.body(x)


class SmallCNN(nn.Module):
    """Conv2d + MaxPool on 1x8x8 images."""

    def __init__(self, n_out: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8 * 2 * 2, n_out)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class ResidualBNCNN(nn.Module):
    """A stem conv + BatchNorm2d, residual blocks, global average pooling, a linear head."""

    def __init__(self, in_ch: int = 1, width: int = 8, blocks: int = 1, n_out: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class Conv1dNorms(nn.Module):
    """Conv1d + GroupNorm over [N, 2, 16] signals, then LayerNorm on the pooled features."""

    def __init__(self, n_out: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(2, 8, 5, padding=2)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, n_out)

    def forward(self, x):
        h = torch.relu(self.gn(self.conv(x))).mean(-1)
        return self.head(self.ln(h))


class TinyTransformer(nn.Module):
    """Token ids -> Embedding + learned positions -> TransformerEncoder -> mean pool -> logits."""

    def __init__(self, vocab: int = 20, d: int = 16, length: int = 6, n_out: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(length, d))
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(d, n_out)

    def forward(self, tokens):
        return self.head(self.encoder(self.emb(tokens) + self.pos).mean(1))


class EmbeddingLSTM(nn.Module):
    def __init__(self, vocab: int = 20, d: int = 8, hidden: int = 12, n_out: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, tokens):
        out, _ = self.lstm(self.emb(tokens))
        return self.head(out[:, -1])


class GRURegressor(nn.Module):
    """A GRU over [N, T, 3] series; returns one value per row, ``[N]``."""

    def __init__(self, n_in: int = 3, hidden: int = 12):
        super().__init__()
        self.gru = nn.GRU(n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        _, h = self.gru(x)
        return self.head(h[-1]).squeeze(-1)


class TiedWeights(nn.Module):
    """A bag-of-tokens next-token model whose output layer shares the Embedding's matrix, and a
    hidden layer applied twice: both kinds of weight sharing in one net."""

    def __init__(self, vocab: int = 12, d: int = 8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.out = nn.Linear(d, vocab)
        self.out.weight = self.emb.weight  # tied

    def forward(self, tokens):
        h = self.emb(tokens).mean(1)
        h = torch.tanh(self.mix(torch.tanh(self.mix(h))))  # the same layer twice
        return self.out(h)


class FlatRegressor(nn.Module):
    """An MLP regressor ending in ``nn.Flatten(0)``: output ``[N]``."""

    def __init__(self, n_in: int = 3, hidden: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, 1), nn.Flatten(0))

    def forward(self, x):
        return self.body(x)


class TwoTargetRegressor(nn.Module):
    def __init__(self, n_in: int = 3, hidden: int = 16, k: int = 2):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, k))

    def forward(self, x):
        return self.body(x)


class BinaryLogit(nn.Module):
    """One logit per row, ``[N, 1]``."""

    def __init__(self, n_in: int = 4, hidden: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.body(x)


class GatedMixer(nn.Module):
    """Raw parameters in an einsum, LayerNorm, GELU and a gate; the one Linear it registers is its last layer."""

    def __init__(self, n_in: int = 4, hidden: int = 8, n_out: int = 3):
        super().__init__()
        self.head = nn.Linear(hidden, n_out)
        self.norm = nn.LayerNorm(n_in)
        self.mix = nn.Parameter(torch.randn(n_in, hidden) / n_in ** 0.5)
        self.gate = nn.Parameter(torch.zeros(hidden))

    def forward(self, x):
        h = torch.einsum("ni,ih->nh", self.norm(x), self.mix)
        return self.head(nn.functional.gelu(h) * torch.sigmoid(self.gate))


class Denoiser(nn.Module):
    """Image to image: a strided conv down, a transposed conv up; output ``[N, 1, 8, 8]`` like its input."""

    def __init__(self, width: int = 6):
        super().__init__()
        self.down = nn.Conv2d(1, width, 4, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up(torch.relu(self.down(x)))


class CellLoopRNN(nn.Module):
    """A hand-written unroll over an LSTMCell feeding an Elman ``nn.RNN``, then a linear read-out."""

    def __init__(self, n_in: int = 3, hidden: int = 8, n_out: int = 3):
        super().__init__()
        self.cell = nn.LSTMCell(n_in, hidden)
        self.rnn = nn.RNN(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        h = c = x.new_zeros(x.shape[0], self.cell.hidden_size)
        steps = []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
            steps.append(h)
        out, _ = self.rnn(torch.stack(steps, 1))
        return self.head(out[:, -1])


class BagOfTokens(nn.Module):
    """An EmbeddingBag (mean of token vectors) as the first layer, then an MLP."""

    def __init__(self, vocab: int = 20, d: int = 8, n_out: int = 2):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab, d, mode="mean")
        self.head = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, n_out))

    def forward(self, tokens):
        return self.head(self.bag(tokens))


class PackedGRU(nn.Module):
    """Token rows of different lengths (0 pads the end) through ``pack_padded_sequence`` and a bidirectional GRU."""

    def __init__(self, vocab: int = 20, d: int = 8, n_out: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, padding_idx=0)
        self.gru = nn.GRU(d, d, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * d, n_out)

    def forward(self, tokens):
        lengths = (tokens != 0).sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return self.head(torch.cat([h[0], h[1]], -1))


class RenormConvText(nn.Module):
    """An Embedding with ``max_norm`` (torch renormalises it in place), a Conv1d over the tokens, and an InstanceNorm1d
    that keeps running statistics."""

    def __init__(self, vocab: int = 20, d: int = 8, n_out: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d, max_norm=1.0)
        self.conv = nn.Conv1d(d, 8, 3, padding=1)
        self.norm = nn.InstanceNorm1d(8, affine=True, track_running_stats=True)
        self.head = nn.Linear(8, n_out)

    def forward(self, tokens):
        h = torch.relu(self.norm(self.conv(self.emb(tokens).transpose(1, 2))))
        return self.head(h.mean(-1))


@dataclass
class Case:
    """A net, the likelihood for its output, and a small task."""

    name: str
    make_net: Callable[[], nn.Module]
    make_likelihood: Callable[[], likelihoods.Likelihood]
    data: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]

    def build(self, seed: int = 0) -> tuple[nn.Module, likelihoods.Likelihood, torch.Tensor, torch.Tensor]:
        """A fresh net (initialised from ``seed``), its likelihood, and the data."""
        torch.manual_seed(seed)
        net = self.make_net()
        x, y = self.data(torch.Generator().manual_seed(seed + 1))
        return net, self.make_likelihood(), x, y


N = 48


def _classes_from(score: torch.Tensor, k: int) -> torch.Tensor:
    """Labels in [0, k) from a score's quantiles (balanced classes)."""
    edges = torch.quantile(score, torch.linspace(0, 1, k + 1)[1:-1])
    return torch.bucketize(score, edges)


def _features(g, n_in=4, k=3):
    x = torch.randn(N, n_in, generator=g)
    return x, _classes_from(x[:, 0] - x[:, 1], k)


def _images(g, k=3):
    x = torch.randn(N, 1, 8, 8, generator=g) * 0.3
    y = torch.arange(N) % k
    for c in range(k):  # a bright square whose position is the class
        x[y == c, 0, 2 * c:2 * c + 3, 2:5] += 1.5
    return x, y


def _signals(g, k=3):
    y = torch.arange(N) % k
    t = torch.linspace(0, 6.28, 16)
    x = 0.3 * torch.randn(N, 2, 16, generator=g)
    x[:, 0] += torch.sin((y[:, None] + 1) * t)
    return x, y


def _tokens(g, vocab=20, length=6):
    x = torch.randint(0, vocab, (N, length), generator=g)
    return x, (x < vocab // 2).sum(1).gt(length // 2).long()


def _ragged_tokens(g, vocab=20, length=6):
    """Rows of 2 to ``length`` tokens in [1, vocab), 0 after; the label: are most of a row's tokens small?"""
    lengths = torch.randint(2, length + 1, (N,), generator=g)
    x = torch.randint(1, vocab, (N, length), generator=g) * (torch.arange(length) < lengths[:, None])
    return x, ((x > 0) & (x < vocab // 2)).sum(1).mul(2).gt(lengths).long()


def _next_token(g, vocab=12, length=5):
    x = torch.randint(0, vocab, (N, length), generator=g)
    return x, x[:, 0]


def _series(g):
    x = torch.randn(N, 7, 3, generator=g)
    return x, x[:, :, 0].mean(1) + 0.1 * torch.randn(N, generator=g)


def _regression(g, k=1):
    x = torch.randn(N, 3, generator=g)
    y = torch.stack([x[:, 0] - 0.5 * x[:, 1], x[:, 2] ** 2 - 1][:k], -1) + 0.1 * torch.randn(N, k, generator=g)
    return x, y[:, 0] if k == 1 else y


def _denoise(g):
    clean, _ = _images(g)
    return clean + 0.3 * torch.randn(clean.shape, generator=g), clean


def _series_classes(g, k=3):
    x = torch.randn(N, 6, 3, generator=g)
    return x, _classes_from(x[:, :, 0].sum(1), k)


def _binary(g):
    x = torch.randn(N, 4, generator=g)
    return x, (x[:, 0] + x[:, 2] > 0).long()


CASES = [
    Case("MLP + Dropout", DropoutMLP, lambda: likelihoods.Categorical(), _features),
    Case("CNN (Conv2d + MaxPool)", SmallCNN, lambda: likelihoods.Categorical(), _images),
    Case("residual CNN + BatchNorm2d", ResidualBNCNN, lambda: likelihoods.Categorical(), _images),
    Case("Conv1d + GroupNorm + LayerNorm", Conv1dNorms, lambda: likelihoods.Categorical(), _signals),
    Case("Embedding + TransformerEncoder", TinyTransformer, lambda: likelihoods.Categorical(), _tokens),
    Case("Embedding + LSTM", EmbeddingLSTM, lambda: likelihoods.Categorical(), _tokens),
    Case("GRU, [N] regression", GRURegressor, lambda: likelihoods.Normal(scale=0.3), _series),
    Case("tied weights", TiedWeights, lambda: likelihoods.Categorical(), _next_token),
    Case("[N] regression (Flatten(0))", FlatRegressor, lambda: likelihoods.Normal(scale=None), _regression),
    Case("[N, 2] regression", TwoTargetRegressor, lambda: likelihoods.Normal(scale=None, targets=2),
         lambda g: _regression(g, 2)),
    Case("binary logits (Bernoulli)", BinaryLogit, likelihoods.Bernoulli, _binary),
    Case("raw Parameters + einsum, Linear last", GatedMixer, lambda: likelihoods.Categorical(), _features),
    Case("image to image, [N, 1, 8, 8]", Denoiser, lambda: likelihoods.Normal(scale=None), _denoise),
    Case("LSTMCell loop + RNN", CellLoopRNN, lambda: likelihoods.Categorical(), _series_classes),
    Case("EmbeddingBag", BagOfTokens, lambda: likelihoods.Categorical(), _tokens),
    Case("float64 MLP + Dropout", lambda: DropoutMLP().double(), lambda: likelihoods.Categorical(), _features),
    Case("packed sequences + GRU", PackedGRU, lambda: likelihoods.Categorical(), _ragged_tokens),
    Case("Embedding(max_norm) + InstanceNorm1d", RenormConvText, lambda: likelihoods.Categorical(), _tokens),
]
