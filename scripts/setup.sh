#!/usr/bin/env bash
# Installs everything dockyard needs on a fresh Debian machine (run as root):
# bubblewrap for the sandbox, nftables and iproute2 for apps' network namespaces, git for
# git buildpacks, zstd for slugs, Chromium and axe-core for the dashboard's browser tests,
# PostgreSQL's and Redis's servers for addons (dockyard runs its own instances of them, with
# their own data directories and ports; the system's PostgreSQL service is not used for
# addons), Caddy (the HTTPS router, DOCKYARD_ROUTER=caddy), Pebble (the ACME CA the tests run Caddy
# against), wrk (the router benchmark's load generator), and a virtualenv with dockyard.
# DOCKYARD_WITH_DOCKER=1 (or DOCKYARD_REQUIRE_DOCKER=1, as CI sets) also installs Docker,
# which the isolation tests then run beside.
# DOCKYARD_SETUP_NO_CADDY=1 skips caddy, pebble and wrk (a server using the built-in router).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v git >/dev/null || need_apt+=(git)
command -v zstd >/dev/null || need_apt+=(zstd)
command -v nft >/dev/null || need_apt+=(nftables)
command -v ip >/dev/null || need_apt+=(iproute2)
# Addons (src/dockyard/addons/): initdb, postgres, pg_dump and psql, and redis-server.
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need_apt+=(postgresql)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
if [ "${DOCKYARD_WITH_DOCKER:-}" = 1 ] || [ "${DOCKYARD_REQUIRE_DOCKER:-}" = 1 ]; then
  command -v dockerd >/dev/null || need_apt+=(docker.io)
fi
command -v node >/dev/null || need_apt+=(nodejs npm)
# Debian's Chromium, driven by Playwright (tests/e2e/test_dashboard.py): never a download.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v openssl >/dev/null || need_apt+=(openssl)
# dockyard admin backup/restore of a PostgreSQL database (pg_dump, pg_restore).
command -v pg_dump >/dev/null || need_apt+=(postgresql-client)
if [ "${DOCKYARD_SETUP_NO_CADDY:-0}" != 1 ]; then
  command -v caddy >/dev/null || need_apt+=(caddy)
  command -v pebble >/dev/null || need_apt+=(pebble)
  command -v wrk >/dev/null || need_apt+=(wrk)
fi
# The docker and swarm runtimes (DOCKYARD_RUNTIME=docker or swarm; Swarm is part of
# docker.io) and their tests: the engine, a registry, the stack's builder, and Podman
# (tested through its Docker-compatible socket). Only when asked for (they are large); CI
# asks (.ci/run sets DOCKYARD_REQUIRE_DOCKER=1), since it runs those tests and must fail
# rather than skip them.
if [ "${DOCKYARD_REQUIRE_DOCKER:-}" = "1" ] || [ "${DOCKYARD_RUNTIME:-}" = "docker" ] \
  || [ "${DOCKYARD_RUNTIME:-}" = "swarm" ]; then
  command -v dockerd >/dev/null || need_apt+=(docker.io)
  command -v docker-registry >/dev/null || need_apt+=(docker-registry)
  command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
  command -v podman >/dev/null || need_apt+=(podman)
  [ -x /usr/libexec/podman/catatonit ] || need_apt+=(catatonit)
  command -v iptables >/dev/null || need_apt+=(iptables)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  # Debian's caddy package starts a system-wide Caddy (port 80, admin on 2019) where
  # systemd runs; dockyard starts and configures its own, so that one is turned off.
  if [[ " ${need_apt[*]} " == *" caddy "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now caddy >/dev/null 2>&1 || true
  fi
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
# axe-core, which the browser tests inject into the dashboard's pages.
if [ ! -f tests/e2e/browser/node_modules/axe-core/axe.min.js ]; then
  npm install --prefix tests/e2e/browser --no-package-lock --no-audit --no-fund --silent
fi
# Bytecode of the built-in buildpacks' modules, for the Python that runs them in a build
# (their directory is read-only there, so it would be compiled at every build).
/usr/bin/python3 -m compileall -q src/dockyard/buildpacks
