"""Pre-encoded frames written straight to uvicorn's WebSocket connection."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from tests.conftest import ThreadServer, make_settings
from websockets.sync.client import connect

from dockyard.api import wsframes


async def _endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    writer = wsframes.FrameWriter(websocket)
    texts = [json.dumps({"n": n, "pad": "x" * size}) for n, size in enumerate((0, 200, 70_000))]
    report = json.dumps({"direct": writer.connection is not None})
    await writer.write([(t, wsframes.text_frame(t.encode())) for t in [report, *texts]])
    await websocket.receive_text()  # until the client goes


@pytest.mark.parametrize("middleware", [True, False], ids=["uvicorn-connection", "asgi-sends"])
def test_frames_of_every_length_arrive_whole_and_in_order(middleware: bool, tmp_path: Path) -> None:
    app = Starlette(
        routes=[WebSocketRoute("/ws", _endpoint)],
        middleware=[Middleware(wsframes.expose_connection)] if middleware else [],
    )
    settings = make_settings(tmp_path)
    with ThreadServer(app, settings), connect(f"ws://127.0.0.1:{settings.port}/ws") as socket:
        report = json.loads(socket.recv(timeout=10))
        # The direct path is what makes the stream fast: a uvicorn upgrade that hides the
        # connection must fail here, not silently fall back.
        assert report == {"direct": middleware}
        received = [json.loads(socket.recv(timeout=10)) for _ in range(3)]
        socket.send("bye")
    assert [(m["n"], len(m["pad"])) for m in received] == [(0, 0), (1, 200), (2, 70_000)]


def test_a_client_that_does_not_read_holds_back_the_writer(tmp_path: Path) -> None:
    """64 MiB for a client that reads nothing yet: the writer waits on the connection's
    flow control instead of piling everything into the process's memory."""
    messages = [f'{{"n": {n}, "pad": "{"x" * 65_000}"}}' for n in range(1024)]
    observed: dict[str, object] = {}
    blocked = threading.Event()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        writer = wsframes.FrameWriter(websocket)
        connection = writer.connection
        assert connection is not None
        frames = [(m, wsframes.text_frame(m.encode())) for m in messages]
        writing = asyncio.create_task(writer.write(frames))
        deadline = time.monotonic() + 10
        while connection.writable.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        observed["paused"] = not connection.writable.is_set()
        observed["buffered"] = connection.transport.get_write_buffer_size()
        observed["finished_early"] = writing.done()
        blocked.set()
        await writing
        await websocket.receive_text()

    app = Starlette(
        routes=[WebSocketRoute("/ws", endpoint)],
        middleware=[Middleware(wsframes.expose_connection)],
    )
    settings = make_settings(tmp_path)
    with (
        ThreadServer(app, settings),
        # Reads one frame, then nothing until asked: the socket backs up to the server.
        connect(f"ws://127.0.0.1:{settings.port}/ws", max_size=None, max_queue=1) as socket,
    ):
        assert blocked.wait(15)
        received = [json.loads(socket.recv(timeout=30))["n"] for _ in messages]
        socket.send("bye")
    assert observed["paused"] and not observed["finished_early"]
    assert isinstance(observed["buffered"], int) and observed["buffered"] < 4 * 2**20
    assert received == list(range(1024))
