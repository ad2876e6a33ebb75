"""App logs as the official client reads them (API-OPS.md §4).

``GET /v1/apps/{app}/logs`` answers ``{"logs_url", "app"}``; the logs URL
(``/v1/logs/{app_id}?token=…&timestamp=…``) is a capability read with no Authorization
header: ``GET`` with ``n`` and ``filter`` gives the last lines as plain text (204 when
there are none), and a WebSocket at the same URL with ``stream=true`` sends new lines as
``{"event": "log", "log": "...", "timestamp": "<RFC 3339>"}`` frames, with
``{"event": "ping"}`` now and then, until the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from dockyard.api import schemas
from dockyard.api.auth import authenticate
from dockyard.api.errors import SECURITY_HEADERS
from dockyard.api.routes.common import call, int_param, json_response, platform_of
from dockyard.errors import Conflict, DockyardError
from dockyard.platform import Platform
from dockyard.runtime.applogs import name_filter
from dockyard.runtime.base import AppProcesses
from dockyard.services import lifecycle, logaccess

CLOSE_REFUSED = 4001
# Lines read in one go become one frame: a burst of output is not a burst of frames.
MAX_LINES_PER_FRAME = 500
# How often a follow checks that its app still exists: the client ends (rc 1) only when
# the stream closes, which API-OPS §4 keeps for an app that is gone.
APP_CHECK_SECONDS = 2.0


async def logs_url(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    app, url = await call(
        logaccess.logs_url,
        db=platform.db,
        tokens=platform.log_tokens,
        owner=user,
        name=request.path_params["app"],
        base_url=platform.settings.public_url,
    )
    status = lifecycle.app_status(platform.processes, app.name)
    return json_response(
        {"logs_url": url, "app": schemas.app(app, platform.settings, status=status)}
    )


def _processes(platform: Platform) -> AppProcesses:
    if platform.processes is None:
        raise Conflict("This server runs no apps (no runtime is configured).")
    return platform.processes


async def history(request: Request) -> Response:
    platform = platform_of(request)
    name = await call(
        logaccess.app_for_token,
        db=platform.db,
        tokens=platform.log_tokens,
        app_id=request.path_params["app_id"],
        token=request.query_params.get("token", ""),
    )
    lines = int_param(request, "n", 20, minimum=0, maximum=10_000, clamp=True)
    only = name_filter(request.query_params.get("filter", ""))
    processes = _processes(platform)
    recent = await call(processes.app_logs, app=name, lines=lines, only=only)
    if not recent:
        return Response(status_code=204, headers=SECURITY_HEADERS)
    return PlainTextResponse("".join(line + "\n" for line in recent), headers=SECURITY_HEADERS)


async def follow(websocket: WebSocket) -> None:
    platform: Platform = websocket.app.state.platform
    try:
        name = await call(
            logaccess.app_for_token,
            db=platform.db,
            tokens=platform.log_tokens,
            app_id=websocket.path_params["app_id"],
            token=websocket.query_params.get("token", ""),
        )
        processes = _processes(platform)
    except DockyardError as exc:
        await websocket.close(CLOSE_REFUSED, exc.message[:120])
        return
    only = name_filter(websocket.query_params.get("filter", ""))
    stop = threading.Event()
    # Where each file ends is noted before the handshake completes: a line written once
    # the client is connected is never missed.
    lines = await call(processes.follow_logs, app=name, stop=stop, lines=0, only=only)
    await websocket.accept()
    sender = asyncio.create_task(
        _send_lines(websocket, lines, stop, name, platform.settings.stream_ping_interval)
    )
    receiver = asyncio.create_task(_until_closed(websocket))
    gone = asyncio.create_task(_until_app_gone(platform, websocket.path_params["app_id"]))
    try:
        done, _ = await asyncio.wait(
            {sender, receiver, gone}, return_when=asyncio.FIRST_COMPLETED
        )
        if gone in done:
            with contextlib.suppress(Exception):  # the client may be gone as well
                await websocket.close(1000, "the app was deleted")
    finally:
        for task in (sender, receiver, gone):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                await task


async def _send_lines(
    websocket: WebSocket,
    lines: Iterator[str],
    stop: threading.Event,
    app: str,
    ping_interval: float,
) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)
    loop = asyncio.get_running_loop()

    def put(line: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a reader this far behind loses lines
            queue.put_nowait(line)

    def pump() -> None:
        for line in lines:
            loop.call_soon_threadsafe(put, line)

    threading.Thread(target=pump, daemon=True, name=f"logs-follow-{app}").start()
    try:
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), timeout=ping_interval)
            except TimeoutError:
                await websocket.send_text('{"event":"ping"}')
                continue
            batch = [first]
            while not queue.empty() and len(batch) < MAX_LINES_PER_FRAME:
                batch.append(queue.get_nowait())
            frame = {
                "event": "log",
                "log": "\n".join(batch),
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            await websocket.send_text(json.dumps(frame))
    finally:
        stop.set()


async def _until_app_gone(platform: Platform, app_id: str) -> None:
    while True:
        await asyncio.sleep(APP_CHECK_SECONDS)
        if not await call(logaccess.app_exists, db=platform.db, app_id=app_id):
            return


async def _until_closed(websocket: WebSocket) -> None:
    # The client sends nothing; reading is how its going away is noticed.
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


routes = [
    Route("/v1/apps/{app}/logs", logs_url, methods=["GET"]),
    Route("/v1/logs/{app_id}", history, methods=["GET"]),
    WebSocketRoute("/v1/logs/{app_id}", follow),
]
