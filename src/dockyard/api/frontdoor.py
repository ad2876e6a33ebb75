"""The API's front door: uvicorn's HTTP protocol with the limits it lacks.

uvicorn's httptools protocol buffers a request head of any size (httptools grows each
header by concatenation, so a 25 MB header also costs quadratic copying), has no deadline
for a head that trickles in a byte at a time (slowloris), and lets one client address
hold as many connections as the process has descriptors. Before these limits, 100
connections sending 25 MB headers took the server from 184 MB to 2.5 GB, and 20,000
connections each sending a header line every 10 s made every new request fail. Here:

- a request line and headers over ``max_head_bytes``, or more than ``max_headers`` header
  lines, get 431; a request target over ``MAX_URL_BYTES`` gets 414;
- a head must arrive whole within ``header_timeout`` of its first byte (of the
  connection's opening, for a first request): otherwise 408 and the connection closes;
- one client address may hold ``max_connections_per_client`` connections (WebSocket
  streams included); the next one gets 429 and is closed;
- a request that is not HTTP/1.1, or whose path holds a NUL or control character (no
  name or id in dockyard has one, and PostgreSQL cannot even compare one), gets 400.

Every refusal is a JSON body saying what to change, like the API's own errors. The caps
count bytes as they arrive, before the parser keeps them, so what one connection can make
the server hold is the cap plus one socket read (at most 256 KiB).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from dockyard.api.httpproto import FewerCopiesHttpToolsProtocol
from dockyard.clientaddress import ClientConnections, address_key

# No URL dockyard serves is near this long (capability URLs are ~120 bytes): a longer one
# is a mistake or a probe.
MAX_URL_BYTES = 8 * 1024
# After a refusal sent while the client may still be sending, the connection reads and
# drops its input this long before closing: closing a socket with unread input sends a
# reset, which can destroy the refusal before the client reads it.
LINGER_SECONDS = 1.0
# A path holding a percent-encoded control character (NUL included): never a name or id.
_CONTROL_IN_PATH = re.compile(rb"%(?:[01][0-9a-fA-F]|7[fF])")


@dataclass(frozen=True)
class FrontDoorLimits:
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    max_connections_per_client: int = 256


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the refusal is already noted."""


@dataclass(frozen=True)
class _Refusal:
    status: int
    code: str
    message: str


class DockyardHttpProtocol(FewerCopiesHttpToolsProtocol):
    """See the module's docstring. ``protocols`` makes a subclass per server, holding the
    server's limits and its count of connections per address."""

    limits: ClassVar[FrontDoorLimits] = FrontDoorLimits()
    connections_per_client: ClassVar[ClientConnections] = ClientConnections()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True  # waiting for (the rest of) a request head
        self._head_bytes = 0
        self._header_count = 0
        self._message_began = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._address: str | None = None  # set while this connection holds a slot
        self._refusal: _Refusal | None = None
        self._refused = False

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # An IPv6 client by its /64, which one machine usually holds whole.
        address = address_key(self.client[0]) if self.client else ""
        limit = self.limits.max_connections_per_client
        if not self.connections_per_client.take(address, limit):
            self._refuse(
                _Refusal(
                    429,
                    "too_many_connections",
                    f"Your address already has {limit} connections open to this API, the "
                    "most allowed: close some (or reuse them) and retry.",
                )
            )
            return
        self._address = address
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._give_back_slot()
        super().connection_lost(exc)

    def _give_back_slot(self) -> None:
        if self._address is not None:
            self.connections_per_client.give_back(self._address)
            self._address = None

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The connection lives on under the WebSocket protocol: its slot goes with it.
        address, self._address = self._address, None
        if address is None:
            return
        protocol = self.transport.get_protocol()
        if isinstance(protocol, SlotKeepingWebSocketProtocol):
            protocol.on_lost = lambda: self.connections_per_client.give_back(address)
        else:
            self.connections_per_client.give_back(address)

    # -- reading ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: dropped
        self._unset_keepalive_if_required()
        counting = self._head_pending
        self._message_began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            self._refuse(self._refusal or _invalid_request(exc))
            return
        # A head still incomplete after this read counts the read against the cap; the
        # read in which a message began is not counted (it may end the previous
        # message's body), so the cap is exact to within one read.
        if counting and self._head_pending and not self._message_began:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse(_head_too_large(self.limits.max_head_bytes))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        self._message_began = True
        self._head_bytes = 0
        self._header_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_URL_BYTES:
            self._stop(
                _Refusal(
                    414,
                    "url_too_long",
                    f"The request target is longer than the {MAX_URL_BYTES // 1024} KiB "
                    "allowed: no URL of this API is that long; check how it was built.",
                )
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._stop(
                _Refusal(
                    431,
                    "too_many_headers",
                    f"The request has more than {self.limits.max_headers} header lines, "
                    "the most allowed: send fewer.",
                )
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._cancel_head_timer()
        path = self.url.split(b"?", 1)[0]
        if _CONTROL_IN_PATH.search(path):
            self._stop(
                _Refusal(
                    400,
                    "invalid_path",
                    "The request path holds a NUL or another control character, which no "
                    "name or id of this API has.",
                )
            )
        super().on_headers_complete()

    # -- the head's deadline ------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._head_pending or self.transport.is_closing():
            return
        seconds = self.limits.header_timeout
        self._refuse(
            _Refusal(
                408,
                "request_timeout",
                f"The request headers did not arrive within {seconds:g} s; send them at once.",
            )
        )

    # -- refusing -----------------------------------------------------------------------

    def _stop(self, refusal: _Refusal) -> None:
        """From a parser callback: note the refusal and stop parsing (data_received sends it)."""
        self._refusal = refusal
        raise _Refused(refusal.message)

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer with ``refusal`` and close, lingering so the client can read it."""
        self._refused = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        transport = self.transport
        if transport.is_closing():
            return
        body = json.dumps({"error": refusal.message, "code": refusal.code}).encode()
        head = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"cache-control: no-store\r\n",
            b"connection: close\r\n\r\n",
        ]
        transport.write(b"".join(head) + body)
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()


def _invalid_request(exc: Exception) -> _Refusal:
    reason = str(exc).strip().rstrip(".") or "malformed request"
    return _Refusal(
        400, "invalid_http", f"The request is not valid HTTP/1.1 ({reason}); check the client."
    )


def _head_too_large(limit: int) -> _Refusal:
    return _Refusal(
        431,
        "headers_too_large",
        f"The request line and headers are larger than the {limit // 1024} KiB allowed: "
        "send smaller headers.",
    )


class SlotKeepingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, giving the connection's per-address slot back when
    the connection ends (``DockyardHttpProtocol.handle_websocket_upgrade``)."""

    on_lost: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            on_lost, self.on_lost = self.on_lost, None
            if on_lost is not None:
                on_lost()


def protocols(limits: FrontDoorLimits) -> dict[str, Any]:
    """uvicorn's ``http`` and ``ws`` options for one server with ``limits``: its own
    protocol class, so that its count of connections per address is its own."""
    http = type(
        "DockyardHttpProtocol",
        (DockyardHttpProtocol,),
        {"limits": limits, "connections_per_client": ClientConnections()},
    )
    return {"http": http, "ws": SlotKeepingWebSocketProtocol}
