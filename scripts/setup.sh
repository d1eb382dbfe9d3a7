#!/usr/bin/env bash
# Creates .venv (if missing) and installs pyrobnn (editable) with the extras named in $PYROBNN_EXTRAS
# (default "dev": tests, lint, docs, notebooks; scripts/egg.sh sets it empty: the library and its CLI only).
# torch goes in first, pinned to the CPU build kept on this kind of machine; elsewhere pip's
# ordinary resolution of the project's loose pin (torch>=2.2) applies.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${PYROBNN_EXTRAS-dev}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
    pip install -q "torch==2.13.0" || pip install -q "torch>=2.2"
fi
pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
