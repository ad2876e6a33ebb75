"""Request bodies through the fewer-copies protocol arrive whole, however they are cut."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tests.conftest import ThreadServer, make_settings

from dockyard.api.httpproto import FewerCopiesHttpToolsProtocol
from dockyard.server import protocol_options


async def digest(request: Request) -> PlainTextResponse:
    # Read late, so that many pieces pile up before the first receive().
    await asyncio.sleep(0.2)
    hasher = hashlib.sha256()
    pieces = 0
    async for chunk in request.stream():
        hasher.update(chunk)
        pieces += 1
    return PlainTextResponse(f"{hasher.hexdigest()} {pieces}")


def test_bodies_in_small_and_large_pieces_arrive_whole(tmp_path: Path) -> None:
    app = Starlette(routes=[Route("/", digest, methods=["PUT"])])
    settings = make_settings(tmp_path)
    assert issubclass(protocol_options(settings)["http"], FewerCopiesHttpToolsProtocol)
    small = [os.urandom(700) for _ in range(300)]
    large = os.urandom(5 * 1024 * 1024 + 3)

    def trickle() -> Iterator[bytes]:
        yield from small

    with ThreadServer(app, settings), httpx.Client(timeout=30) as client:
        url = f"http://127.0.0.1:{settings.port}/"
        chunked = client.put(url, content=trickle()).text.split()
        whole = client.put(url, content=large).text.split()
    assert chunked[0] == hashlib.sha256(b"".join(small)).hexdigest()
    assert whole[0] == hashlib.sha256(large).hexdigest()
    assert int(whole[1]) > 1  # it really came in pieces
