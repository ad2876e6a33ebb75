"""Settings, built once from an explicit mapping (the environment, or a test's dict).

Nothing here reads ``os.environ`` at import time: ``Settings.from_env()`` is called by the
composition root, and tests call ``Settings.from_mapping({...})``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from dockyard.errors import DockyardError


class SettingsError(DockyardError):
    """A setting has a value dockyard cannot use; the message names the variable."""


def _int(env: Mapping[str, str], key: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{key} must be true or false, got {raw!r}")


def _allow_list(raw: str) -> frozenset[tuple[str, int]]:
    pairs: set[tuple[str, int]] = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise SettingsError(f"DOCKYARD_FETCH_ALLOW entries are host:port pairs, got {item!r}")
        host = host.strip("[]").lower()
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and address in ipaddress.ip_network("169.254.0.0/16"):
            raise SettingsError("DOCKYARD_FETCH_ALLOW can never open link-local metadata addresses")
        pairs.add((host, int(port)))
    return frozenset(pairs)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = 8088
    public_url: str = ""
    database_url: str = ""
    runtime: str = "local"
    router_host: str = "127.0.0.1"
    router_port: int = 8080
    apps_domain: str = "localhost"
    source_ttl: int = 600
    boot_timeout: int = 60
    build_timeout: int = 1800
    fetch_allow: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    max_source_bytes: int = 300 * 1024 * 1024
    max_unpacked_bytes: int = 300 * 1024 * 1024
    max_archive_entries: int = 100_000
    max_json_bytes: int = 1024 * 1024
    rate_limit_per_minute: int = 1200
    workers: int = 4
    jwt_ttl: int = 3600
    sandbox: bool = True
    build_memory_bytes: int = 4 * 1024**3
    build_max_processes: int = 512
    app_memory_bytes: int = 1024**3
    app_max_processes: int = 256
    stop_grace_seconds: float = 10.0
    # How long a replaced release keeps running after traffic moved to the new one.
    drain_seconds: float = 1.0
    app_log_lines: int = 2000

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        host = env.get("DOCKYARD_HOST", "") or cls.host
        port = _int(env, "DOCKYARD_PORT", cls.port)
        data_dir = Path(env.get("DOCKYARD_DATA_DIR", "") or "./var").absolute()
        runtime = env.get("DOCKYARD_RUNTIME", "") or "local"
        if runtime not in {"local", "docker"}:
            raise SettingsError(f"DOCKYARD_RUNTIME must be 'local' or 'docker', got {runtime!r}")
        public_url = (env.get("DOCKYARD_PUBLIC_URL", "") or f"http://{host}:{port}").rstrip("/")
        if not public_url.startswith(("http://", "https://")):
            raise SettingsError("DOCKYARD_PUBLIC_URL must start with http:// or https://")
        return cls(
            data_dir=data_dir,
            host=host,
            port=port,
            public_url=public_url,
            database_url=env.get("DOCKYARD_DATABASE_URL", "")
            or f"sqlite:///{data_dir / 'dockyard.db'}",
            runtime=runtime,
            router_host=env.get("DOCKYARD_ROUTER_HOST", "") or host,
            router_port=_int(env, "DOCKYARD_ROUTER_PORT", cls.router_port),
            apps_domain=(env.get("DOCKYARD_APPS_DOMAIN", "") or cls.apps_domain).lower(),
            source_ttl=_int(env, "DOCKYARD_SOURCE_TTL", cls.source_ttl, minimum=1),
            boot_timeout=_int(env, "DOCKYARD_BOOT_TIMEOUT", cls.boot_timeout, minimum=1),
            build_timeout=_int(env, "DOCKYARD_BUILD_TIMEOUT", cls.build_timeout, minimum=1),
            fetch_allow=_allow_list(env.get("DOCKYARD_FETCH_ALLOW", "")),
            max_source_bytes=_int(env, "DOCKYARD_MAX_SOURCE_BYTES", cls.max_source_bytes),
            rate_limit_per_minute=_int(
                env, "DOCKYARD_RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_minute, minimum=1
            ),
            workers=_int(
                env, "DOCKYARD_WORKERS", default_workers(cls.build_memory_bytes), minimum=1
            ),
            sandbox=_bool(env, "DOCKYARD_SANDBOX", True),
        )

    @classmethod
    def from_env(cls) -> Settings:
        return cls.from_mapping(os.environ)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))

    @property
    def ws_public_url(self) -> str:
        return "ws" + self.public_url[len("http") :]

    def app_url(self, app_name: str) -> str:
        return f"http://{app_name}.{self.apps_domain}:{self.router_port}/"

    # Where things live inside the data dir; every other module asks here.
    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def builds_dir(self) -> Path:
        return self.data_dir / "builds"

    @property
    def releases_dir(self) -> Path:
        return self.data_dir / "releases"

    @property
    def secret_file(self) -> Path:
        return self.data_dir / "secret.key"


MAX_DEFAULT_WORKERS = 32  # the database pool is sized for about this many at once


def default_workers(build_memory_bytes: int) -> int:
    """Deployments built at once when DOCKYARD_WORKERS is not set: four per core this
    process may use, since a deployment spends much of its time waiting (downloads, an
    app's boot), but no more than the machine's memory holds at each build's memory
    limit, never more than 32, and at least two."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        memory = 0
    by_memory = memory // build_memory_bytes if memory > 0 else 4 * cores
    return max(2, min(4 * cores, by_memory, MAX_DEFAULT_WORKERS))
