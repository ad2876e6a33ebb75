#!/usr/bin/env bash
# Sets up dockyard and runs it on the embedded defaults (SQLite, local runtime, ./var).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dockyard serve "$@"
