#!/usr/bin/env bash
# All benchmarks in one command. Other BNN libraries (BLiTZ, bayesian-torch) go into a separate
# environment, .venv-bench, never into the project's dependencies; a row is skipped with a note
# when a library cannot be installed or run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-bench/bin/python ]; then
    "$PYTHON" -m venv .venv-bench
    .venv-bench/bin/pip install -q "torch==2.13.0" || .venv-bench/bin/pip install -q "torch>=2.2"
    .venv-bench/bin/pip install -q -e .
    # --no-deps: their declared dependencies (e.g. torchvision) would pull another torch build
    .venv-bench/bin/pip install -q --no-deps blitz-bayesian-pytorch bayesian-torch tyxe || echo "note: could not install BLiTZ / bayesian-torch / TyXe"
fi
.venv-bench/bin/python benchmarks/step_time.py "$@"
.venv-bench/bin/python benchmarks/fit_time.py
.venv-bench/bin/python benchmarks/predictive_time.py
.venv-bench/bin/python benchmarks/nuts_time.py
