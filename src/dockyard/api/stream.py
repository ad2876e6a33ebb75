"""The real-time deployment stream (WebSocket at an app's ``links.deployments_stream``).

Protocol (API.md): the client sends ``{"type": "auth", "data": {"token": …}}`` first; the
server replays the app's recent deployments (``new``, their events so far) and then sends
live events, with no gap and no duplicate between the two: it subscribes *before* reading
the stored events, and drops live events whose sequence number it already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from dockyard.api import schemas, wsframes
from dockyard.api.auth import user_for_credential
from dockyard.bootstrap import Platform
from dockyard.db.engine import transaction
from dockyard.db.models import App, Deployment, User
from dockyard.domain.status import FINAL
from dockyard.errors import DockyardError
from dockyard.services import events

AUTH_TIMEOUT_SECONDS = 5.0
REPLAYED_DEPLOYMENTS = 5
CLOSE_AUTH_FAILED = 4001
CLOSE_NOT_FOUND = 4004
CLOSE_TOO_SLOW = 4008


def _load_app(platform: Platform, app_id: str, user: User) -> App | None:
    with transaction(platform.db) as session:
        app = session.get(App, app_id)
        if app is None or app.owner_id != user.id:
            return None
        return app


def _snapshot(platform: Platform, app: App) -> list[dict[str, Any]]:
    """Recent deployments (and any still running) with every stored event, oldest first."""
    with transaction(platform.db) as session:
        recent = list(
            session.scalars(
                select(Deployment)
                .where(Deployment.app_id == app.id)
                .order_by(Deployment.created_at.desc())
                .limit(REPLAYED_DEPLOYMENTS)
            )
        )
        running = session.scalars(
            select(Deployment).where(Deployment.app_id == app.id, Deployment.status.not_in(FINAL))
        )
        chosen = {d.id: d for d in [*recent, *running]}
        frames = []
        for deployment in sorted(chosen.values(), key=lambda d: d.created_at):
            frames.append(_new_frame(deployment, app, platform))
            for row in events.events_since(session, deployment_id=deployment.id):
                frames.append(events.wire_event(row.deployment_id, row.kind, row.content, row.seq))
        return frames


def _new_frame(deployment: Deployment, app: App, platform: Platform) -> dict[str, Any]:
    return {
        "type": "new",
        "id": deployment.id,
        "seq": 0,
        "data": {"deployment": schemas.deployment(deployment, app.name, platform.settings)},
    }


def _render_new(platform: Platform, app: App, deployment_id: str) -> dict[str, Any] | None:
    with transaction(platform.db) as session:
        deployment = session.get(Deployment, deployment_id)
        return None if deployment is None else _new_frame(deployment, app, platform)


def encoded(frame: dict[str, Any]) -> tuple[str, bytes]:
    """The frame as sent, text and WebSocket frame: encoded once, however many clients
    receive the same event."""
    wire = frame.get("_wire")
    if wire is None:
        text = json.dumps(
            {key: value for key, value in frame.items() if key not in ("seq", "_wire")}
        )
        wire = (text, wsframes.text_frame(text.encode()))
        frame["_wire"] = wire
    return wire


class _Stream:
    def __init__(self, websocket: WebSocket, platform: Platform, app: App) -> None:
        self.websocket = websocket
        self.writer = wsframes.FrameWriter(websocket)
        self.platform = platform
        self.app = app
        self.sent: dict[str, int] = {}  # deployment id -> highest sequence number sent

    def fresh(self, frame: dict[str, Any]) -> bool:
        """Whether ``frame`` is still to be sent (replay and live events overlap); noted as sent."""
        deployment_id, seq = frame.get("id"), frame.get("seq", 0)
        if frame["type"] == "new":
            if deployment_id in self.sent:
                return False
        elif deployment_id is not None and seq <= self.sent.get(deployment_id, 0):
            return False
        if deployment_id is not None:
            self.sent[deployment_id] = max(seq, self.sent.get(deployment_id, 0))
        return True

    async def send(self, frames: list[dict[str, Any]]) -> None:
        await self.writer.write([encoded(frame) for frame in frames if self.fresh(frame)])

    async def run(self, ping_interval: float) -> None:
        subscription = self.platform.bus.subscribe(events.channel_for(self.app.id))
        try:
            await self.send(await run_in_threadpool(_snapshot, self.platform, self.app))
            while True:
                try:
                    first = await asyncio.wait_for(subscription.get(), timeout=ping_interval)
                except TimeoutError:
                    ping = {"type": "ping", "data": {"ts": int(time.time())}}
                    await self.writer.write([encoded(ping)])
                    continue
                # Everything queued meanwhile goes out in the same write.
                batch = [first]
                while not subscription.queue.empty():
                    batch.append(subscription.queue.get_nowait())
                if not await self.send_batch(batch):
                    return
        finally:
            subscription.close()

    async def send_batch(self, batch: list[dict[str, Any]]) -> bool:
        """Send ``batch`` in order; False once the stream was closed for falling behind."""
        pending: list[dict[str, Any]] = []
        for event in batch:
            if event["type"] == "_overflow":
                await self.send(pending)
                await self.websocket.close(
                    CLOSE_TOO_SLOW, "too slow: events were dropped; reconnect"
                )
                return False
            if event["type"].startswith("_"):
                continue  # the platform's own (an app deleted): not part of the protocol
            if event["type"] == "new":
                # Rendered from the database: the event itself carries only the id.
                await self.send(pending)
                pending = []
                rendered = await run_in_threadpool(
                    _render_new, self.platform, self.app, event["id"]
                )
                if rendered is not None:
                    await self.send([rendered])
            else:
                pending.append(event)
        await self.send(pending)
        return True


async def _authenticate(websocket: WebSocket, platform: Platform) -> User | None:
    timeout = float(platform.extras.get("stream_auth_timeout", AUTH_TIMEOUT_SECONDS))
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), timeout=timeout)
        message = json.loads(raw.strip())
        token = message["data"]["token"] if message.get("type") == "auth" else None
        if not isinstance(token, str) or not token.strip():
            return None
        platform.rate_limiter.check(token.strip()[-32:])
        return await run_in_threadpool(user_for_credential, platform, token.strip())
    except (TimeoutError, ValueError, KeyError, TypeError, AttributeError, DockyardError):
        return None


async def deployments_stream(websocket: WebSocket) -> None:
    platform: Platform = websocket.app.state.platform
    await websocket.accept()
    user = await _authenticate(websocket, platform)
    if user is None:
        await websocket.close(CLOSE_AUTH_FAILED, "authentication failed")
        return
    app = await run_in_threadpool(_load_app, platform, websocket.path_params["app_id"], user)
    if app is None:
        await websocket.close(CLOSE_NOT_FOUND, "app not found")
        return
    stream = _Stream(websocket, platform, app)
    ping_interval = float(platform.extras.get("stream_ping_interval", 20.0))
    # The client never sends after auth; reading is how a disconnect is noticed.
    sender = asyncio.create_task(stream.run(ping_interval))
    receiver = asyncio.create_task(_drain(websocket))
    stoppers = platform.extras.setdefault("stream_tasks", set())
    stoppers.add(sender)
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stoppers.discard(sender)
        for task in (sender, receiver):
            task.cancel()
            with contextlib.suppress(
                asyncio.CancelledError, WebSocketDisconnect, RuntimeError, Exception
            ):
                await task


async def _drain(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


routes = [WebSocketRoute("/v1/apps/{app_id}/deployments-stream", deployments_stream)]
