"""``dockyard serve``: API, workers, runtime supervisor and router in one process.

Start-up order matters: orphaned deployments are ended before workers claim new ones,
and the supervisor restores running apps before the router takes traffic for them.
Shutdown (SIGTERM) is the reverse: stop claiming, let running deployments end (as
``aborted`` if they must be cut), send their final statuses, then close the streams.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from dockyard import datadir, sandbox
from dockyard.api import frontdoor
from dockyard.api.app import create_app
from dockyard.api.attach import AttachServer
from dockyard.bootstrap import Server, build_server
from dockyard.pipeline import package
from dockyard.platform import Platform
from dockyard.services import addons as addons_service
from dockyard.services import deployments as deployments_service
from dockyard.services import sources as sources_service
from dockyard.services.lifecycle import release_environment
from dockyard.settings import Settings
from dockyard.worker.pool import WorkerPool

log = logging.getLogger("dockyard")

SOURCE_SWEEP_SECONDS = 60
STREAM_FLUSH_SECONDS = 0.5
ADDONS_READY_SECONDS = 30.0


def recover(platform: Platform, *, single_process: bool, own_builds: bool = False) -> None:
    """Leave no deployment stuck after a crash, and no leftovers on disk. ``own_builds``:
    no other process builds in this data dir (a worker's own), so whatever is in its
    builds directory was left by this process's predecessor, even if another worker
    ended that deployment."""
    for aborted in deployments_service.abort_orphans(
        db=platform.db, bus=platform.bus, everything=single_process
    ):
        log.warning("deployment %s was interrupted by a restart: aborted", aborted.id)
    for leftover in platform.settings.builds_dir.iterdir():
        # Build directories of this process's predecessor; ``.removing-*`` ones were
        # being deleted in the background when it stopped.
        if single_process or own_builds or leftover.name.startswith(".removing-"):
            shutil.rmtree(leftover, ignore_errors=True)
    platform.blobs.sweep_partials()
    sources_service.sweep_expired(
        db=platform.db, blobs=platform.blobs, holder_url=platform.settings.own_url
    )


# How the API speaks WebSocket; the test servers use the same (``protocol_options``).
PROTOCOL_OPTIONS: dict[str, Any] = {
    "ws_max_size": 64 * 1024,  # the only client frame is a small auth message
    # Log frames are small; compressing each one cost a quarter of the event loop.
    "ws_per_message_deflate": False,
}


def protocol_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's protocol options for the API on ``settings``: HTTP through dockyard's
    front door (its limits, api/frontdoor.py; request bodies without uvicorn's two extra
    copies, api/httpproto.py), and WebSocket through uvicorn's websockets-sansio
    implementation, to which the stream writes pre-built frames (api/wsframes.py)."""
    limits = frontdoor.FrontDoorLimits(
        max_head_bytes=settings.api_max_head_bytes,
        max_headers=settings.api_max_headers,
        header_timeout=float(settings.api_header_timeout),
        max_connections_per_client=settings.api_max_connections_per_client,
    )
    return {**PROTOCOL_OPTIONS, **frontdoor.protocols(limits)}


def restore_addons(platform: Platform) -> None:
    """Start every provisioned addon's server again (they die with the server), on its
    data; from then on they are supervised."""
    servers = platform.addons
    if servers is None:
        return
    # Backups a crash interrupted: never stored, their files are of no use.
    shutil.rmtree(addons_service.scratch_dir(platform.settings.data_dir), ignore_errors=True)
    servers.start()
    if not platform.settings.is_postgres:  # one process: nothing else is provisioning
        for addon_id in addons_service.finish_interrupted(db=platform.db, servers=servers):
            log.warning("addon %s was interrupted while (de)provisioning: removed", addon_id)
    for spec in addons_service.running_specs(db=platform.db):
        servers.ensure_running(spec)
    # Apps start next, and may connect to their database as they boot: give the servers
    # (PostgreSQL replaying its log after a crash) a moment, not forever.
    for addon_id in servers.wait_until_ready(ADDONS_READY_SECONDS):
        log.warning("addon %s is not up yet; it is being started again", addon_id)


def check_host(settings: Settings) -> None:
    """Refuse to start, saying what to install, rather than fail every deployment later."""
    package.check_tools()
    if settings.sandbox:
        sandbox.check_tools()
    else:
        log.warning(
            "DOCKYARD_SANDBOX is off: builds and apps run UNSANDBOXED. Never do this with untrusted code."
        )


def wire(server: Server) -> Starlette:
    """The full server: API app whose lifespan runs workers, supervisor and router."""
    platform, supervisor, pool, router = (
        server.platform,
        server.supervisor,
        server.pool,
        server.router,
    )
    settings = platform.settings
    one_offs = platform.one_offs
    addons = platform.addons
    attach = None if one_offs is None else AttachServer(
        platform,
        one_offs,
        max_connections_per_client=settings.api_max_connections_per_client,
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.bus.start()
        await asyncio.to_thread(recover, platform, single_process=not settings.is_postgres)
        await router.start(settings.router_host, settings.router_port)
        if platform.isolation is not None:  # the firewall for apps, before any of them runs
            await asyncio.to_thread(platform.isolation.setup_host)
        if attach is not None:
            await attach.start(settings.host, settings.attach_port)
        # Databases before apps: an app may connect to its own as it boots.
        await asyncio.to_thread(restore_addons, platform)
        await asyncio.to_thread(
            supervisor.restore,
            lambda name: release_environment(db=platform.db, app_name=name),
        )
        supervision_stop = threading.Event()
        supervision = threading.Thread(
            target=supervisor.run, args=(supervision_stop,), name="dockyard-supervisor", daemon=True
        )
        supervision.start()
        pool.start()
        sweeper = asyncio.create_task(sweep_sources(platform))
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
            await flush_streams(platform)
            supervision_stop.set()
            if attach is not None:
                await attach.close()
            if one_offs is not None:
                await asyncio.to_thread(one_offs.shutdown)
            await asyncio.to_thread(supervisor.shutdown)
            if addons is not None:  # after the apps that use them
                await asyncio.to_thread(addons.shutdown)
            await router.close()
            await platform.bus.close()

    return create_app(platform, lifespan=lifespan)


def _freeze_startup_objects() -> None:
    """Keep what start-up created (modules, the ORM's registries, the app) out of the
    garbage collector's full passes: each pass walked all of it with the event loop
    stopped, a stall of every live log stream (docs/performance.md). Start-up objects live
    as long as the server anyway."""
    gc.collect()
    gc.freeze()


async def sweep_sources(platform: Platform) -> None:
    while True:
        await asyncio.sleep(SOURCE_SWEEP_SECONDS)
        try:
            await asyncio.to_thread(
                sources_service.sweep_expired,
                db=platform.db,
                blobs=platform.blobs,
                holder_url=platform.settings.own_url,
            )
        except Exception:
            log.exception("sweeping expired sources failed")


async def flush_streams(platform: Platform) -> None:
    """Give open streams a moment to send the final statuses just published, then close them."""
    if len(platform.streams):
        await asyncio.sleep(STREAM_FLUSH_SECONDS)
    await platform.streams.close_all()


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM first ends the running deployments and lets the streams send
    their final statuses; only then does uvicorn close connections (its own shutdown
    would close the WebSockets first, and the official client fails on a stream closed
    before a final status). A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, pool: WorkerPool) -> None:
        super().__init__(config)
        self.pool = pool
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
            self.pool.stop()
            time.sleep(STREAM_FLUSH_SECONDS)  # the final statuses reach the sockets
        finally:
            super().handle_exit(sig, None)


def serve(settings: Settings) -> None:
    check_host(settings)
    held = datadir.claim(settings.data_dir, "serve")
    server = build_server(settings)
    app = wire(server)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        **protocol_options(settings),
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    try:
        DrainingServer(config, server.pool).run()
    finally:
        os.close(held)
