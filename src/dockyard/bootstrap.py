"""The composition root: the only place that picks concrete backends.

``dockyard serve``, the admin commands, the tests and the benchmarks are different wirings
of the same services, all built here from one ``Settings``. Every dependency is a typed
field of ``Platform`` (or of ``Server``, for the parts only a serving process runs), set
once here, so "go to definition" finds what a handler or a worker really talks to.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from dockyard import sandbox
from dockyard.addons.local import LocalAddonServers
from dockyard.api.listing_keys import ListingKeys
from dockyard.api.pagecache import PageCache
from dockyard.api.ratelimit import RateLimiter
from dockyard.api.streams import OpenStreams
from dockyard.backends.blobstore.local import LocalBlobStore
from dockyard.backends.eventbus.base import ALL_CHANNELS, Event, EventBus
from dockyard.backends.eventbus.memory import MemoryEventBus
from dockyard.db.engine import make_engine, make_sessionmaker, migrate
from dockyard.errors import DockyardError
from dockyard.isolation import apps as isolation_apps
from dockyard.isolation.apps import AppIsolation
from dockyard.pipeline.executor import BubblewrapExecutor, StepExecutor, UnsandboxedExecutor
from dockyard.platform import Platform
from dockyard.router.accesslog import AccessLog
from dockyard.router.caddy import CaddyOptions, CaddyRouter
from dockyard.router.limits import Limits
from dockyard.router.proxy import Router
from dockyard.routetable import RouteTable
from dockyard.runtime.applogs import RouterLogs
from dockyard.runtime.base import AppRuntime, ReleaseArtifacts, Runtime
from dockyard.runtime.local import LocalRuntime
from dockyard.runtime.oneoff import OneOffs
from dockyard.runtime.supervisor import Supervisor
from dockyard.services import apps as apps_service
from dockyard.services import build_caches, remote, remote_oneoffs
from dockyard.services import domains as domains_service
from dockyard.services import routing as routing_service
from dockyard.services.auth import JWT_KEY_NAME, UserCache, load_or_create_secret, shared_secret
from dockyard.services.events import APP_DELETED
from dockyard.services.lifecycle import (
    drop_stale_caches,
    follow_cache_changes,
    release_environment,
)
from dockyard.services.logaccess import LogTokens
from dockyard.services.oneoffs import LocalOneOffs
from dockyard.services.routing import DatabaseRoutes
from dockyard.services.runtime_state import DatabaseStateStore
from dockyard.settings import Settings
from dockyard.signals import Signal
from dockyard.worker.pool import (
    IDLE_POLL_SECONDS,
    SINGLE_PROCESS_IDLE_POLL_SECONDS,
    WorkerPool,
)
from dockyard.worker.presence import Presence
from dockyard.worker.runner import run_deployment


@dataclass
class Server:
    """``dockyard serve``: a platform that runs apps, plus the parts only a server runs."""

    platform: Platform
    supervisor: AppRuntime  # the Supervisor, or SwarmApps on DOCKYARD_RUNTIME=swarm
    pool: WorkerPool
    router: Router | CaddyRouter


def prepare_data_dir(settings: Settings) -> None:
    """Create the data dir with the narrowest modes that still let sandboxes start.

    bubblewrap runs as the app's unprivileged uid, so it must be able to *traverse* to the
    build, cache and release directories it mounts (0711: no listing). Everything else —
    database, secret key, blobs, logs — is private to the server (0700/0600). Sandboxed
    code never sees these paths at all: it lives in its own mount namespace.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o711)  # noqa: S103 - traversable, not listable (see above)
    for path in (settings.builds_dir, settings.releases_dir, settings.caches_dir):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o711)  # noqa: S103 - traversable, not listable (see above)
    for path in (settings.blobs_dir, settings.logs_dir):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)


def make_bus(settings: Settings) -> EventBus:
    if settings.is_postgres:
        from dockyard.backends.eventbus.postgres import PostgresEventBus

        return PostgresEventBus(settings.database_url)
    return MemoryEventBus()


def make_runtime(
    settings: Settings, isolation: AppIsolation | None
) -> tuple[Runtime, ReleaseArtifacts | None]:
    """The runtime named by ``DOCKYARD_RUNTIME``, and what it needs made of each release
    at the ``pushing`` step (None: it runs the release directory itself)."""
    if settings.runtime == "docker":
        from dockyard.runtime.docker.wiring import docker_runtime

        return docker_runtime(settings)
    if settings.runtime != "local":
        raise DockyardError(
            f"The {settings.runtime!r} runtime does not run single processes; use 'local'"
            " or 'docker'."
        )
    return LocalRuntime(isolation=isolation), None


def make_build_executor(
    settings: Settings, runtime: Runtime, artifacts: ReleaseArtifacts | None
) -> StepExecutor:
    """Where build steps run: in containers of the stack when apps run in containers
    (a build sees the root file system its release will run on), else in bubblewrap on
    the host (or, if the operator turned the sandbox off, in a plain process group)."""
    if settings.runtime == "docker":
        from dockyard.runtime.docker.images import ReleaseImages
        from dockyard.runtime.docker.runtime import DockerRuntime
        from dockyard.runtime.docker.wiring import build_executor

        assert isinstance(runtime, DockerRuntime) and isinstance(artifacts, ReleaseImages)
        return build_executor(runtime, artifacts)
    return BubblewrapExecutor() if settings.sandbox else UnsandboxedExecutor()


def make_swarm_apps(
    settings: Settings, db: sessionmaker[Session], routes: RouteTable | DatabaseRoutes
) -> tuple[AppRuntime, ReleaseArtifacts, OneOffs, StepExecutor]:
    """``DOCKYARD_RUNTIME=swarm``: Swarm runs the apps' services, no supervisor; one-off
    commands and build steps are containers on the manager's engine. In a worker process
    (``routes`` in the database) it answers for the apps this worker deployed last."""
    from dockyard.runtime.docker.wiring import build_executor
    from dockyard.runtime.swarm.wiring import swarm_apps

    shared = routes if isinstance(routes, DatabaseRoutes) else None
    store = DatabaseStateStore(db, owner=None if shared is None else shared.owner)
    apps, images, one_off_runtime = swarm_apps(
        settings,
        routes,
        store,
        store.sandbox_uid,
        take_over=None if shared is None else shared.take_over,
    )
    one_offs = OneOffs(one_off_runtime, apps.one_off_spec, stop_grace=settings.stop_grace_seconds)
    apps.on_remove(one_offs.stop_app)
    return apps, images, one_offs, build_executor(one_off_runtime, images)


def make_supervisor(
    settings: Settings,
    db: sessionmaker[Session],
    routes: RouteTable | DatabaseRoutes,
    runtime: Runtime,
) -> Supervisor:
    """The runtime under the supervisor that restarts and switches its processes. In a
    worker process (``routes`` in the database) it runs the apps this worker deployed
    last, and only those (services/routing.py)."""
    shared = routes if isinstance(routes, DatabaseRoutes) else None
    store = DatabaseStateStore(db, owner=None if shared is None else shared.owner)
    return Supervisor(
        runtime,
        routes,
        store,
        take_over=None if shared is None else shared.take_over,
        boot_timeout=float(settings.boot_timeout),
        stop_grace=settings.stop_grace_seconds,
        drain_seconds=settings.drain_seconds,
        logs_dir=settings.logs_dir,
        host_uid_for=store.sandbox_uid,
        # Each instance's memory limit is its size's (domain/formation.py).
        limits=sandbox.Limits(memory_bytes=None, max_processes=settings.app_max_processes),
    )


def run_one_offs_here(platform: Platform) -> LocalOneOffs | None:
    """The API's ``one_off_runner`` where this process runs the one-offs itself: each is
    attached to through this process's attach server (``DOCKYARD_ATTACH_PUBLIC_URL``)."""
    if platform.one_offs is None:
        return None
    runner = LocalOneOffs(
        platform.one_offs,
        attach_public_url=platform.settings.attach_public_url,
        env_for=lambda name: release_environment(db=platform.db, app_name=name),
    )
    platform.one_off_runner = runner
    return runner


def follow_domains(
    settings: Settings, db: sessionmaker[Session], bus: EventBus, routes: RouteTable
) -> None:
    """Keep the route table's custom host names in step with the domains table: loaded
    now, and again on every change any process publishes (or after a bus gap)."""

    def reload(channel: str, events: Sequence[Event]) -> None:
        # A deleted app's domains went with it (ON DELETE CASCADE): reload then too.
        app_deleted = any(event.get("type") == APP_DELETED for event in events)
        if channel in (domains_service.DOMAINS_CHANNEL, ALL_CHANNELS) or app_deleted:
            domains_service.sync_routes(db=db, keys_dir=settings.tls_keys_dir, routes=routes)

    domains_service.sync_routes(db=db, keys_dir=settings.tls_keys_dir, routes=routes)
    bus.observe(reload)


def build_platform(settings: Settings) -> Platform:
    """The control plane: database, blobs, bus and caches; no apps run from it."""
    prepare_data_dir(settings)
    engine = make_engine(settings.database_url)
    migrate(engine)
    database_file = settings.data_dir / "dockyard.db"
    if database_file.exists():
        os.chmod(database_file, 0o600)
    bus = make_bus(settings)
    listing_keys = ListingKeys()
    bus.observe(listing_keys.observe)
    db = make_sessionmaker(engine)
    routes = RouteTable()
    follow_domains(settings, db, bus, routes)
    jwt_key = load_or_create_secret(settings.secret_file)
    if settings.is_postgres:  # every API process signs with the same key
        jwt_key = shared_secret(db=db, name=JWT_KEY_NAME, initial=lambda: jwt_key)
    return Platform(
        settings=settings,
        engine=engine,
        db=db,
        blobs=LocalBlobStore(settings.blobs_dir),
        bus=bus,
        jwt_key=jwt_key,
        rate_limiter=RateLimiter(settings.rate_limit_per_minute),
        user_cache=UserCache(),
        listing_keys=listing_keys,
        deployment_pages=PageCache(),
        streams=OpenStreams(),
        deployment_queued=Signal(),
        routes=routes,
        log_tokens=LogTokens(db),
    )


def make_router(
    settings: Settings,
    routes: RouteTable,
    access_lines: Callable[[routing_service.RouterLines], None] | None = None,
) -> Router | CaddyRouter:
    """The front door named by ``DOCKYARD_ROUTER``: the built-in HTTP router, or Caddy
    (HTTPS, certificates from ``DOCKYARD_ACME_CA``) driven through its admin API. Its
    access lines go to ``access_lines`` (a router process: to the workers), else to the
    apps' logs in this data dir."""
    write = access_lines or RouterLogs(settings.logs_dir).write
    if settings.router != "caddy":
        return Router(
            routes,
            apps_domain=settings.apps_domain,
            limits=Limits(max_connections_per_client=settings.router_max_connections_per_client),
            access_log=AccessLog(write),
        )
    api_host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    options = CaddyOptions(
        admin=settings.caddy_admin,
        binary=settings.caddy_binary,
        apps_domain=settings.apps_domain,
        http_port=settings.router_port,
        https_port=settings.router_https_port,
        acme_ca=settings.acme_ca,
        acme_ca_root=settings.acme_ca_root,
        acme_email=settings.acme_email,
        ask_url=f"http://{api_host}:{settings.port}/internal/tls/ask",
        storage_dir=settings.data_dir / "caddy",
        acme_challenges=settings.acme_challenges,
        upstreams=settings.caddy_upstreams,
    )
    return CaddyRouter(
        routes, options, access_log=lambda app, line: write({app: [(time.time(), line)]})
    )


@dataclass
class WorkerProcess:
    """``dockyard worker``: builds deployments and runs the apps it deployed last."""

    platform: Platform
    supervisor: AppRuntime  # the Supervisor, or SwarmApps on DOCKYARD_RUNTIME=swarm
    pool: WorkerPool
    presence: Presence


@dataclass
class RouterProcess:
    """``dockyard router``: the front door, its route table loaded from the database."""

    platform: Platform
    router: Router | CaddyRouter


def require_postgres(settings: Settings, command: str) -> None:
    if not settings.is_postgres:
        raise DockyardError(
            f"'dockyard {command}' runs beside other dockyard processes, which share "
            "PostgreSQL: set DOCKYARD_DATABASE_URL=postgresql://... (or run everything in "
            "one process with 'dockyard serve')."
        )


def build_worker(settings: Settings) -> WorkerProcess:
    """A worker process: claims deployments, builds them, and hosts the apps it switched
    to a new release under its name (``DOCKYARD_WORKER_NAME``); the route of each goes to
    the database, where the router processes read it."""
    require_postgres(settings, "worker")
    platform = build_platform(settings)
    if settings.runtime == "local":
        platform.isolation = isolation_apps.for_settings(
            settings, first_uid=apps_service.FIRST_SANDBOX_UID
        )
    shared_routes = DatabaseRoutes(platform.db, platform.bus, owner=settings.worker_name)
    supervisor: AppRuntime
    # The apps of a gone worker (worker/presence.py): adopt(app, claim).
    adopt: Callable[[str, Callable[[], bool]], bool] | None = None
    if settings.runtime == "swarm":
        from dockyard.runtime.swarm.apps import SwarmApps

        # Every worker drives the same swarm; each answers for the apps it deployed last,
        # and for those of gone workers it adopts (they run on in Swarm).
        supervisor, platform.artifacts, platform.one_offs, platform.build_executor = (
            make_swarm_apps(settings, platform.db, shared_routes)
        )
        assert isinstance(supervisor, SwarmApps)
        swarm_apps = supervisor

        def adopt_app(app: str, claim: Callable[[], bool]) -> bool:
            return swarm_apps.adopt(
                app, lambda name: release_environment(db=platform.db, app_name=name), claim
            )

        adopt = adopt_app
    else:
        runtime, artifacts = make_runtime(settings, platform.isolation)
        platform.build_executor = make_build_executor(settings, runtime, artifacts)
        local = make_supervisor(settings, platform.db, shared_routes, runtime)
        platform.artifacts = artifacts
        platform.one_offs = OneOffs(
            local.runtime, local.one_off_spec, stop_grace=settings.stop_grace_seconds
        )
        local.on_remove(platform.one_offs.stop_app)
        supervisor = local
    platform.supervisor = supervisor
    platform.fetch_sources_from_api = True  # no disk is shared with the API processes
    one_offs = run_one_offs_here(platform)

    def in_thread(change: Callable[[str], None]) -> Callable[[str], None]:
        # Called in the bus's thread, which must not wait for an app's lock.
        return lambda app: threading.Thread(
            target=change, args=(app,), name="dockyard-ownership", daemon=True
        ).start()

    remote.answer_calls(
        bus=platform.bus,
        owner=settings.worker_name,
        processes=supervisor,
        env_for=lambda name: release_environment(db=platform.db, app_name=name),
        take_over=shared_routes.take_over,
        one_offs=None if one_offs is None else partial(remote_oneoffs.answer, one_offs),
    )
    follow_cache_changes(platform.bus, settings)
    routing_service.collect_router_lines(platform.bus, RouterLogs(settings.logs_dir).write)
    routing_service.on_owner_change(
        platform.bus,
        settings.worker_name,
        handed_over=in_thread(supervisor.hand_over),
        deleted=in_thread(supervisor.remove_app),
    )
    pool = WorkerPool(
        platform, lambda p, d, stop: run_deployment(p, d, stopping=stop), workers=settings.workers
    )
    platform.deployment_queued.connect(pool.wake)

    def wake_on_new_deployment(_channel: str, events: Sequence[Event]) -> None:
        # Queued by an api process: its notification wakes an idle build slot at once,
        # rather than at the next poll.
        if any(event.get("type") == "new" for event in events):
            pool.wake()

    platform.bus.observe(wake_on_new_deployment)
    return WorkerProcess(
        platform=platform,
        supervisor=supervisor,
        pool=pool,
        presence=Presence(platform, adopt=adopt),
    )


def build_api(settings: Settings) -> Platform:
    """An API process: the control plane, asking the workers about the apps they run."""
    require_postgres(settings, "api")
    platform = build_platform(settings)
    calls = remote.RemoteProcesses(platform.db, platform.bus)
    platform.remote_processes = calls
    platform.one_off_runner = remote_oneoffs.RemoteOneOffs(calls)
    # The build caches this process received are on its disk alone (several API
    # processes share no disk): it drops each once it is no longer the app's cache.
    drop_stale_caches(platform.bus, platform.db, platform.blobs, settings.own_url)
    build_caches.drop_all_stale(db=platform.db, blobs=platform.blobs, holder_url=settings.own_url)
    return platform


def build_router_process(settings: Settings) -> RouterProcess:
    """A router process: the route table follows the database (services/routing.py)."""
    require_postgres(settings, "router")
    platform = build_platform(settings)
    routing_service.follow(db=platform.db, bus=platform.bus, routes=platform.routes)
    router = make_router(
        settings, platform.routes, routing_service.forward_router_lines(platform.bus)
    )
    _push_domain_changes(platform, router)
    return RouterProcess(platform=platform, router=router)


def _push_domain_changes(platform: Platform, router: Router | CaddyRouter) -> None:
    if isinstance(router, CaddyRouter):
        caddy = router

        def push_domain_change(channel: str, _events: Sequence[Event]) -> None:
            # Registered after follow_domains' observer, so the table is already reloaded.
            if channel in (domains_service.DOMAINS_CHANNEL, ALL_CHANNELS):
                caddy.push_now()

        platform.bus.observe(push_domain_change)


def build_server(settings: Settings) -> Server:
    """Everything ``dockyard serve`` runs in one process: the control plane, the runtime's
    supervisor, the workers that build deployments and the router in front of the apps."""
    platform = build_platform(settings)
    if settings.runtime == "local":  # containers are isolated by the engine's networks
        platform.isolation = isolation_apps.for_settings(
            settings, first_uid=apps_service.FIRST_SANDBOX_UID
        )
    apps: AppRuntime
    if settings.runtime == "swarm":
        apps, platform.artifacts, platform.one_offs, platform.build_executor = make_swarm_apps(
            settings, platform.db, platform.routes
        )
    else:
        runtime, artifacts = make_runtime(settings, platform.isolation)
        platform.build_executor = make_build_executor(settings, runtime, artifacts)
        supervisor = make_supervisor(settings, platform.db, platform.routes, runtime)
        platform.artifacts = artifacts
        if settings.runtime == "local":  # no database image can be pulled for the others yet
            platform.addons = LocalAddonServers(
                root=settings.data_dir / "addons", isolation=platform.isolation
            )
        one_offs = OneOffs(
            supervisor.runtime, supervisor.one_off_spec, stop_grace=settings.stop_grace_seconds
        )
        supervisor.on_remove(one_offs.stop_app)
        platform.one_offs = one_offs
        apps = supervisor
    platform.supervisor = apps
    run_one_offs_here(platform)
    pool = WorkerPool(
        platform,
        lambda p, d, stop: run_deployment(p, d, stopping=stop),
        workers=settings.workers,
        idle_poll_seconds=(
            IDLE_POLL_SECONDS if settings.is_postgres else SINGLE_PROCESS_IDLE_POLL_SECONDS
        ),
    )
    platform.deployment_queued.connect(pool.wake)
    router = make_router(settings, platform.routes)
    _push_domain_changes(platform, router)
    return Server(platform=platform, supervisor=apps, pool=pool, router=router)
