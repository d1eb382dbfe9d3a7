"""Random-number-generator state: capture it as plain tensors/lists (checkpointable with
``weights_only=True``), restore it, and run side work without disturbing it."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


def get_state() -> dict:
    """torch (CPU and CUDA), Python and NumPy generator states, as tensors and lists."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    # legacy=True always gives the 5-tuple (numpy's stub says ``dict | tuple``)
    assert isinstance(np_state, tuple)
    name, keys, pos, has_gauss, cached = np_state
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_state(state: dict) -> None:
    """Restore the generator states captured by :func:`get_state`."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved() -> Iterator[None]:
    """Run the body, then put every generator back where it was (for side work such as creating
    lazy parameters or writing a checkpoint, which must not change the training stream)."""
    state = get_state()
    try:
        yield
    finally:
        set_state(state)
