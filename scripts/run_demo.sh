#!/usr/bin/env bash
# Installs everything into ./.venv (Python 3.11) and runs the main job on the
# embedded default (a held-out synthetic field seen by a COSMOS-like survey).
# Extra arguments go to examples/map_shear.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
python examples/map_shear.py --output_dir=out/demo "$@"
