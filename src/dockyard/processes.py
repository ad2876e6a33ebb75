"""``dockyard api``, ``dockyard worker`` and ``dockyard router``: the parts of ``serve`` as
separate processes, any number of each, sharing PostgreSQL and its LISTEN/NOTIFY bus.

    api     the HTTP API and dashboard; sources are uploaded to its disk and handed to
            workers through their capability URLs; deployment logs and streams come from
            the database and the bus, so any api process serves any deployment
    worker  claims queued deployments (``FOR UPDATE SKIP LOCKED``, a lease renewed while
            it runs, expired leases of vanished workers ended as ``aborted``), builds
            them, and runs the apps it switched to a new release: its supervisor
            restarts their instances and publishes their routes in the database; it
            runs their one-off commands too, and serves their terminals on its own
            attach server (``DOCKYARD_ATTACH_PORT``, ``DOCKYARD_ATTACH_PUBLIC_URL``)
    router  the front door; its route table is loaded from the database and kept
            current by notifications (services/routing.py)

Each waits for SIGTERM (or SIGINT), then stops in the order ``serve`` does: no new
claims, running deployments ended as aborted with the reason in their log, then the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import uvicorn
from starlette.applications import Starlette

from dockyard import datadir
from dockyard.api.app import create_app
from dockyard.api.attach import AttachServer
from dockyard.bootstrap import (
    RouterProcess,
    WorkerProcess,
    build_api,
    build_router_process,
    build_worker,
)
from dockyard.errors import DockyardError
from dockyard.platform import Platform
from dockyard.server import check_host, flush_streams, protocol_options, recover, sweep_sources
from dockyard.services.lifecycle import release_environment
from dockyard.services.oneoffs import LocalOneOffs
from dockyard.settings import Settings
from dockyard.worker.pool import WorkerPool

log = logging.getLogger("dockyard")


def run_api(settings: Settings) -> None:
    platform = build_api(settings)
    app = _api_app(platform)
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
    uvicorn.Server(config).run()


def _api_app(platform: Platform) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.bus.start()
        platform.blobs.sweep_partials()
        sweeper = asyncio.create_task(sweep_sources(platform))
        log.info("dockyard API on %s", platform.settings.public_url)
        try:
            yield
        finally:
            sweeper.cancel()
            await flush_streams(platform)
            await platform.bus.close()

    return create_app(platform, lifespan=lifespan)


def run_worker(settings: Settings) -> None:
    check_host(settings)
    held = datadir.claim(settings.data_dir, "worker")
    try:
        asyncio.run(_worker(build_worker(settings)))
    finally:
        os.close(held)


async def _worker(process: WorkerProcess) -> None:
    platform, supervisor, pool = process.platform, process.supervisor, process.pool
    await asyncio.to_thread(process.presence.check_name)
    await platform.bus.start()
    settings = platform.settings
    attach = (
        None
        if platform.one_offs is None
        else AttachServer(
            platform,
            platform.one_offs,
            max_connections_per_client=settings.api_max_connections_per_client,
        )
    )
    attach_url = "nowhere (no one-offs here)"
    if attach is not None:  # first: a port taken stops the worker before it runs apps
        attach_url = await _listen_for_one_offs(attach, platform)
    # Only expired leases: the other workers' deployments are running. The data dir is
    # this worker's alone (README, "Running on several machines").
    await asyncio.to_thread(recover, platform, single_process=False, own_builds=True)
    if platform.isolation is not None:
        await asyncio.to_thread(platform.isolation.setup_host)
    await asyncio.to_thread(
        supervisor.restore, lambda name: release_environment(db=platform.db, app_name=name)
    )
    supervision_stop = threading.Event()
    supervision = threading.Thread(
        target=supervisor.run, args=(supervision_stop,), name="dockyard-supervisor", daemon=True
    )
    supervision.start()
    # After ``restore``: this worker takes its own apps back before it adopts anyone's.
    presence = threading.Thread(
        target=process.presence.run,
        args=(supervision_stop,),
        name="dockyard-presence",
        daemon=True,
    )
    presence.start()
    pool.start()
    log.info(
        "dockyard worker %s: %d build slots, one-offs attached on %s",
        settings.worker_name,
        pool.workers,
        attach_url,
    )
    try:
        await _until_signalled()
    finally:
        await asyncio.to_thread(_stop_worker, pool)
        supervision_stop.set()
        if attach is not None:
            await attach.close()
        if platform.one_offs is not None:
            await asyncio.to_thread(platform.one_offs.shutdown)
        # The apps keep running where the runtime lets them (containers); a worker
        # started again under the same name takes them back (``restore``).
        await asyncio.to_thread(supervisor.shutdown)
        await asyncio.to_thread(presence.join, 10)  # its last beat before this leaves
        await asyncio.to_thread(process.presence.leave)
        await platform.bus.close()


async def _listen_for_one_offs(attach: AttachServer, platform: Platform) -> str:
    """The worker's attach server on ``DOCKYARD_ATTACH_PORT``. When the operator left the
    port and address to their defaults and another worker of this machine has the port,
    on a free one (the ``attach_url`` the api hands out names it); a port the operator
    chose that is taken stops the worker, saying so. Returns where one-offs attach."""
    settings = platform.settings
    try:
        await attach.start(settings.host, settings.attach_port)
        return settings.attach_public_url
    except OSError as exc:
        if settings.attach_address_chosen:
            raise DockyardError(
                f"The attach server of one-off commands cannot listen on {settings.host}:"
                f"{settings.attach_port} ({exc.strerror}): give each worker on this machine"
                " a DOCKYARD_ATTACH_PORT of its own."
            ) from None
    await attach.start(settings.host, 0)
    log.info(
        "the attach port %d is taken: one-offs attach on %d", settings.attach_port, attach.port
    )
    # The default URL with the port taken instead (its host: how clients reach the API).
    default = urlsplit(settings.attach_public_url)
    url = urlunsplit(default._replace(netloc=f"{default.netloc.rsplit(':', 1)[0]}:{attach.port}"))
    if isinstance(platform.one_off_runner, LocalOneOffs):
        platform.one_off_runner.attach_public_url = url
    return url


def _stop_worker(pool: WorkerPool) -> None:
    log.info("stopping: ending running deployments")
    pool.stop()


def run_router(settings: Settings) -> None:
    asyncio.run(_router(build_router_process(settings)))


async def _router(process: RouterProcess) -> None:
    platform, router, settings = process.platform, process.router, process.platform.settings
    await platform.bus.start()
    await router.start(settings.router_host, settings.router_port)
    log.info("dockyard router: apps on http://*.%s:%s/", settings.apps_domain, router.port)
    try:
        await _until_signalled()
    finally:
        await router.close()
        await platform.bus.close()


async def _until_signalled() -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()

