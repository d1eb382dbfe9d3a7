"""A small tokenizer and vocabulary for text classifiers (no downloads).

Tokens are lower-cased runs of letters, digits and apostrophes, plus ``!`` and ``?`` (which carry
sentiment). Id 0 is padding, id 1 stands for every word outside the vocabulary.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import torch

_TOKEN = re.compile(r"[a-z0-9']+|[!?]")
PAD, UNKNOWN = 0, 1


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``, with ``!`` and ``?`` as tokens of their own."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string; got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """Word -> id, built from training texts: words seen ``min_count`` times or more, most frequent
    first (ties alphabetical, so the ids do not depend on the order of the texts)."""

    def __init__(self, words: Iterable[str]):
        self.words = list(words)
        self.ids = {w: i + 2 for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """The vocabulary of ``texts``: words seen ``min_count`` times or more, the ``max_size`` most frequent."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1; got {min_count}")
        counts = Counter(w for t in texts for w in tokenize(t))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words[:max_size] if max_size else words)

    def __len__(self) -> int:
        """Number of ids, padding and unknown included (the Embedding's ``num_embeddings``)."""
        return len(self.words) + 2

    def encode(self, texts: Iterable[str], max_len: int) -> torch.Tensor:
        """``[len(texts), max_len]`` token ids, right-padded with 0, cut after ``max_len`` tokens."""
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1; got {max_len}")
        texts = list(texts)
        out = torch.zeros(len(texts), max_len, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.ids.get(w, UNKNOWN) for w in tokenize(text)][:max_len]
            out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
