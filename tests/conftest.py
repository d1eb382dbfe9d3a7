"""Shared fixtures. Real data is read from ../shared/data (or $PYROBNN_DATA_DIR); tests that need it
skip with a reason when it is missing, and fail instead when PYROBNN_REQUIRE_DATA=1 (set by CI)."""
from __future__ import annotations

import os
from pathlib import Path

import pyro
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PYROBNN_DATA_DIR", ROOT.parent / "shared" / "data"))


def data_file(relative: str) -> Path:
    """Path of a real data file, or skip (fail under PYROBNN_REQUIRE_DATA=1) when it is missing."""
    path = DATA_DIR / relative
    if not path.is_file():
        msg = f"real data file {path} not found (set PYROBNN_DATA_DIR or place ../shared/data beside the repo)"
        if os.environ.get("PYROBNN_REQUIRE_DATA") == "1":
            pytest.fail(msg + "; PYROBNN_REQUIRE_DATA=1 forbids skipping")
        pytest.skip(msg)
    return path


@pytest.fixture
def egg_csv() -> Path:
    return data_file("egg_times/egg_times.csv")


@pytest.fixture(autouse=True)
def _fresh_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
    pyro.clear_param_store()


FASHION_DIR = Path(os.environ.get("PYROBNN_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))


def fashion_dir() -> Path:
    """Fashion-MNIST from Debian's dataset-fashion-mnist (.ci/run installs it), or skip / fail."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        msg = f"Fashion-MNIST not found in {FASHION_DIR} (apt-get install dataset-fashion-mnist)"
        if os.environ.get("PYROBNN_REQUIRE_DATA") == "1":
            pytest.fail(msg + "; PYROBNN_REQUIRE_DATA=1 forbids skipping")
        pytest.skip(msg)
    return FASHION_DIR


def sigint_when_training_starts(monkeypatch) -> None:
    """Make the next ``fit`` receive a real SIGINT as soon as its signal handlers are installed."""
    import signal

    import pyrobnn.infer as infer

    real_enter = infer._StopSignal.__enter__

    def enter_then_signal(self):
        out = real_enter(self)
        signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(infer._StopSignal, "__enter__", enter_then_signal)
