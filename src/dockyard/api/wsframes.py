"""Sending many WebSocket text messages at once, encoded once for every client.

A busy build prints thousands of lines a second and every line goes to every client
watching the app. Through the ASGI layers each message costs a send() round trip, a
frame built by the WebSocket library and a socket write, per client: 50 clients at
1,000 lines/s were 50,000 of those a second on one event loop. Server-to-client frames
are never masked, so a frame's bytes are the same for every client: they are built once
per event (``text_frame``) and a client's whole backlog goes out in one socket write.

That needs the connection under uvicorn's WebSocket protocol, which ASGI does not expose:
``expose_connection`` (the outermost middleware) notes it in the scope when the server
is uvicorn's ``websockets-sansio`` implementation, and ``FrameWriter`` falls back to
plain ASGI sends anywhere else (the test client, another server). uvicorn's version is
capped in pyproject.toml for this; tests/integration/api/test_uvicorn_fast_paths.py fails
if dockyard's own stream stops taking the direct path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

SCOPE_KEY = "dockyard.websocket_connection"
WRITE_SLICE_BYTES = 256 * 1024
_OPCODE_TEXT_FIN = 0x81


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame (RFC 6455 section 5.2) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", _OPCODE_TEXT_FIN, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", _OPCODE_TEXT_FIN, 126, size)
    else:
        header = struct.pack("!BBQ", _OPCODE_TEXT_FIN, 127, size)
    return header + payload


class _Connection(Protocol):
    """What FrameWriter uses of uvicorn's WebSocketsSansIOProtocol."""

    transport: Any
    writable: Any
    close_sent: bool
    disconnected: bool


def _uvicorn_connection(send: Send) -> _Connection | None:
    connection = getattr(send, "__self__", None)
    # By name, so this module does not import uvicorn; subclasses (api/frontdoor.py) too.
    if not any(kind.__name__ == "WebSocketsSansIOProtocol" for kind in type(connection).__mro__):
        return None
    if not all(hasattr(connection, name) for name in _Connection.__annotations__):
        return None
    return connection


def expose_connection(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            connection = _uvicorn_connection(send)
            if connection is not None:
                scope[SCOPE_KEY] = connection
        await app(scope, receive, send)

    return middleware


class FrameWriter:
    """Writes text messages, given as (text, frame bytes) pairs, to one WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.connection: _Connection | None = websocket.scope.get(SCOPE_KEY)

    async def write(self, messages: Sequence[tuple[str, bytes]]) -> None:
        if not messages:
            return
        connection = self.connection
        if connection is None:
            for text, _frame in messages:
                await self.websocket.send_text(text)
            return
        # The same flow control as the protocol's own send(): wait while the client's
        # socket buffer is above its high-water mark, so a slow reader is not buffered
        # without bound (it overflows its bus queue instead and is disconnected). A long
        # backlog (a replay) goes in slices, waiting between them.
        for chunk in _slices([frame for _text, frame in messages], WRITE_SLICE_BYTES):
            await connection.writable.wait()
            if (
                connection.disconnected
                or connection.close_sent
                or connection.transport.is_closing()
            ):
                raise WebSocketDisconnect(1006)
            connection.transport.write(chunk)


def _slices(frames: Sequence[bytes], size: int) -> Iterator[bytes]:
    """Whole frames joined into pieces of about ``size`` bytes (never splitting a frame)."""
    pending: list[bytes] = []
    total = 0
    for frame in frames:
        pending.append(frame)
        total += len(frame)
        if total >= size:
            yield b"".join(pending)
            pending, total = [], 0
    if pending:
        yield b"".join(pending)
