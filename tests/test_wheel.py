"""The built wheel claims one top-level name in site-packages: ``pyrobnn`` (the repository's experiments/, models/
and guides/ folders ship inside it as pyrobnn.experiments, pyrobnn.models, pyrobnn.guides)."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT


def test_wheel_has_only_pyrobnn_at_top_level(tmp_path):
    pytest.importorskip("setuptools", reason="pip install -e .[dev] to build the wheel offline")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("pyrobnn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"pyrobnn", wheel.name.split("-py")[0] + ".dist-info"}
    for module in ("pyrobnn/experiments/cli.py", "pyrobnn/experiments/egg.py", "pyrobnn/models/egg.py",
                   "pyrobnn/guides/normal.py", "pyrobnn/py.typed"):
        assert module in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/")) or "/notebooks/" in n]
    entry_points = zipfile.ZipFile(wheel).read(wheel.name.split("-py")[0] + ".dist-info/entry_points.txt")
    assert b"pyrobnn = pyrobnn.experiments.cli:main" in entry_points
