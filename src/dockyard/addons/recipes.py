"""How each provider's server is made, run, dumped and restored: argv lists and files.

Every command runs sandboxed with the addon's data directory at ``/data`` (``local``);
nothing secret is ever on a command line: the password reaches PostgreSQL through the
single-user session's standard input and ``PGPASSWORD``, Redis through its 0600 config
file and ``REDISCLI_AUTH``.

The binaries are Debian's (``postgresql``, ``redis-server``): PostgreSQL's from
``/usr/lib/postgresql/<version>/bin``, the newest there, never the system cluster's
service (which keeps its own data and port).
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dockyard.addons.base import AddonError, AddonSpec
from dockyard.domain import addons as catalogue

DATA = "/data"
PGDATA = f"{DATA}/pgdata"
LISTEN = "127.0.0.1"
POSTGRESQL_ROOT = Path("/usr/lib/postgresql")
REDIS_SERVER = Path("/usr/bin/redis-server")
REDIS_CLI = Path("/usr/bin/redis-cli")
INSTALL_HINT = (
    "apt-get install -y postgresql redis-server (scripts/setup.sh does; the system's own "
    "PostgreSQL service is not used)"
)


def postgresql_bin() -> Path:
    """The newest installed PostgreSQL's binaries."""
    found = sorted(
        (path for path in POSTGRESQL_ROOT.glob("*/bin") if (path / "postgres").exists()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if not found:
        raise AddonError(f"PostgreSQL addons need PostgreSQL's server binaries: {INSTALL_HINT}.")
    return found[-1]


def redis_server() -> Path:
    if not REDIS_SERVER.exists():
        raise AddonError(f"Redis addons need redis-server: {INSTALL_HINT}.")
    return REDIS_SERVER


@functools.cache
def version(provider: str) -> str:
    binary = postgresql_bin() / "postgres" if provider == catalogue.POSTGRESQL else redis_server()
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    # "postgres (PostgreSQL) 15.4 (Debian ...)" / "Redis server v=7.0.15 sha=..."
    for word in out.replace("v=", " ").split():
        if word[:1].isdigit():
            return word
    return out.strip() or "unknown"


@dataclass(frozen=True)
class Step:
    """A command run once, to its end."""

    argv: list[str]
    stdin: bytes = b""


def shared_buffers_mb(spec: AddonSpec) -> int:
    return max(16, spec.memory_mb // 4)


# -- PostgreSQL ---------------------------------------------------------------------------


def postgresql_init(spec: AddonSpec) -> list[Step]:
    """A new cluster whose superuser cannot log in over TCP (it has no password), and the
    app's own user owning the app's own database: the app gets no superuser (which could
    run programs with COPY ... PROGRAM)."""
    bin_dir = postgresql_bin()
    name = spec.resource_id  # [a-z0-9_] only (domain.addons.resource_id): no quoting issue
    sql = (
        f"CREATE ROLE {name} LOGIN PASSWORD '{spec.password}' "
        f"CONNECTION LIMIT {spec.max_connections};\n"
        f"CREATE DATABASE {name} OWNER {name} ENCODING 'UTF8' TEMPLATE template0;\n"
        f"REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;\n"
    )
    return [
        Step(
            [
                str(bin_dir / "initdb"),
                "-D",
                PGDATA,
                "-U",
                "postgres",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        ),
        Step(
            [str(bin_dir / "postgres"), "--single", "-D", PGDATA, "template1"],
            stdin=sql.encode(),
        ),
    ]


# Connections over TCP with a password only; there is no Unix socket at all.
PG_HBA = (
    "# dockyard: the app's user, with its password, over TCP\n"
    "host all all 127.0.0.1/32 scram-sha-256\n"
    "host all all ::1/128 scram-sha-256\n"
)


def postgresql_run(spec: AddonSpec) -> list[str]:
    bin_dir = postgresql_bin()
    settings = {
        "listen_addresses": LISTEN,
        "port": str(spec.port),
        "unix_socket_directories": "",
        "max_connections": str(spec.max_connections + 3),  # + superuser_reserved_connections
        "shared_buffers": f"{shared_buffers_mb(spec)}MB",
        "dynamic_shared_memory_type": "mmap",
        "password_encryption": "scram-sha-256",
        "logging_collector": "off",
    }
    argv = [str(bin_dir / "postgres"), "-D", PGDATA]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    return argv


def postgresql_dump(spec: AddonSpec) -> list[str]:
    """A plain SQL dump that drops what it creates first, without owners or grants: it
    restores into any addon of the app, the replacement of a removed one included."""
    return [
        str(postgresql_bin() / "pg_dump"), "--no-owner", "--no-privileges", "--clean",
        "--if-exists", "-h", LISTEN, "-p", str(spec.port), "-U", spec.resource_id,
        "-d", spec.resource_id,
    ]  # fmt: skip


def postgresql_load(spec: AddonSpec) -> list[str]:
    return [
        str(postgresql_bin() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
        "-h", LISTEN, "-p", str(spec.port), "-U", spec.resource_id, "-d", spec.resource_id,
    ]  # fmt: skip


# -- Redis --------------------------------------------------------------------------------


def redis_config(spec: AddonSpec) -> str:
    """Append-only persistence (fsync every second) besides RDB snapshots, so a crash of
    the server loses a second of writes at most."""
    return "\n".join(
        [
            f"bind {LISTEN}",
            f"port {spec.port}",
            f"requirepass {spec.password}",
            f"dir {DATA}",
            "daemonize no",
            "appendonly yes",
            "appendfsync everysec",
            "save 900 1 300 10 60 10000",
            f"maxmemory {spec.memory_mb}mb",
            "maxmemory-policy noeviction",
            # A backup (redis-cli --rdb) is a replica's sync: start it at once, not after
            # the 5 s Redis waits by default for more replicas to share it.
            "repl-diskless-sync-delay 0",
            f"maxclients {spec.max_connections}",
            "",
        ]
    )


def redis_run() -> list[str]:
    return [str(redis_server()), f"{DATA}/redis.conf"]


def redis_dump(spec: AddonSpec, target: str) -> list[str]:
    return [
        str(REDIS_CLI),
        "-h",
        LISTEN,
        "-p",
        str(spec.port),
        "--no-auth-warning",
        "--rdb",
        target,
    ]


AOF_BASE = "appendonly.aof.1.base.rdb"


def redis_aof_from_snapshot(snapshot: bytes) -> dict[str, bytes]:
    """The files of ``appendonlydir`` that start Redis 7 on ``snapshot``: the snapshot as
    the base, and the manifest that names it."""
    if not snapshot.startswith(b"REDIS"):
        raise AddonError("This backup is not a Redis snapshot (an RDB file).")
    manifest = f"file {AOF_BASE} seq 1 type b\n".encode()
    return {AOF_BASE: snapshot, "appendonly.aof.manifest": manifest}


READY = {
    catalogue.POSTGRESQL: b"database system is ready to accept connections",
    catalogue.REDIS: b"Ready to accept connections",
}
