"""The router: listens, and gives each client connection its own ``ClientConnection``."""

from __future__ import annotations

import asyncio

from dockyard.router.client import ClientConnection, Site
from dockyard.router.limits import Limits
from dockyard.router.table import RouteTable


class Router:
    """The HTTP front door: ``http://APP.<apps_domain>:<port>/`` → the app's release."""

    def __init__(
        self, table: RouteTable, *, apps_domain: str, limits: Limits | None = None
    ) -> None:
        self._site = Site(table, apps_domain.lower().strip("."), limits or Limits())
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind and listen; returns once connections are accepted (``port`` 0 picks one)."""
        site = self._site
        site.closing = False
        site.watchdog.start()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: ClientConnection(site), host, port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop accepting; let in-flight requests finish for up to ``shutdown_grace``."""
        server = self._server
        if server is None:
            return
        self._server = None
        site = self._site
        site.closing = True
        server.close()
        for conn in list(site.connections):
            conn.shutdown()
        pending = [conn.closed for conn in site.connections]
        if pending:
            _, late = await asyncio.wait(pending, timeout=site.limits.shutdown_grace)
            if late:
                for conn in list(site.connections):
                    conn.abort()
                await asyncio.wait(late, timeout=1.0)
        for task in list(site.tasks):
            task.cancel()
        await server.wait_closed()
        await site.watchdog.stop()
