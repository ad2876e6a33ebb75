"""``dockyard serve``: API, workers, runtime supervisor and router in one process.

Start-up order matters: orphaned deployments are ended before workers claim new ones,
and the supervisor restores running apps before the router takes traffic for them.
Shutdown (SIGTERM) is the reverse: stop claiming, let running deployments end (as
``aborted`` if they must be cut), send their final statuses, then close the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shutil
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from dockyard import sandbox
from dockyard.api.app import create_app
from dockyard.api.httpproto import FewerCopiesHttpToolsProtocol
from dockyard.bootstrap import Platform, build_platform
from dockyard.errors import DockyardError
from dockyard.pipeline import package
from dockyard.router.proxy import Router
from dockyard.router.table import RouteTable
from dockyard.runtime.local import LocalRuntime
from dockyard.runtime.supervisor import Supervisor
from dockyard.services import deployments as deployments_service
from dockyard.services import sources as sources_service
from dockyard.services.lifecycle import release_environment
from dockyard.services.runtime_state import DatabaseStateStore
from dockyard.settings import Settings
from dockyard.worker.pool import WorkerPool
from dockyard.worker.runner import run_deployment

log = logging.getLogger("dockyard")

SOURCE_SWEEP_SECONDS = 60
STREAM_FLUSH_SECONDS = 0.5


def recover(platform: Platform, *, single_process: bool) -> None:
    """Leave no deployment stuck after a crash, and no leftovers on disk."""
    for aborted in deployments_service.abort_orphans(
        db=platform.db, bus=platform.bus, everything=single_process
    ):
        log.warning("deployment %s was interrupted by a restart: aborted", aborted.id)
    for leftover in platform.settings.builds_dir.iterdir():
        # Build directories of this process's predecessor; ``.removing-*`` ones were
        # being deleted in the background when it stopped.
        if single_process or leftover.name.startswith(".removing-"):
            shutil.rmtree(leftover, ignore_errors=True)
    sweep = getattr(platform.blobs, "sweep_partials", None)
    if sweep is not None:
        sweep()
    sources_service.sweep_expired(db=platform.db, blobs=platform.blobs)


# How the API speaks HTTP and WebSocket; the test servers use the same.
PROTOCOL_OPTIONS: dict[str, Any] = {
    # Request bodies without uvicorn's two extra copies (api/httpproto.py).
    "http": FewerCopiesHttpToolsProtocol,
    # The stream writes pre-built frames straight to this implementation's connection
    # (api/wsframes.py); named, so that an upgrade changing "auto" cannot slow it.
    "ws": "websockets-sansio",
    "ws_max_size": 64 * 1024,  # the only client frame is a small auth message
    # Log frames are small; compressing each one cost a quarter of the event loop.
    "ws_per_message_deflate": False,
}


def check_host(settings: Settings) -> None:
    """Refuse to start, saying what to install, rather than fail every deployment later."""
    package.check_tools()
    if settings.sandbox:
        sandbox.check_tools()
    else:
        log.warning(
            "DOCKYARD_SANDBOX is off: builds and apps run UNSANDBOXED. Never do this with untrusted code."
        )


def make_supervisor(platform: Platform, routes: RouteTable) -> Supervisor:
    settings = platform.settings
    if settings.runtime != "local":
        raise DockyardError(
            f"The {settings.runtime!r} runtime is not available in this version; use 'local'."
        )
    store = DatabaseStateStore(platform.db)
    return Supervisor(
        LocalRuntime(),
        routes,
        store,
        boot_timeout=float(settings.boot_timeout),
        stop_grace=settings.stop_grace_seconds,
        drain_seconds=settings.drain_seconds,
        logs_dir=settings.data_dir / "logs",
        host_uid_for=store.sandbox_uid,
        limits=sandbox.Limits(
            memory_bytes=settings.app_memory_bytes, max_processes=settings.app_max_processes
        ),
    )


def wire(platform: Platform) -> Starlette:
    """The full server: API app whose lifespan runs workers, supervisor and router."""
    settings = platform.settings
    routes = RouteTable()
    supervisor = make_supervisor(platform, routes)
    pool = WorkerPool(
        platform, lambda p, d, stop: run_deployment(p, d, stopping=stop), workers=settings.workers
    )
    router = Router(routes, apps_domain=settings.apps_domain)
    platform.extras.update(
        supervisor=supervisor, routes=routes, pool=pool, router=router, wake_workers=pool.wake
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.bus.start()
        await asyncio.to_thread(recover, platform, single_process=not settings.is_postgres)
        await router.start(settings.router_host, settings.router_port)
        await asyncio.to_thread(
            supervisor.restore, lambda name: release_environment(platform, name)
        )
        supervision_stop = threading.Event()
        supervision = threading.Thread(
            target=supervisor.run, args=(supervision_stop,), name="dockyard-supervisor", daemon=True
        )
        supervision.start()
        pool.start()
        sweeper = asyncio.create_task(_sweep_sources(platform))
        _freeze_startup_objects()
        log.info(
            "dockyard API on %s, apps on http://*.%s:%s/",
            settings.public_url,
            settings.apps_domain,
            router.port,
        )
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.to_thread(pool.stop)
            await _flush_streams(platform)
            supervision_stop.set()
            await asyncio.to_thread(supervisor.shutdown)
            await router.close()
            await platform.bus.close()

    return create_app(platform, lifespan=lifespan)


def _freeze_startup_objects() -> None:
    """Keep what start-up created (modules, the ORM's registries, the app) out of the
    garbage collector's full passes. Each pass walked all of it: ~120 ms with the event
    loop stopped, which showed as a stall of every live log stream (p99 delivery 90-120
    ms, 24 ms once frozen). Start-up objects live as long as the server anyway."""
    gc.collect()
    gc.freeze()


async def _sweep_sources(platform: Platform) -> None:
    while True:
        await asyncio.sleep(SOURCE_SWEEP_SECONDS)
        try:
            await asyncio.to_thread(
                sources_service.sweep_expired, db=platform.db, blobs=platform.blobs
            )
        except Exception:
            log.exception("sweeping expired sources failed")


async def _flush_streams(platform: Platform) -> None:
    """Give open streams a moment to send the final statuses just published, then close them."""
    tasks: set[Any] = platform.extras.get("stream_tasks", set())
    if tasks:
        await asyncio.sleep(STREAM_FLUSH_SECONDS)
    for task in list(tasks):
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM first ends the running deployments and lets the streams send
    their final statuses; only then does uvicorn close connections (its own shutdown
    would close the WebSockets first, and the official client fails on a stream closed
    before a final status). A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, platform: Platform) -> None:
        super().__init__(config)
        self.platform = platform
        self._draining = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._draining:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("stopping: ending running deployments, then closing streams")
        threading.Thread(
            target=self._drain, args=(sig,), name="dockyard-drain", daemon=True
        ).start()

    def _drain(self, sig: int) -> None:
        try:
            pool: WorkerPool | None = self.platform.extras.get("pool")
            if pool is not None:
                pool.stop()
            time.sleep(STREAM_FLUSH_SECONDS)  # the final statuses reach the sockets
        finally:
            super().handle_exit(sig, None)


def serve(settings: Settings) -> None:
    check_host(settings)
    platform = build_platform(settings)
    app = wire(platform)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        **PROTOCOL_OPTIONS,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    DrainingServer(config, platform).run()
