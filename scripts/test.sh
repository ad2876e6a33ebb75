#!/usr/bin/env bash
# Sets up dockyard and runs the whole test suite, on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
# The dependency rule between the layers (pyproject.toml, [tool.importlinter]).
.venv/bin/lint-imports
exec .venv/bin/pytest "$@"
