"""Running apps: stop, start, restart, and their output (recent lines, or followed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from dockyard.api import schemas
from dockyard.api.auth import authenticate
from dockyard.api.routes.common import call, int_param, json_response, platform_of
from dockyard.services import lifecycle


def _action(action: str) -> Callable[[Request], Awaitable[Response]]:
    operation = {
        "stop": lifecycle.stop_app,
        "start": lifecycle.start_app,
        "restart": lifecycle.restart_app,
    }[action]

    async def endpoint(request: Request) -> Response:
        user = await authenticate(request)
        platform = platform_of(request)
        app = await call(operation, platform=platform, owner=user, name=request.path_params["app"])
        status = lifecycle.app_status(platform, app.name)
        return json_response(
            {"app": schemas.app(app, platform.settings, status=status)}, status=202
        )

    return endpoint


async def logs(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    lines = int_param(request, "lines", 100, minimum=0, maximum=10_000)
    name = request.path_params["app"]
    recent = await call(
        lifecycle.recent_logs, platform=platform, owner=user, name=name, lines=lines
    )
    if request.query_params.get("follow", "").lower() not in {"1", "true", "yes"}:
        return PlainTextResponse(
            "".join(line + "\n" for line in recent), headers={"Cache-Control": "no-store"}
        )
    supervisor = lifecycle.supervisor_of(platform)
    return StreamingResponse(
        _follow(supervisor, name, recent),
        media_type="text/plain",
        headers={"Cache-Control": "no-store"},
    )


async def _follow(supervisor: object, app: str, recent: list[str]) -> AsyncIterator[str]:
    """Recent lines, then new ones as they are written, until the client goes away."""
    for line in recent:
        yield line + "\n"
    stop = threading.Event()
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=10_000)
    loop = asyncio.get_running_loop()

    def pump() -> None:
        try:
            for line in supervisor.follow_logs(app, stop=stop, lines=0):  # type: ignore[attr-defined]
                loop.call_soon_threadsafe(queue.put_nowait, line)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    worker = threading.Thread(target=pump, daemon=True, name=f"logs-{app}")
    worker.start()
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            yield item + "\n"
    finally:
        stop.set()


routes = [
    Route("/v1/apps/{app}/stop", _action("stop"), methods=["POST"]),
    Route("/v1/apps/{app}/start", _action("start"), methods=["POST"]),
    Route("/v1/apps/{app}/restart", _action("restart"), methods=["POST"]),
    Route("/v1/apps/{app}/logs", logs, methods=["GET"]),
]
