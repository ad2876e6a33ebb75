"""The router's side of one TCP connection to a release.

It is pinned to one client connection and carries that client's requests one at a time.
It reads only each response head and then counts the body past with a framer, writing
every byte straight to the client's transport: no task, no future, no copy per request.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, cast

from dockyard.router.framing import BodyFramer, UntilClose, framer_for
from dockyard.router.http1 import BadMessage, parse_response
from dockyard.routetable import Backend

if TYPE_CHECKING:
    from dockyard.router.client import ClientConnection

_HEAD_END = b"\r\n\r\n"

IDLE, HEAD, BODY, TUNNEL, CLOSED = range(5)


class Upstream(asyncio.Protocol):
    def __init__(self, client: ClientConnection, backend: Backend, max_head: int) -> None:
        self.client = client
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.state = IDLE
        # False once this connection must not carry another request: the backend said
        # close, or a response was cut short and leftover bytes would be misread.
        self.reusable = True
        self.eof = False
        self._max_head = max_head
        self._method = b"GET"
        self._buf = b""
        self._received = False
        self._framer: BodyFramer | None = None
        self._close_after = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # Heads are small writes answered at once; Nagle would hold each one back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == BODY:
            self._body(data)
        elif state == HEAD:
            self._received = True
            self._buf = self._buf + data if self._buf else data
            self._head()
        elif state == TUNNEL:
            self.client.tunnel_data(data)
        else:
            # Bytes nobody asked for: whatever the backend is doing, this connection is
            # no longer in step with our requests.
            self.reusable = False
            self.close()

    def eof_received(self) -> bool:
        self.eof = True
        if self.state == TUNNEL:
            self.client.tunnel_eof()
            return True  # keep sending the client's remaining bytes (half-close)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        self.state = CLOSED
        self.reusable = False
        if state == BODY and isinstance(self._framer, UntilClose):
            self.client.response_done(self)  # the close is how this body ends
        elif state in (HEAD, BODY):
            self.client.upstream_failed(self, response_started=state == BODY or self._received)
        elif state == TUNNEL:
            self.client.tunnel_closed()
        else:
            self.client.upstream_gone(self)

    def pause_writing(self) -> None:
        self.client.pause_reading_for_upstream(True)

    def resume_writing(self) -> None:
        self.client.pause_reading_for_upstream(False)

    # -- used by the client connection ----------------------------------------------------

    def usable_for(self, backend: Backend) -> bool:
        """Idle, open, reusable and still the app's backend (the table may have switched)."""
        return (
            self.state == IDLE
            and self.reusable
            and (self.backend is backend or self.backend == backend)
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def send(self, head: bytes, method: bytes) -> None:
        assert self.transport is not None
        self.state = HEAD
        self._method = method
        self._buf = b""
        self._received = False
        self.transport.write(head)

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.state != CLOSED:
            self.transport.write(data)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    # -- responses ------------------------------------------------------------------------

    def _head(self) -> None:
        while True:
            buf = self._buf
            end = buf.find(_HEAD_END)
            if end == -1:
                if len(buf) > self._max_head:
                    self._broken()
                return
            raw = buf[: end + 4]
            self._buf = buf[end + 4 :]
            try:
                resp = parse_response(raw, method=self._method)
            except BadMessage:
                self._broken()
                return
            if resp.status >= 200 or resp.status == 101:
                break
            self.client.write(raw)  # 100 Continue, 103 Early Hints: pass on, read on
        rest = self._buf
        self._buf = b""
        if resp.status == 101:
            self.state = TUNNEL
            self.client.switch_protocols(self, resp.raw, rest)
            return
        head = self.client.response_head(resp)
        self._close_after = resp.close
        framer = framer_for(resp.framing, resp.content_length)
        if framer is None:
            self.client.write(head)
            self._done(rest)
            return
        self._framer = framer
        self.state = BODY
        self._forward(framer, rest, head)
        if self.state == BODY:
            self.client.body_streaming()

    def _body(self, data: bytes) -> None:
        framer = self._framer
        assert framer is not None
        self.client.touch()  # a live download keeps pushing the stall deadline back
        self._forward(framer, data, b"")

    def _forward(self, framer: BodyFramer, data: bytes, head: bytes) -> None:
        try:
            taken = framer.feed(data)
        except BadMessage:
            self._broken()
            return
        if taken == len(data):
            self.client.write(head + data if head else data)
        else:
            self.client.write(head + data[:taken])
        if framer.done:
            self._done(data[taken:])

    def _done(self, extra: bytes) -> None:
        self.state = IDLE
        self._framer = None
        if extra or self._close_after:
            self.reusable = False
        self.client.response_done(self)

    def _broken(self) -> None:
        # A response the router cannot frame; what follows on this socket is unusable.
        state = self.state
        self.state = CLOSED
        self.abort()
        self.client.upstream_failed(self, response_started=state == BODY, malformed=True)
