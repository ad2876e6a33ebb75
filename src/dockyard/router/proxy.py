"""The router: listens, and gives each client connection its own ``ClientConnection``."""

from __future__ import annotations

import asyncio

from dockyard.router.accesslog import AccessLog
from dockyard.router.client import ClientConnection, Site
from dockyard.router.limits import Limits
from dockyard.routetable import RouteTable


class Router:
    """The HTTP front door: ``http://APP.<apps_domain>:<port>/`` → the app's release."""

    def __init__(
        self,
        table: RouteTable,
        *,
        apps_domain: str,
        limits: Limits | None = None,
        behind_https_port: int | None = None,
        behind_http_port: int | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        """``behind_https_port`` / ``behind_http_port``: this router is Caddy's upstream for
        the visitors of that HTTPS or HTTP port (the forwarding headers say so, and the
        force-HTTPS redirects are Caddy's). ``access_log``: one line per request into the
        app's logs."""
        behind = behind_https_port or behind_http_port
        self._site = Site(
            table,
            apps_domain.lower().strip("."),
            limits or Limits(),
            redirect_https=behind is None,
            forwarded_proto=b"https" if behind_https_port else b"http",
            forwarded_port=str(behind).encode() if behind else None,
            access_log=access_log,
        )
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind and listen; returns once connections are accepted (``port`` 0 picks one)."""
        site = self._site
        site.closing = False
        site.watchdog.start()
        if site.access_log is not None:
            site.access_log.start()
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
        if site.access_log is not None:
            await site.access_log.close()
