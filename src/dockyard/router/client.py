"""One client connection: read each request head, route it by Host, relay the exchange.

Everything happens in protocol callbacks: a request head that arrives is parsed, routed
and written to the backend within one ``data_received``; the response is written to the
client from the backend's ``data_received``. Only opening a backend connection needs a
task. That keeps the router's cost per request far below an app's.

The backend is looked up again for every request, so a keep-alive client moves to a new
release on its next request, while a request already sent to the old release finishes
there. The backend connection stays pinned to the client connection while the route is
unchanged, and flow control is passed across (a slow reader pauses the other side), so
bodies of any size stream through in bounded memory.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Callable
from typing import cast

from dockyard.clientaddress import ClientConnections, address_key
from dockyard.router import pages
from dockyard.router.accesslog import AccessLog
from dockyard.router.framing import BodyFramer, ChunkedBody, LengthBody
from dockyard.router.hosts import app_from_host
from dockyard.router.http1 import (
    BadMessage,
    RequestHead,
    ResponseHead,
    forward_head,
    parse_request,
    with_connection_close,
)
from dockyard.router.limits import Limits
from dockyard.router.upstream import Upstream
from dockyard.router.watchdog import Watchdog
from dockyard.routetable import Backend, RouteTable

_HEAD_END = b"\r\n\r\n"

# (keep_alive, head_only) → a complete page response.
_PageBuilder = Callable[[bool, bool], bytes]

# Connection states.
_IDLE = 0  # between requests: reading a head
_EXCHANGE = 1  # a request is being answered (connecting, sent, or relaying)
_TUNNEL = 2  # after 101 Switching Protocols: bytes both ways
_CLOSED = 3

# What a passed deadline means; set as the exchange moves on.
_PHASE_IDLE, _PHASE_HEAD, _PHASE_WAITING, _PHASE_TRANSFER, _PHASE_LINGER = range(5)
_LINGER_SECONDS = 2.0

# Why reading from the client is paused (a bit each, resumed when none is left).
_PIPELINED = 1  # the next request is buffered while this one is answered
_CONNECTING = 2  # no backend to send body bytes to yet
_UPSTREAM_FULL = 4  # the backend is not reading the body as fast as the client sends


class Site:
    """What every connection of one router shares."""

    def __init__(
        self,
        table: RouteTable,
        apps_domain: str,
        limits: Limits,
        *,
        redirect_https: bool = True,
        forwarded_proto: bytes = b"http",
        forwarded_port: bytes | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.table = table
        self.access_log = access_log
        self.apps_domain = apps_domain
        self.limits = limits
        # Behind Caddy (router/caddy.py) the visitor's scheme and port are Caddy's, and
        # Caddy does the force-HTTPS redirects itself.
        self.redirect_https = redirect_https
        self.forwarded_proto = forwarded_proto
        self.forwarded_port = forwarded_port
        self.closing = False  # the router is shutting down: finish, then close
        self.connections: set[ClientConnection] = set()
        self.open_per_client = ClientConnections()  # limits.max_connections_per_client
        self.tasks: set[asyncio.Task[None]] = set()  # backend connects under way
        self.watchdog = Watchdog(tick=_tick(limits))


def _tick(limits: Limits) -> float:
    # The sweep's period bounds how late a deadline is enforced; a quarter of the
    # shortest timeout keeps that error small without waking up needlessly.
    shortest = min(limits.header_timeout, limits.keepalive_timeout, limits.io_timeout)
    return min(1.0, max(0.01, shortest / 4))


class ClientConnection(asyncio.Protocol):
    def __init__(self, site: Site) -> None:
        self.site = site
        self.limits = site.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = self.loop.create_future()
        self.deadline = math.inf
        self.upstream: Upstream | None = None
        self._state = _IDLE
        self._phase = _PHASE_IDLE
        self._window = 0.0  # how far each sign of progress pushes the deadline
        self._buf = b""
        self._client_ip = b"unknown"
        self._port = b"80"
        self._req: RequestHead | None = None
        self._app = ""
        self._started = 0.0  # when the current request's head was read (access log)
        self._status = 0  # the status answered to it
        self._head = b""  # the forwarded head, kept to resend on a stale backend connection
        self._body: BodyFramer | None = None  # request body still arriving from the client
        self._reused = False
        self._retried = False
        self._retried_elsewhere = False  # a refused connection was tried on another instance
        self._keep = False
        self._answered = False  # a response head went out for the current request
        self._eof = False
        self._paused = 0
        self._writing_paused = False
        self._looping = False
        self._counted = False  # in site.open_per_client
        self._client_key = ""  # the address as the cap counts it (an IPv6 one by its /64)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if peer:
            self._client_ip = str(peer[0]).encode()
            self._client_key = address_key(str(peer[0]))
        local = transport.get_extra_info("sockname")
        if local:
            self._port = str(local[1]).encode()
        if not self._take_client_slot():
            self._state = _CLOSED
            self.transport.write(pages.too_many_connections(self.limits.max_connections_per_client))
            self.transport.close()
            return
        self.site.connections.add(self)
        self.site.watchdog.add(self)
        # A new connection must start its first request within the header timeout.
        self._enter(_PHASE_HEAD, self.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._state == _CLOSED:
            return  # lingering after the last response: input is dropped
        if self._state == _TUNNEL:
            self.touch()
            if self.upstream is not None:
                self.upstream.write(data)
            return
        if self._body is not None:
            data = self._forward_body(data)
            if not data:
                return
        self._buf = self._buf + data if self._buf else data
        if self._state == _IDLE:
            self._next_requests()
        elif len(self._buf) > self.limits.max_head_bytes:
            self._pause(_PIPELINED)

    def eof_received(self) -> bool:
        self._eof = True
        if self._state == _TUNNEL:
            self._tunnel_eof_from_client()
            return True
        # A client that half-closes after its request still gets the answer.
        return self._state == _EXCHANGE and self._body is None

    def _take_client_slot(self) -> bool:
        cap = self.limits.max_connections_per_client
        if not cap:
            return True
        self._counted = self.site.open_per_client.take(self._client_key, cap)
        return self._counted

    def _give_back_client_slot(self) -> None:
        if self._counted:
            self._counted = False
            self.site.open_per_client.give_back(self._client_key)

    def connection_lost(self, exc: Exception | None) -> None:
        self._give_back_client_slot()
        state = self._state
        self._state = _CLOSED
        self.deadline = math.inf
        self._detach_upstream(abort=state != _IDLE)
        self.site.connections.discard(self)
        self.site.watchdog.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    # -- deadlines (see watchdog.py) ------------------------------------------------------

    def _enter(self, phase: int, window: float) -> None:
        self._phase = phase
        self._window = window
        self.deadline = self.loop.time() + window

    def touch(self) -> None:
        self.deadline = self.loop.time() + self._window

    def expire(self) -> None:
        """The deadline passed: say why when there is still something to say, then close."""
        if self._phase == _PHASE_HEAD and self._buf:
            self.write(pages.head_timeout())
        elif self._phase == _PHASE_WAITING and not self._answered:
            self.write(pages.too_slow(self._app))
        elif self._phase in (_PHASE_TRANSFER, _PHASE_LINGER):
            self.abort()
            return
        self.close()

    # -- shutdown -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Router closing: idle connections close now, busy ones after their response."""
        if self._state == _CLOSED or (self._state == _IDLE and not self._buf):
            # Idle or lingering: nothing is owed to this client, so no need to linger.
            self._detach_upstream(abort=False)
            self._state = _CLOSED
            if self.transport is not None:
                self.transport.close()

    def close(self) -> None:
        """Close once what was written is sent; an exchange still in flight is cut."""
        self._detach_upstream(abort=self._state != _IDLE)
        self._state = _CLOSED
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._eof or self.site.closing or not transport.can_write_eof():
            # The client already ended its side (nothing to drain), or the router is
            # shutting down and will not wait on stragglers.
            transport.close()
            return
        # A lingering close: closing a socket with unread input sends a reset, which can
        # destroy the page just written (a 408 or 431 the client is still sending into).
        # So end our side, read and drop what still comes, and close at the client's end
        # or after a short while.
        transport.write_eof()
        self._paused = 0
        transport.resume_reading()
        self._enter(_PHASE_LINGER, _LINGER_SECONDS)

    def abort(self) -> None:
        self._detach_upstream(abort=True)
        self._state = _CLOSED
        if self.transport is not None:
            self.transport.abort()

    def _detach_upstream(self, *, abort: bool) -> None:
        # Mid-exchange the backend's half-done work must stop; idle, it just closes.
        up = self.upstream
        self.upstream = None
        self._resume(_UPSTREAM_FULL)  # that backend's back-pressure ends with it
        if up is not None:
            up.abort() if abort else up.close()

    def write(self, data: bytes) -> None:
        if self._state != _CLOSED and self.transport is not None:
            self.transport.write(data)

    # -- reading requests -----------------------------------------------------------------

    def _next_requests(self) -> None:
        # A loop, not recursion: pipelined requests answered by the router itself (404s)
        # would otherwise nest one call per request.
        self._looping = True
        try:
            while self._state == _IDLE and self._buf:
                buf = self._buf
                end = buf.find(_HEAD_END)
                if end == -1 or end + 4 > self.limits.max_head_bytes:
                    self._incomplete_head(len(buf))
                    return
                self._buf = buf[end + 4 :]
                self._state = _EXCHANGE
                self._request(buf[: end + 4])
        finally:
            self._looping = False

    def _incomplete_head(self, size: int) -> None:
        if size > self.limits.max_head_bytes:
            self.write(pages.head_too_large(self.limits.max_head_bytes))
            self.close()
        elif self._phase != _PHASE_HEAD:
            # The first byte of a head ends the idle wait; from then on the whole head
            # has header_timeout to arrive, however slowly it trickles (slowloris).
            self._enter(_PHASE_HEAD, self.limits.header_timeout)

    def _request(self, raw: bytes) -> None:
        try:
            req = parse_request(raw)
        except BadMessage as exc:
            self.write(pages.bad_request(str(exc)))
            self.close()
            return
        self._req = req
        self._app = ""
        self._started = self.loop.time()
        self._status = 0
        self._answered = False
        self._retried = False
        self._retried_elsewhere = False
        self.deadline = math.inf
        table = self.site.table
        app = app_from_host(req.host, self.site.apps_domain) or table.app_for_host(_shown_host(req))
        if app is None:
            shown = _shown_host(req)
            self._page(req, lambda k, h: pages.not_found(app_host=shown, keep_alive=k, head_only=h))
            return
        if self.site.redirect_https and table.forces_https(app):
            shown, target = _shown_host(req), req.target.decode("latin-1")
            self._page(req, lambda k, h: pages.to_https(shown, target, keep_alive=k, head_only=h))
            return
        self._app = app
        self._route(req, app)

    def _route(self, req: RequestHead, app: str) -> None:
        backend = self.site.table.lookup(app)
        if backend is None:
            status = self.site.table.status(app)
            host = _shown_host(req)
            self._page(
                req,
                lambda k, h: pages.for_status(app, status, host=host, keep_alive=k, head_only=h),
            )
            return
        if not self._head:
            close = not req.keep_alive or self.site.closing
            site = self.site
            self._head = forward_head(
                req,
                client_ip=self._client_ip,
                port=site.forwarded_port or self._port,
                close=close,
                proto=site.forwarded_proto,
            )
        up = self.upstream
        if up is not None and up.backend != backend and up.backend in self.site.table.backends(app):
            backend = up.backend  # still in the rotation: keep the open connection
        if up is not None and up.usable_for(backend):
            self._send(up, reused=True)
            return
        if up is not None:
            self._detach_upstream(abort=False)
        self._connect(backend)

    def _page(self, req: RequestHead, build: _PageBuilder) -> None:
        # An unread request body would be taken for the next request, so a request with
        # one (or whose body is still arriving) ends the connection after the page.
        keep = req.keep_alive and not req.has_body and not self.site.closing and not self._eof
        self._answered = True
        page = build(keep, req.method == b"HEAD")
        self._status = int(page[9:12])  # "HTTP/1.1 404 ..."
        self.write(page)
        self._finish(keep)

    # -- talking to the backend -----------------------------------------------------------

    def _connect(self, backend: Backend) -> None:
        self._pause(_CONNECTING)
        self._enter(_PHASE_WAITING, self.limits.connect_timeout + self.limits.io_timeout)
        task = self.loop.create_task(self._open(backend))
        self.site.tasks.add(task)
        task.add_done_callback(self.site.tasks.discard)

    async def _open(self, backend: Backend) -> None:
        limit = self.limits.max_head_bytes
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                _, up = await self.loop.create_connection(
                    lambda: Upstream(self, backend, limit), backend.host, backend.port
                )
        except (OSError, TimeoutError):
            if self._state != _EXCHANGE:
                return
            self._resume(_CONNECTING)
            # An instance that just died is still in the rotation for a moment: a request
            # whose body has not started is tried once on another instance.
            other = None if self._retried_elsewhere else self._other_backend(backend)
            if other is not None:
                self._retried_elsewhere = True
                self._connect(other)
                return
            self._not_answering()
            return
        if self._state != _EXCHANGE:
            up.close()  # the client left while we were connecting
            return
        self.upstream = up
        if self._writing_paused and up.transport is not None:
            up.transport.pause_reading()
        self._resume(_CONNECTING)
        self._send(up, reused=False)

    def _send(self, up: Upstream, *, reused: bool) -> None:
        req = self._req
        assert req is not None
        self._reused = reused
        self._enter(_PHASE_WAITING, self.limits.io_timeout)
        up.send(self._head, req.method)
        if req.has_body:  # never on a retry: only bodiless requests are retried
            self._body = ChunkedBody() if req.chunked else LengthBody(req.content_length)
            pending = self._buf
            self._buf = b""
            if pending:
                self._buf = self._forward_body(pending)

    def _forward_body(self, data: bytes) -> bytes:
        """Send the part of ``data`` that belongs to the request body; return the rest."""
        body = self._body
        assert body is not None
        try:
            taken = body.feed(data)
        except BadMessage:
            self.abort()  # a malformed upload: the app must not act on half a request
            return b""
        up = self.upstream
        if up is not None and taken:
            # After an early response the backend may be gone; the rest is then dropped.
            up.write(data if taken == len(data) else data[:taken])
        self.touch()
        if not body.done:
            return b""
        self._body = None
        return data[taken:]

    def pause_reading_for_upstream(self, paused: bool) -> None:
        if paused:
            self._pause(_UPSTREAM_FULL)
        else:
            self._resume(_UPSTREAM_FULL)

    # -- responses (called by Upstream) ---------------------------------------------------

    def response_head(self, resp: ResponseHead) -> bytes:
        """Decide whether this client connection goes on; return the head to send."""
        req = self._req
        assert req is not None
        self._answered = True
        self._status = resp.status
        self._keep = (
            req.keep_alive
            and not resp.close
            and not self.site.closing
            and not self._eof
            and self._body is None
        )
        if self._keep or resp.close:
            return resp.raw
        return with_connection_close(resp.raw)

    def body_streaming(self) -> None:
        """The response body goes on past the first read: from now on, stalls count."""
        self._enter(_PHASE_TRANSFER, self.limits.io_timeout)

    def response_done(self, up: Upstream) -> None:
        if up is not self.upstream or self._state != _EXCHANGE:
            return
        if not up.reusable or self._body is not None:
            # A body still arriving was never fully sent; that backend connection would
            # read the rest of it as a request.
            self.upstream = None
            up.close()
        self._finish(self._keep and self._body is None)

    def upstream_failed(
        self, up: Upstream, *, response_started: bool, malformed: bool = False
    ) -> None:
        if up is not self.upstream:
            return
        self.upstream = None
        if self._state != _EXCHANGE:
            return
        if response_started or self._answered:
            self.abort()  # part of a response went out: only closing tells the client
            return
        req = self._req
        assert req is not None
        if self._reused and not self._retried and not req.has_body and not malformed:
            # The backend closed an idle keep-alive connection just as the request went
            # out; it never saw the request, so sending it once more is safe.
            self._retried = True
            self._route(req, self._app)
            return
        self._not_answering()

    def upstream_gone(self, up: Upstream) -> None:
        if up is self.upstream:
            self.upstream = None

    def _other_backend(self, failed: Backend) -> Backend | None:
        other = self.site.table.lookup(self._app, avoid=failed)
        return None if other is None or other == failed else other

    def _not_answering(self) -> None:
        req = self._req
        assert req is not None
        app = self._app
        self._page(req, lambda k, h: pages.not_answering(app, keep_alive=k, head_only=h))

    def _finish(self, keep: bool) -> None:
        """The exchange is over: wait for the next request, or close."""
        self._log_request()
        self._req = None
        self._head = b""
        self._state = _IDLE  # nothing in flight, so closing leaves the backend in peace
        if not keep:
            self.close()
            return
        self._enter(_PHASE_IDLE, self.limits.keepalive_timeout)
        self._resume(_PIPELINED)
        if self._buf and not self._looping:
            self._next_requests()

    def _log_request(self) -> None:
        access_log, req = self.site.access_log, self._req
        if access_log is not None and req is not None and self._app and self._status:
            access_log.record(
                self._app,
                req.method,
                req.target,
                req.host,
                self._client_ip,
                self._status,
                self.loop.time() - self._started,
            )

    # -- WebSocket and other protocol switches -------------------------------------------

    def switch_protocols(self, up: Upstream, head: bytes, rest: bytes) -> None:
        req = self._req
        if up is not self.upstream or req is None or req.upgrade is None:
            up.abort()  # a 101 nobody asked for: the backend is confused
            return
        self._state = _TUNNEL
        self._answered = True
        self._status = 101
        self._log_request()
        self._enter(_PHASE_TRANSFER, self.limits.tunnel_idle_timeout)
        self.write(head + rest)
        pending = self._buf
        self._buf = b""
        if pending:
            up.write(pending)
        self._resume(_PIPELINED)

    def tunnel_data(self, data: bytes) -> None:
        self.touch()
        self.write(data)

    def tunnel_eof(self) -> None:
        # Pass the backend's end on as a half-close, so the client can finish its side
        # (a WebSocket close handshake) before its own end comes back.
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        if self._eof:
            self._end_tunnel()

    def _tunnel_eof_from_client(self) -> None:
        up = self.upstream
        if up is None or up.transport is None:
            self._end_tunnel()
            return
        if up.transport.can_write_eof():
            up.transport.write_eof()
        if up.eof:
            self._end_tunnel()

    def tunnel_closed(self) -> None:
        self.upstream = None
        self._end_tunnel()

    def _end_tunnel(self) -> None:
        # Both sides said they are done (or one is gone): close both, gently.
        self._detach_upstream(abort=False)
        self._state = _CLOSED
        if self.transport is not None:
            self.transport.close()

    # -- flow control ---------------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self.transport is not None:
                self.transport.resume_reading()


def _shown_host(req: RequestHead) -> str:
    # The name as the visitor typed it, without the port, cut to a DNS name's length.
    return req.host.partition(":")[0][:253]
