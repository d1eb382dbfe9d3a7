"""Plain recurrent networks: a text classifier and a one-value forecaster (seeds 000 and 003)."""
from __future__ import annotations

import torch
from torch import nn


class SentimentLSTM(nn.Module):
    """Token ids ``[B, T]`` (0 = padding, right-padded) -> Embedding -> LSTM -> Linear logits.

    The sentence is summarised by the LSTM output at its last real token, so padding never
    reaches the classifier."""

    def __init__(self, vocab_size: int, embed: int = 32, hidden: int = 32, num_classes: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embedding(tokens))
        last = (tokens != 0).sum(1).clamp(min=1) - 1
        return self.out(h[torch.arange(tokens.shape[0], device=tokens.device), last])


class LSTMForecaster(nn.Module):
    """A window ``[B, T, 1]`` -> LSTM(1 -> hidden) -> Linear(hidden -> n_out) at the last step
    (the seed's 1 -> 10 -> 1 net by default)."""

    def __init__(self, hidden: int = 10, n_out: int = 1):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        return self.out(h[:, -1])
