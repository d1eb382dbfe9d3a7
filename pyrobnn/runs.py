"""Run directories: ``<out>/<experiment>/<stamp>/`` with config, metrics and environment as JSON."""
from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

import pyro
import torch


def new_run_dir(out, experiment: str) -> Path:
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
    """Versions and the git commit of the working tree (when there is one)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
            "platform": platform.platform(), "git_commit": commit}


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON (atomically: temp file then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path
