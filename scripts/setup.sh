#!/usr/bin/env bash
# Creates .venv (if missing) and installs pyrobnn with its test extras.
# torch goes in first, pinned to the CPU build kept on this kind of machine; elsewhere pip's
# ordinary resolution of the project's loose pin (torch>=2.2) applies.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
    pip install -q "torch==2.13.0" || pip install -q "torch>=2.2"
fi
pip install -q -e ".[dev]"
