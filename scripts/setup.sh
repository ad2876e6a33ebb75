#!/usr/bin/env bash
# Installs everything dockyard needs on a fresh Debian machine (run as root):
# bubblewrap for the sandbox, git for git buildpacks, zstd for slugs, and a virtualenv
# with dockyard.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v git >/dev/null || need_apt+=(git)
command -v zstd >/dev/null || need_apt+=(zstd)
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
# The sandboxes run /usr/bin/python3 (Debian's) with venv support.
if ! /usr/bin/python3 -c "import venv, ensurepip" 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q -e '.[dev]'
# Bytecode of the built-in buildpacks' modules, for the Python that runs them in a build
# (their directory is read-only there, so it would be compiled at every build).
/usr/bin/python3 -m compileall -q src/dockyard/buildpacks
