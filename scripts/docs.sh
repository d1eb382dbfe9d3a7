#!/usr/bin/env bash
# Builds the documentation (docs/ -> docs/_build/html) offline with warnings as errors, then checks that every
# public name of pyrobnn has its entry in the built reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
.venv/bin/python docs/check_reference.py docs/_build/html
