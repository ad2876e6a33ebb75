"""Settings, built once from an explicit mapping (the environment, or a test's dict).

Nothing here reads ``os.environ`` at import time: ``Settings.from_env()`` is called by the
composition root, and tests call ``Settings.from_mapping({...})``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from dockyard.domain.formation import Quotas
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


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number of seconds, got {raw!r}") from None
    if not 0.1 <= value <= 3600:
        raise SettingsError(f"{key} must be between 0.1 and 3600 seconds, got {raw!r}")
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


def _ipv4_network(key: str, raw: str) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.ip_network(raw.strip(), strict=True)
    except ValueError:
        raise SettingsError(
            f"{key} must be IPv4 networks in CIDR notation (like 10.0.0.0/8), got {raw.strip()!r}"
        ) from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise SettingsError(
            f"{key} takes IPv4 networks only (apps have no IPv6 route), got {raw.strip()!r}"
        )
    return network


def _app_network_pool(env: Mapping[str, str]) -> ipaddress.IPv4Network:
    key = "DOCKYARD_APP_NETWORK_POOL"
    pool = _ipv4_network(key, env.get(key, "") or DEFAULT_APP_NETWORK_POOL)
    if not pool.is_private or pool.prefixlen > 24:
        raise SettingsError(
            f"{key} must be a private IPv4 range of at least 256 addresses (a /24 or larger), "
            f"got {pool}"
        )
    return pool


def _container_network_pool(env: Mapping[str, str]) -> ipaddress.IPv4Network:
    key = "DOCKYARD_CONTAINER_NETWORK_POOL"
    pool = _ipv4_network(key, env.get(key, "") or DEFAULT_CONTAINER_NETWORK_POOL)
    if not pool.is_private or pool.prefixlen > 24:
        raise SettingsError(
            f"{key} must be a private IPv4 range of at least 256 addresses (a /24 or larger: "
            f"four apps' networks), got {pool}"
        )
    return pool


def _blocked_networks(env: Mapping[str, str]) -> tuple[ipaddress.IPv4Network, ...]:
    key = "DOCKYARD_BLOCKED_NETWORKS"
    items = [item for item in env.get(key, "").split(",") if item.strip()]
    return tuple(_ipv4_network(key, item) for item in items)


# Where apps' network namespaces take their addresses from (a /30 each, see
# dockyard.isolation.addresses); out of the ranges Docker and common LANs use.
DEFAULT_APP_NETWORK_POOL = "10.213.0.0/16"
_DEFAULT_POOL = ipaddress.IPv4Network(DEFAULT_APP_NETWORK_POOL)
# The docker runtime's per-app bridge networks take their subnets here rather than from
# the engine's default pools, which hold about thirty networks.
DEFAULT_CONTAINER_NETWORK_POOL = "10.214.0.0/16"
_DEFAULT_CONTAINER_POOL = ipaddress.IPv4Network(DEFAULT_CONTAINER_NETWORK_POOL)
_CHALLENGES = frozenset({"http-01", "tls-alpn-01"})


def _challenges(raw: str) -> frozenset[str]:
    chosen = frozenset(part.strip() for part in raw.split(",") if part.strip()) or _CHALLENGES
    if not chosen <= _CHALLENGES:
        raise SettingsError(
            f"DOCKYARD_ACME_CHALLENGES takes http-01 and/or tls-alpn-01, got {raw!r}"
        )
    return chosen


# On the docker and swarm runtimes a release is an image in the registry, far larger than
# a release directory: the current and the previous one are kept by default.
CONTAINER_RELEASES_KEPT = 2


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = 8088
    public_url: str = ""
    # Where the other dockyard processes reach this API process itself, not the load
    # balancer in front of several: the sources and build caches it received are on its
    # disk, and the database records this address as where they are (README, "Running on
    # several machines"). The public URL by default (one API process).
    internal_url: str = ""
    database_url: str = ""
    runtime: str = "local"
    # The docker runtime: its engine's socket, the stack recipe, and the registry that
    # keeps the release images (host:port, with dockyard's own account).
    docker_host: str = ""
    stack: str = "full"
    registry: str = ""
    registry_user: str = ""
    registry_password: str = field(default="", repr=False)
    # The swarm runtime: the prefix of its services' and networks' names (and their
    # label), and how often Swarm checks health, watches updates and restarts tasks.
    swarm_prefix: str = "dockyard"
    swarm_check_seconds: float = 2.0
    router_host: str = "127.0.0.1"
    router_port: int = 8080
    # One-off commands' attach server (dockyard.api.attach): its own listener, because the
    # official client's protocol is a raw CONNECT that ASGI cannot serve.
    attach_port: int = 8089
    attach_public_url: str = ""
    # Whether the operator chose the attach server's port or address: a worker whose
    # default port is another worker's on the same machine takes a free one instead.
    attach_address_chosen: bool = False
    apps_domain: str = "localhost"
    source_ttl: int = 600
    boot_timeout: int = 60
    build_timeout: int = 1800
    fetch_allow: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    max_source_bytes: int = 300 * 1024 * 1024
    # A build cache a worker sends to the API (dockyard worker): refused above this.
    max_cache_bytes: int = 1024 * 1024 * 1024
    max_unpacked_bytes: int = 300 * 1024 * 1024
    max_archive_entries: int = 100_000
    max_json_bytes: int = 1024 * 1024
    rate_limit_per_minute: int = 1200
    workers: int = 4
    jwt_ttl: int = 3600
    sandbox: bool = True
    build_memory_bytes: int = 4 * 1024**3
    build_max_processes: int = 512
    # Each app's instances and builds in a network namespace of its own (needs root and
    # the sandbox; see dockyard.isolation).
    network_isolation: bool = True
    app_network_pool: ipaddress.IPv4Network = _DEFAULT_POOL
    container_network_pool: ipaddress.IPv4Network = _DEFAULT_CONTAINER_POOL
    # Ranges apps may not reach besides link-local, which is always blocked.
    blocked_networks: tuple[ipaddress.IPv4Network, ...] = ()
    app_max_processes: int = 256
    stop_grace_seconds: float = 10.0
    # How long a replaced release keeps running after traffic moved to the new one.
    drain_seconds: float = 1.0
    app_log_lines: int = 2000
    # Deployment streams: how long a client has to authenticate, and how often it is pinged.
    stream_auth_timeout: float = 5.0
    stream_ping_interval: float = 20.0
    # Per user, over all their apps.
    max_apps_per_user: int = Quotas.apps
    max_instances_per_user: int = Quotas.instances
    max_memory_per_user: int = Quotas.memory_bytes
    # The API's front door (api/frontdoor.py; docs/security.md says why these values).
    api_max_head_bytes: int = 64 * 1024
    api_max_headers: int = 100
    api_header_timeout: int = 10
    api_max_connections_per_client: int = 256
    # The built-in router's cap on one client address's open connections (router/limits.py);
    # 0: none (a router behind a proxy of the operator's sees every client as the proxy).
    router_max_connections_per_client: int = 256
    # Sources one user may hold (services/quotas.py): created and not yet expired.
    max_pending_sources: int = 50
    max_pending_source_bytes: int = 2 * 1024**3
    # A deployment's stored output (worker/outputcap.py): the rest is cut, keeping the end.
    max_build_output_bytes: int = 4 * 1024 * 1024
    # The front door: the built-in HTTP router, or Caddy (HTTPS with ACME certificates)
    # driven through its admin API (router/caddy.py).
    router: str = "builtin"
    router_https_port: int = 8443
    caddy_admin: str = "127.0.0.1:2019"
    caddy_binary: str = "caddy"
    acme_ca: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_root: str = ""  # a PEM file the ACME client trusts for the CA's own HTTPS
    acme_email: str = ""
    # Which ACME challenges Caddy may answer: HTTP-01 on the HTTP port, TLS-ALPN-01 on the
    # HTTPS one (a host whose port 80 is unreachable keeps only the second).
    acme_challenges: frozenset[str] = frozenset({"http-01", "tls-alpn-01"})
    allow_wildcard_domains: bool = False
    # Where Caddy sends an app's requests: "router" (dockyard's built-in router, which
    # picks the instance) or "instances" (straight to them); see router/caddy.py.
    caddy_upstreams: str = "router"
    # Successful releases kept per app (the serving one included): what a rollback can
    # go back to, without a build (CONTAINER_RELEASES_KEPT on the docker and swarm runtimes).
    releases_kept: int = 5
    # ``dockyard worker``: the name under which this worker runs apps (services/routing.py).
    # Stable across restarts, so a restarted worker takes its apps back; unique per worker.
    worker_name: str = ""
    # How long a claimed deployment stays its worker's without a renewal (renewed every
    # third of it): a worker that vanished has its deployment ended this long after.
    lease_seconds: int = 30

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        host = env.get("DOCKYARD_HOST", "") or cls.host
        port = _int(env, "DOCKYARD_PORT", cls.port)
        data_dir = Path(env.get("DOCKYARD_DATA_DIR", "") or "./var").absolute()
        runtime = env.get("DOCKYARD_RUNTIME", "") or "local"
        if runtime not in {"local", "docker", "swarm"}:
            raise SettingsError(
                f"DOCKYARD_RUNTIME must be 'local', 'docker' or 'swarm', got {runtime!r}"
            )
        swarm_prefix = env.get("DOCKYARD_SWARM_PREFIX", "") or cls.swarm_prefix
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,19}", swarm_prefix):
            raise SettingsError(
                "DOCKYARD_SWARM_PREFIX must be 1-20 lowercase letters, digits or dashes,"
                f" starting with a letter; got {swarm_prefix!r}"
            )
        caddy_upstreams = env.get("DOCKYARD_CADDY_UPSTREAMS", "") or "router"
        if caddy_upstreams not in {"router", "instances"}:
            raise SettingsError(
                f"DOCKYARD_CADDY_UPSTREAMS must be 'router' or 'instances', got {caddy_upstreams!r}"
            )
        router = env.get("DOCKYARD_ROUTER", "") or "builtin"
        if router not in {"builtin", "caddy"}:
            raise SettingsError(f"DOCKYARD_ROUTER must be 'builtin' or 'caddy', got {router!r}")
        public_url = (env.get("DOCKYARD_PUBLIC_URL", "") or f"http://{host}:{port}").rstrip("/")
        if not public_url.startswith(("http://", "https://")):
            raise SettingsError("DOCKYARD_PUBLIC_URL must start with http:// or https://")
        internal_url = (env.get("DOCKYARD_INTERNAL_URL", "") or public_url).rstrip("/")
        if not internal_url.startswith(("http://", "https://")) or urlsplit(internal_url).query:
            raise SettingsError(
                "DOCKYARD_INTERNAL_URL must be this API process's own address, reachable "
                "from the other dockyard processes: http(s)://host:port without a query, "
                f"got {internal_url!r}"
            )
        attach_port = _int(env, "DOCKYARD_ATTACH_PORT", cls.attach_port)
        # By default the one-offs' terminals are reached on the host clients reach the API
        # by (the bind address may be 0.0.0.0, which no client can connect to).
        public_host = urlsplit(public_url).hostname or host
        if ":" in public_host:
            public_host = f"[{public_host}]"
        attach_public_url = (
            env.get("DOCKYARD_ATTACH_PUBLIC_URL", "") or f"http://{public_host}:{attach_port}"
        ).rstrip("/")
        if not attach_public_url.startswith(("http://", "https://")):
            raise SettingsError("DOCKYARD_ATTACH_PUBLIC_URL must start with http:// or https://")
        return cls(
            data_dir=data_dir,
            host=host,
            port=port,
            public_url=public_url,
            internal_url=internal_url,
            database_url=env.get("DOCKYARD_DATABASE_URL", "")
            or f"sqlite:///{data_dir / 'dockyard.db'}",
            runtime=runtime,
            docker_host=env.get("DOCKYARD_DOCKER_HOST", "") or env.get("DOCKER_HOST", ""),
            stack=env.get("DOCKYARD_STACK", "") or cls.stack,
            registry=env.get("DOCKYARD_REGISTRY", ""),
            registry_user=env.get("DOCKYARD_REGISTRY_USER", ""),
            registry_password=env.get("DOCKYARD_REGISTRY_PASSWORD", ""),
            swarm_prefix=swarm_prefix,
            swarm_check_seconds=_float(
                env, "DOCKYARD_SWARM_CHECK_SECONDS", cls.swarm_check_seconds
            ),
            releases_kept=_int(
                env,
                "DOCKYARD_RELEASES_KEPT",
                cls.releases_kept if runtime == "local" else CONTAINER_RELEASES_KEPT,
                minimum=2,
            ),
            router_host=env.get("DOCKYARD_ROUTER_HOST", "") or host,
            router_port=_int(env, "DOCKYARD_ROUTER_PORT", cls.router_port),
            attach_port=attach_port,
            attach_address_chosen=bool(
                env.get("DOCKYARD_ATTACH_PORT") or env.get("DOCKYARD_ATTACH_PUBLIC_URL")
            ),
            attach_public_url=attach_public_url,
            apps_domain=(env.get("DOCKYARD_APPS_DOMAIN", "") or cls.apps_domain).lower(),
            source_ttl=_int(env, "DOCKYARD_SOURCE_TTL", cls.source_ttl, minimum=1),
            boot_timeout=_int(env, "DOCKYARD_BOOT_TIMEOUT", cls.boot_timeout, minimum=1),
            build_timeout=_int(env, "DOCKYARD_BUILD_TIMEOUT", cls.build_timeout, minimum=1),
            fetch_allow=_allow_list(env.get("DOCKYARD_FETCH_ALLOW", "")),
            max_source_bytes=_int(env, "DOCKYARD_MAX_SOURCE_BYTES", cls.max_source_bytes),
            max_cache_bytes=_int(env, "DOCKYARD_MAX_CACHE_BYTES", cls.max_cache_bytes),
            rate_limit_per_minute=_int(
                env, "DOCKYARD_RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_minute, minimum=1
            ),
            workers=_int(
                env, "DOCKYARD_WORKERS", default_workers(cls.build_memory_bytes), minimum=1
            ),
            sandbox=_bool(env, "DOCKYARD_SANDBOX", True),
            build_memory_bytes=_int(
                env, "DOCKYARD_BUILD_MEMORY_MB", cls.build_memory_bytes // 1024**2, minimum=16
            )
            * 1024**2,
            max_apps_per_user=_int(env, "DOCKYARD_MAX_APPS_PER_USER", cls.max_apps_per_user),
            max_instances_per_user=_int(
                env, "DOCKYARD_MAX_INSTANCES_PER_USER", cls.max_instances_per_user
            ),
            max_memory_per_user=_int(
                env, "DOCKYARD_MAX_MEMORY_MB_PER_USER", cls.max_memory_per_user // 1024**2
            )
            * 1024**2,
            api_max_head_bytes=_int(
                env, "DOCKYARD_API_MAX_HEAD_BYTES", cls.api_max_head_bytes, minimum=1024
            ),
            api_max_headers=_int(env, "DOCKYARD_API_MAX_HEADERS", cls.api_max_headers, minimum=10),
            api_header_timeout=_int(
                env, "DOCKYARD_API_HEADER_TIMEOUT", cls.api_header_timeout, minimum=1
            ),
            max_build_output_bytes=_int(
                env, "DOCKYARD_MAX_BUILD_OUTPUT_BYTES", cls.max_build_output_bytes, minimum=65536
            ),
            max_pending_sources=_int(
                env, "DOCKYARD_MAX_PENDING_SOURCES", cls.max_pending_sources, minimum=1
            ),
            max_pending_source_bytes=_int(
                env, "DOCKYARD_MAX_PENDING_SOURCE_BYTES", cls.max_pending_source_bytes, minimum=1
            ),
            api_max_connections_per_client=_int(
                env,
                "DOCKYARD_API_MAX_CONNECTIONS_PER_CLIENT",
                cls.api_max_connections_per_client,
                minimum=1,
            ),
            router_max_connections_per_client=_int(
                env,
                "DOCKYARD_ROUTER_MAX_CONNECTIONS_PER_CLIENT",
                cls.router_max_connections_per_client,
                minimum=0,
            ),
            network_isolation=_bool(env, "DOCKYARD_NETWORK_ISOLATION", True),
            app_network_pool=_app_network_pool(env),
            container_network_pool=_container_network_pool(env),
            blocked_networks=_blocked_networks(env),
            router=router,
            # DOCKYARD_HTTPS_PORT is the name ARCHITECTURE.md gives it; either is read.
            router_https_port=_int(
                env,
                "DOCKYARD_ROUTER_HTTPS_PORT"
                if env.get("DOCKYARD_ROUTER_HTTPS_PORT")
                else "DOCKYARD_HTTPS_PORT",
                cls.router_https_port,
            ),
            caddy_admin=env.get("DOCKYARD_CADDY_ADMIN", "") or cls.caddy_admin,
            caddy_binary=env.get("DOCKYARD_CADDY_BINARY", "") or cls.caddy_binary,
            acme_ca=env.get("DOCKYARD_ACME_CA", "") or cls.acme_ca,
            acme_ca_root=env.get("DOCKYARD_ACME_CA_ROOT", ""),
            acme_email=env.get("DOCKYARD_ACME_EMAIL", ""),
            acme_challenges=_challenges(env.get("DOCKYARD_ACME_CHALLENGES", "")),
            allow_wildcard_domains=_bool(env, "DOCKYARD_ALLOW_WILDCARD_DOMAINS", False),
            caddy_upstreams=caddy_upstreams,
            worker_name=env.get("DOCKYARD_WORKER_NAME", "") or socket.gethostname(),
            lease_seconds=_int(env, "DOCKYARD_LEASE_SECONDS", cls.lease_seconds, minimum=3),
        )

    @classmethod
    def from_env(cls) -> Settings:
        return cls.from_mapping(os.environ)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def quotas(self) -> Quotas:
        return Quotas(
            apps=self.max_apps_per_user,
            instances=self.max_instances_per_user,
            memory_bytes=self.max_memory_per_user,
        )

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))

    @property
    def own_url(self) -> str:
        """This API process's own address (``internal_url``, else the public URL)."""
        return self.internal_url or self.public_url

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
    def toolchains_dir(self) -> Path:
        """Toolchains installed once for every app (``pipeline.toolchains``)."""
        return self.data_dir / "toolchains"

    @property
    def releases_dir(self) -> Path:
        return self.data_dir / "releases"

    @property
    def caches_dir(self) -> Path:
        return self.data_dir / "caches"

    @property
    def tls_keys_dir(self) -> Path:
        """Certificates of the owners' own and their private keys (0700, files 0600)."""
        return self.data_dir / "tls"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

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
