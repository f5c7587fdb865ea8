#!/usr/bin/env bash
# Installs everything into ./.venv (Python 3.11) and runs the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
python -m pytest -q "$@"
