#!/usr/bin/env bash
# One command: set up, then run the egg experiment (embedded simulated data unless --data is given).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pyrobnn run egg "$@"
