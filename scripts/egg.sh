#!/usr/bin/env bash
# One command: set up what the main job needs (the library and its CLI, no developer tools), then run the egg
# experiment (embedded simulated data unless --data is given).
set -euo pipefail
cd "$(dirname "$0")/.."
PYROBNN_EXTRAS="" bash scripts/setup.sh
exec .venv/bin/pyrobnn run egg "$@"
