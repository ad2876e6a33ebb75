"""Pre-encoded frames written straight to uvicorn's WebSocket connection."""

from __future__ import annotations

import json
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
