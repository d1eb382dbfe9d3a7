"""Run directories: ``<out>/<experiment>/<stamp>/`` with config, metrics and environment as JSON."""
from __future__ import annotations

import csv
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyro
import torch

from ._types import PathLike

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter


def new_run_dir(out: PathLike, experiment: str) -> Path:
    """A fresh, unique directory ``out/experiment/YYYYmmdd-HHMMSS[-k]``."""
    base = Path(out) / experiment
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        d = base / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {base}")


def environment() -> dict:
    """Versions and the git commit of the working tree (when pyrobnn runs from a checkout: an installed
    copy, say in a virtualenv inside some repository, reports none)."""
    here = Path(__file__).resolve().parent
    commit = None
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=here).stdout.split()
        if len(out) == 2 and Path(out[0]).resolve() == here.parent:
            commit = out[1]
    except (OSError, subprocess.SubprocessError):
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
            "platform": platform.platform(), "git_commit": commit}


def write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (atomically: temp file then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


class EpochLog:
    """A ``fit(callback=...)`` that logs every epoch's record in a run directory: appended to
    ``<name>.jsonl`` and ``<name>.csv`` (a resumed run continues both; the CSV is rewritten only
    when a new column appears), and as TensorBoard scalars under ``tensorboard/<name>`` when the
    optional ``tensorboard`` package is installed (``pip install 'pyrobnn[tensorboard]'``).
    The cost per epoch is constant: two appended lines and the scalars."""

    def __init__(self, run_dir: PathLike, name: str = "history", tensorboard: bool = True):
        self.jsonl = Path(run_dir) / f"{name}.jsonl"
        self.csv = Path(run_dir) / f"{name}.csv"
        self.rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()] \
            if self.jsonl.is_file() else []
        self.columns = list(dict.fromkeys(k for row in self.rows for k in row))
        self.writer: SummaryWriter | None = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV/JSON only
                pass
            else:
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard" / name))

    def __call__(self, record: dict) -> None:
        """Log one epoch's record (``record["epoch"]`` is the step for TensorBoard)."""
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        self.rows.append(record)
        new = [k for k in record if k not in self.columns]
        if new or not self.csv.is_file():
            self.columns += new
            tmp = self.csv.with_name(self.csv.name + ".tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, self.columns, restval="")
                writer.writeheader()
                writer.writerows(self.rows)
            tmp.replace(self.csv)
        else:
            with open(self.csv, "a", newline="") as f:
                csv.DictWriter(f, self.columns, restval="").writerow(record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])

    def close(self) -> None:
        """Flush the TensorBoard events (``fit`` calls this when training ends)."""
        if self.writer is not None:
            self.writer.close()
