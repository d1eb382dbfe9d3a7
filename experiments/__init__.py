"""Runnable experiments. Each is a typed config plus a ``run(config, resume_dir=None) -> metrics``.

Shared here: run directories that can be resumed, and the clean stop on SIGINT/SIGTERM.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pyrobnn.runs import environment, new_run_dir, write_json


class Interrupted(RuntimeError):
    """Training stopped on SIGINT/SIGTERM; the training state is saved in ``run_dir`` and no
    results were written from the unfinished model."""

    def __init__(self, event: str, run_dir):
        super().__init__(event)
        self.signal = "SIGINT" if "SIGINT" in event else "SIGTERM"
        self.run_dir = str(run_dir)


def train_plain(net, x, y, epochs: int, lr: float, batch_size: int, generator):
    """The deterministic baselines' loop: Adam, cross-entropy, ``epochs`` epochs of minibatches shuffled by
    ``generator``; returns ``net``."""
    import torch
    from torch.nn.functional import cross_entropy

    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=generator).split(batch_size):
            loss = cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def stop_if_interrupted(history, run_dir) -> None:
    if history.interrupted:
        raise Interrupted(history.events[-1], run_dir)


def write_results(run_dir, metrics: dict) -> None:
    """Write the finished run's metrics.json, then drop its training states (the results are final;
    an interrupted run never gets here and keeps its state for --resume)."""
    write_json(Path(run_dir) / "metrics.json", metrics)
    for state in Path(run_dir).glob("*train_state*.pt"):
        state.unlink()


def open_run_dir(cfg, out: str, name: str, resume_dir=None) -> Path:
    """The run directory being resumed, or a new one with config.json (config, versions, commit)."""
    if resume_dir:
        path = Path(resume_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"not a run directory (no config.json): {resume_dir}")
        return path
    path = new_run_dir(out, name)
    write_json(path / "config.json", {**dataclasses.asdict(cfg), "environment": environment()})
    return path


def load_config(cls, run_dir):
    """Rebuild a (possibly nested) config dataclass from a run directory's config.json."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"not a run directory (no config.json): {run_dir}")
    return _build(cls, json.loads(path.read_text()))


def _build(cls, saved: dict):
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in saved:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        value = saved[f.name]
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kw[f.name] = value
    return cls(**kw)


def print_model_table(res: dict, names=("deterministic", "bayesian")) -> None:
    """The accuracy / NLL / Brier / ECE table the classification experiments print."""
    print(f"{'model':<14}{'accuracy':>10}{'NLL':>8}{'Brier':>8}{'ECE':>8}")
    for name in names:
        m = res[name]
        print(f"{name:<14}{m['accuracy']:>10.3f}{m['nll']:>8.3f}{m['brier']:>8.3f}{m['ece']:>8.3f}")
