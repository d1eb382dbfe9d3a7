#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): nets B and D trained one epoch on CPU and on CUDA with the same
# seeds (same metrics distribution, tolerance stated in gpu_check.py), host syncs per step, the egg and MNIST-size
# predictives; writes benchmarks/gpu.json. Exits 0 with one line where there is no CUDA device.
#
#   bash benchmarks/gpu.sh --prepare   # here, with the network: wheels of pyro-ppl, pyro-api and pyrobnn into .whl/
#   bash benchmarks/gpu.sh             # on the GPU machine (its python3 has torch; .whl/ carried beside the repo)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
    rm -rf .whl && mkdir -p .whl
    PY=${PYTHON:-python3}; [ -x .venv/bin/python ] && PY=.venv/bin/python
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl pyro-ppl pyro-api
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
    ls .whl
    exit 0
fi
PY=${PYTHON:-python3}; [ -x .venv/bin/python ] && PY=.venv/bin/python
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu.sh: no CUDA device here (torch.cuda.is_available() is not True for $PY); nothing measured"
    exit 0
fi
if ! "$PY" -c "import pyro, pyrobnn.models" 2>/dev/null; then  # a bare GPU machine: the carried wheels
    [ -d .whl ] || { echo "gpu.sh: pyro/pyrobnn missing and no .whl/ here; run 'bash benchmarks/gpu.sh --prepare' first" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pyrobnn-site .whl/*.whl
    export PYTHONPATH=/tmp/pyrobnn-site${PYTHONPATH:+:$PYTHONPATH}
fi
timeout 480 "$PY" benchmarks/gpu_check.py "$@"
