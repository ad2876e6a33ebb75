"""Real sockets on 127.0.0.1: a router, and backends that are real uvicorn+starlette apps."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import uvicorn
from router_helpers import PIECE
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from dockyard.router import Backend, Limits, Router, RouteTable


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class App:
    """A started backend: its address and knobs the tests turn."""

    name: str
    backend: Backend
    server: uvicorn.Server
    task: asyncio.Task[None] | None = None
    slow_entered: asyncio.Event = field(default_factory=asyncio.Event)
    slow_release: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self) -> None:
        """uvicorn's graceful shutdown: in-flight requests finish, idle connections close."""
        self.server.should_exit = True
        if self.task is not None:
            await self.task


def make_app(state: App) -> Starlette:
    async def index(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {"name": state.name, "headers": dict(request.headers), "body_bytes": len(body)}
        )

    async def slow(request: Request) -> Response:
        state.slow_entered.set()
        await state.slow_release.wait()
        return PlainTextResponse(f"slow from {state.name}")

    async def upload(request: Request) -> Response:
        digest = hashlib.sha256()
        count = 0
        async for piece in request.stream():
            digest.update(piece)
            count += len(piece)
            await asyncio.sleep(0)  # a reader no faster than the sender: pressure builds
        return JSONResponse({"bytes": count, "sha256": digest.hexdigest()})

    async def download(request: Request) -> Response:
        size = int(request.query_params["size"])

        async def pieces() -> AsyncIterator[bytes]:
            sent = 0
            while sent < size:
                piece = PIECE[: size - sent]
                sent += len(piece)
                yield piece

        headers = {"content-length": str(size)} if "fixed" in request.query_params else {}
        return StreamingResponse(pieces(), media_type="application/octet-stream", headers=headers)

    async def chunks(request: Request) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            for word in (b"one", b"two", b"three"):
                yield word

        return StreamingResponse(pieces(), media_type="text/plain")

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text("echo: " + await ws.receive_text())
        except WebSocketDisconnect:
            pass

    return Starlette(
        routes=[
            Route("/", index, methods=["GET", "POST", "HEAD"]),
            Route("/slow", slow),
            Route("/upload", upload, methods=["POST"]),
            Route("/download", download),
            Route("/chunks", chunks),
            WebSocketRoute("/ws", echo),
        ]
    )


StartApp = Callable[..., Awaitable[App]]


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    started: list[App] = []

    async def start(name: str = "a", *, rcvbuf: int | None = None) -> App:
        # The socket is bound and listening before uvicorn starts, so connections made
        # right away wait in the backlog instead of being refused.
        # IPPROTO_TCP spelled out: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it uvicorn's two writes per response meet Nagle.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # accepted ones inherit
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        config = uvicorn.Config(
            "", lifespan="off", log_level="warning", ws="websockets-sansio", access_log=False
        )
        server = uvicorn.Server(config)
        app = App(name, Backend("127.0.0.1", sock.getsockname()[1]), server)
        config.app = make_app(app)
        app.task = asyncio.create_task(server.serve(sockets=[sock]))
        started.append(app)
        return app

    yield start
    for app in started:
        await app.stop()


StartRouter = Callable[..., Awaitable[Router]]


@pytest.fixture
def table() -> RouteTable:
    return RouteTable()


@pytest.fixture
async def start_router(table: RouteTable) -> AsyncIterator[StartRouter]:
    routers: list[Router] = []

    async def start(limits: Limits | None = None) -> Router:
        router = Router(table, apps_domain="localhost", limits=limits)
        await router.start("127.0.0.1", 0)
        routers.append(router)
        return router

    yield start
    for router in routers:
        await router.close()


@pytest.fixture
async def router(start_router: StartRouter) -> Router:
    return await start_router()
