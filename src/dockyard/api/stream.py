"""The real-time deployment stream (WebSocket at an app's ``links.deployments_stream``).

Protocol (docs/api.md): the client sends ``{"type": "auth", "data": {"token": …}}`` first; the
server replays the app's recent deployments (``new``, their events so far) and then sends
live events, with no gap and no duplicate between the two: it subscribes *before* reading
the stored events, and drops live events whose sequence number it already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from dockyard.api import schemas, wsframes
from dockyard.api.auth import client_host, still_valid, user_for_credential, verified
from dockyard.domain.records import AppRecord, DeploymentRecord, UserRecord
from dockyard.errors import DockyardError
from dockyard.platform import Platform
from dockyard.services import events
from dockyard.services import streams as streams_service

CLOSE_AUTH_FAILED = 4001
CLOSE_NOT_FOUND = 4004
CLOSE_TOO_SLOW = 4008
# How often an open stream checks that its credential was not revoked (a revocation is
# not announced on the app's channel; a removed access or a deleted app is, and is
# checked at once). Each stream starts at a random point of the period, so that streams
# opened together do not all ask at the same moment.
ACCESS_CHECK_SECONDS = 30.0


def _snapshot(platform: Platform, app: AppRecord) -> list[dict[str, Any]]:
    """Recent deployments (and any still running) with every stored event, oldest first."""
    frames = []
    for replayed in streams_service.replay(db=platform.db, app_id=app.id):
        frames.append(_new_frame(replayed.deployment, app, platform))
        for row in replayed.events:
            frames.append(events.wire_event(row.deployment_id, row.kind, row.content, row.seq))
    return frames


def _new_frame(deployment: DeploymentRecord, app: AppRecord, platform: Platform) -> dict[str, Any]:
    return {
        "type": "new",
        "id": deployment.id,
        "seq": 0,
        "data": {"deployment": schemas.deployment(deployment, app.name, platform.settings)},
    }


def _render_new(platform: Platform, app: AppRecord, deployment_id: str) -> dict[str, Any] | None:
    deployment = streams_service.deployment(db=platform.db, deployment_id=deployment_id)
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
    def __init__(self, websocket: WebSocket, platform: Platform, app: AppRecord) -> None:
        self.websocket = websocket
        self.writer = wsframes.FrameWriter(websocket)
        self.platform = platform
        self.app = app
        self.sent: dict[str, int] = {}  # deployment id -> highest sequence number sent
        # Set when the app's channel says who may see it changed: check access now.
        self.access_changed = asyncio.Event()

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
            if event["type"] in (events.ACCESS_CHANGED, events.APP_DELETED):
                self.access_changed.set()
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


async def _authenticate(
    websocket: WebSocket, platform: Platform
) -> tuple[UserRecord, Callable[[], UserRecord]] | None:
    """The user the auth frame names, and how to check later that it still may."""
    timeout = platform.settings.stream_auth_timeout
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), timeout=timeout)
        message = json.loads(raw.strip())
        token = message["data"]["token"] if message.get("type") == "auth" else None
        if not isinstance(token, str) or not token.strip():
            return None
        secret = token.strip()
        user = await verified(
            platform, client_host(websocket), lambda: user_for_credential(platform, secret)
        )
        platform.rate_limiter.check_user(user.id)
        return user, still_valid(platform, secret)
    except (TimeoutError, ValueError, KeyError, TypeError, AttributeError, DockyardError):
        return None


async def _until_access_ends(
    platform: Platform, app_id: str, recheck: Callable[[], UserRecord], changed: asyncio.Event
) -> tuple[int, str]:
    """Returns, with a close code and reason, once the credential the stream was opened
    with is revoked, or its user may no longer see the app (removed as a collaborator, or
    the app deleted): checked every ``ACCESS_CHECK_SECONDS``, and at once when
    ``changed`` is set."""
    wait = random.uniform(0, ACCESS_CHECK_SECONDS)  # noqa: S311 - spreading load, not a secret
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=wait)
        changed.clear()
        wait = ACCESS_CHECK_SECONDS
        try:
            user = await run_in_threadpool(recheck)
        except DockyardError:
            return CLOSE_AUTH_FAILED, "the credential was revoked"
        app = await run_in_threadpool(
            streams_service.followed_app, db=platform.db, app_id=app_id, user=user
        )
        if app is None:
            return CLOSE_NOT_FOUND, "app not found"


async def deployments_stream(websocket: WebSocket) -> None:
    platform: Platform = websocket.app.state.platform
    await websocket.accept()
    authenticated = await _authenticate(websocket, platform)
    if authenticated is None:
        await websocket.close(CLOSE_AUTH_FAILED, "authentication failed")
        return
    user, recheck = authenticated
    app = await run_in_threadpool(
        lambda: streams_service.followed_app(
            db=platform.db, app_id=websocket.path_params["app_id"], user=user
        )
    )
    if app is None:
        await websocket.close(CLOSE_NOT_FOUND, "app not found")
        return
    stream = _Stream(websocket, platform, app)
    ping_interval = platform.settings.stream_ping_interval
    # The client never sends after auth; reading is how a disconnect is noticed.
    sender = asyncio.create_task(stream.run(ping_interval))
    receiver = asyncio.create_task(_drain(websocket))
    access = asyncio.create_task(
        _until_access_ends(platform, app.id, recheck, stream.access_changed)
    )
    platform.streams.add(sender)
    try:
        done, _ = await asyncio.wait(
            {sender, receiver, access}, return_when=asyncio.FIRST_COMPLETED
        )
        if access in done:
            code, reason = access.result()
            with contextlib.suppress(Exception):  # the client may be gone as well
                await websocket.close(code, reason)
    finally:
        platform.streams.discard(sender)
        for task in (sender, receiver, access):
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
