"""The two places dockyard reaches into uvicorn's internals, checked on the real API app.

``api/httpproto.py`` subclasses uvicorn's httptools protocol to save two copies of every
uploaded byte; ``api/wsframes.py`` writes pre-built frames to uvicorn's websockets-sansio
connection. Both silently fall back to the slow path if uvicorn stops using them (a new
protocol class, a renamed callback, a connection no longer reachable from ``send``), so
these tests fail instead: pyproject.toml pins uvicorn below its next release for that
reason, and raising the pin starts with running this file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.conftest import ThreadServer, make_settings
from tests.helpers import CLIENT_ORIGIN
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.sync.client import connect

from dockyard.api import wsframes
from dockyard.api.app import create_app
from dockyard.api.frontdoor import DockyardHttpProtocol
from dockyard.api.httpproto import FewerCopiesHttpToolsProtocol
from dockyard.bootstrap import Platform, build_platform
from dockyard.services.auth import create_user

GZIP_HEADERS = {"Content-Type": "application/x-gzip"}


class Served:
    def __init__(self, platform: Platform, server: uvicorn.Server, url: str, token: str) -> None:
        self.platform = platform
        self.server = server
        self.url = url
        self.token = token

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The API app under uvicorn with the options ``dockyard serve`` passes it."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'dockyard.db'}")
    platform = build_platform(settings)
    token = create_user(db=platform.db, username="alice", email="alice@example.com").secret
    with ThreadServer(create_app(platform), settings) as thread:
        yield Served(platform, thread.server, settings.public_url, token)
    platform.engine.dispose()


def test_uploads_go_through_the_fewer_copies_protocol(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces: list[bool] = []  # per body piece: kept as the parser's bytes, without a copy
    original = FewerCopiesHttpToolsProtocol.on_body

    def on_body(self: FewerCopiesHttpToolsProtocol, body: bytes) -> None:
        original(self, body)
        pieces.append(self.cycle.body is body)

    monkeypatch.setattr(FewerCopiesHttpToolsProtocol, "on_body", on_body)
    body = b"\x1f\x8b" + os.urandom(4 * 1024 * 1024)
    with served.client() as client:
        source = client.post("/v1/sources", json={}).json()["source"]
        put = client.put(source["upload_url"], content=body, headers=GZIP_HEADERS)
        # The keep-alive connection that carried the upload is still open: its protocol
        # instance is the server's own.
        connections = list(served.server.server_state.connections)

    assert put.status_code == 200, put.text
    assert connections, "the server holds no connection"
    # The front door's protocol (api/frontdoor.py, one class per configured limits) is
    # built on the fewer-copies one.
    assert all(isinstance(c, DockyardHttpProtocol) for c in connections)
    assert all(isinstance(c, FewerCopiesHttpToolsProtocol) for c in connections)
    assert len(pieces) > 1, "uvicorn never called the subclass's on_body"
    assert any(pieces), "every body piece was copied: the fast path was not taken"


def test_the_deployment_stream_writes_frames_to_uvicorns_connection(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[wsframes.FrameWriter] = []
    original_init = wsframes.FrameWriter.__init__

    def init(self: wsframes.FrameWriter, websocket: Any) -> None:
        original_init(self, websocket)
        writers.append(self)

    monkeypatch.setattr(wsframes.FrameWriter, "__init__", init)
    with served.client() as client:
        app = client.post("/v1/apps", json={"app": {"name": "fast-stream"}}).json()["app"]
        # A queued deployment (no worker runs here): the stream starts by replaying it.
        queued = client.post(
            "/v1/apps/fast-stream/deployments",
            json={"deployment": {"source_url": "https://code.example.com/app.tar.gz"}},
        ).json()["deployment"]
    stream_url = app["links"]["deployments_stream"]

    with connect(stream_url, origin=CLIENT_ORIGIN, open_timeout=10) as socket:
        socket.send(json.dumps({"type": "auth", "data": {"token": served.token}}) + "\n")
        first = json.loads(socket.recv(timeout=10))

    assert (first["type"], first["id"]) == ("new", queued["id"])
    assert len(writers) == 1
    connection = writers[0].connection
    assert connection is not None, "the stream fell back to ASGI sends"
    assert isinstance(connection, WebSocketsSansIOProtocol)
