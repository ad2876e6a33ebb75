"""The deployment stream over a real WebSocket: auth, replay without gap or duplicate,
fan-out, pings, isolation, and events crossing processes through PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import Api
from tests.helpers import CLIENT_ORIGIN
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from dockyard.api import stream as stream_module
from dockyard.domain import status as st
from dockyard.services import deployments as service
from dockyard.services.events import DeploymentLog

EXTERNAL = "https://code.example.com/app/archive/main.tar.gz"


def setup_deployment(api: Api) -> tuple[str, str, str]:
    """An app with one claimed (building) deployment; returns (stream url, app id, deployment id)."""
    with api.client() as client:
        app = client.post("/v1/apps", json={"app": {"name": "stream-app"}}).json()["app"]
        deployment = client.post(
            "/v1/apps/stream-app/deployments", json={"deployment": {"source_url": EXTERNAL}}
        ).json()["deployment"]
    claimed = service.claim_next(
        db=api.platform.db, bus=api.platform.bus, worker_id="test", lease_seconds=60
    )
    assert claimed is not None
    return app["links"]["deployments_stream"], app["id"], deployment["id"]


@contextlib.contextmanager
def open_stream(url: str, token: str) -> Iterator[ClientConnection]:
    with connect(url, origin=CLIENT_ORIGIN, open_timeout=10) as socket:
        socket.send(json.dumps({"type": "auth", "data": {"token": token}}) + "\n")
        yield socket


def collect(
    socket: ClientConnection, deployment_id: str, *, timeout: float = 30
) -> list[dict[str, Any]]:
    """Frames of one deployment until its final status."""
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame.get("id") == deployment_id:
            frames.append(frame)
            if frame["type"] == "status" and frame["data"]["status"] in st.FINAL:
                return frames


def logs_of(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["content"] for f in frames if f["type"] == "log"]


def test_replay_then_live_without_gap_or_duplicate(api: Api) -> None:
    url, app_id, deployment_id = setup_deployment(api)
    write = DeploymentLog(
        db=api.platform.db, bus=api.platform.bus, app_id=app_id, deployment_id=deployment_id
    )
    for i in range(100):
        write(f"line {i}")

    def keep_writing() -> None:
        for i in range(100, 300):
            write(f"line {i}")
        service.transition(
            db=api.platform.db,
            bus=api.platform.bus,
            deployment_id=deployment_id,
            new_status=st.BUILD_ERROR,
            lines=("boom",),
        )

    writer = threading.Thread(target=keep_writing)
    with open_stream(url, api.token) as socket:
        writer.start()  # lines keep coming while the replay is being sent
        frames = collect(socket, deployment_id)
    writer.join()
    assert frames[0]["type"] == "new"
    assert frames[0]["data"]["deployment"]["pusher"]["username"] == "alice"
    assert logs_of(frames) == [f"line {i}" for i in range(300)] + ["boom"]
    statuses = [f["data"]["status"] for f in frames if f["type"] == "status"]
    assert statuses == ["building", "build-error"]
    assert all("seq" not in f for f in frames)


def test_connecting_after_the_end_still_yields_the_final_status(api: Api) -> None:
    url, app_id, deployment_id = setup_deployment(api)
    DeploymentLog(
        db=api.platform.db, bus=api.platform.bus, app_id=app_id, deployment_id=deployment_id
    )("only line")
    service.transition(
        db=api.platform.db, bus=api.platform.bus, deployment_id=deployment_id, new_status=st.ABORTED
    )
    with open_stream(url, api.token) as socket:
        frames = collect(socket, deployment_id, timeout=5)
    assert logs_of(frames) == ["only line"]
    assert frames[-1]["data"]["status"] == "aborted"


def test_fifty_clients_all_receive_every_line_in_order(api: Api) -> None:
    url, app_id, deployment_id = setup_deployment(api)
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(open_stream(url, api.token)) for _ in range(50)]
        for socket in sockets:  # each has received the replay (new + building) before we write
            assert json.loads(socket.recv(timeout=10))["type"] == "new"
        write = DeploymentLog(
            db=api.platform.db, bus=api.platform.bus, app_id=app_id, deployment_id=deployment_id
        )
        for i in range(200):
            write(f"line {i}")
        service.transition(
            db=api.platform.db,
            bus=api.platform.bus,
            deployment_id=deployment_id,
            new_status=st.ABORTED,
        )
        for socket in sockets:
            assert logs_of(collect(socket, deployment_id)) == [f"line {i}" for i in range(200)]


def test_bad_token_is_closed_at_once(api: Api) -> None:
    url, _, _ = setup_deployment(api)
    started = time.monotonic()
    with open_stream(url, "not-a-token") as socket, pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    assert time.monotonic() - started < 2


def test_no_auth_frame_is_closed_after_the_timeout(api: Api) -> None:
    api.platform.settings = api.platform.settings.with_overrides(stream_auth_timeout=0.3)
    url, _, _ = setup_deployment(api)
    with connect(url) as socket, pytest.raises(ConnectionClosed):
        socket.recv(timeout=5)


def test_api_token_and_jwt_both_authenticate_and_pings_arrive(api: Api) -> None:
    api.platform.settings = api.platform.settings.with_overrides(stream_ping_interval=0.2)
    url, _, _ = setup_deployment(api)
    with api.client() as client:
        jwt_token = client.post("/v1/tokens/exchange", json={}, auth=("", api.token)).json()[
            "token"
        ]
    for token in (api.token, jwt_token):
        with open_stream(url, token) as socket:
            types = set()
            deadline = time.monotonic() + 5
            while "ping" not in types and time.monotonic() < deadline:
                frame = json.loads(socket.recv(timeout=5))
                types.add(frame["type"])
                if frame["type"] == "ping":
                    assert isinstance(frame["data"]["ts"], int)
            assert "ping" in types


def test_another_users_stream_is_closed(api: Api) -> None:
    url, _, _ = setup_deployment(api)
    bob = api.new_user("bob")
    with open_stream(url, bob) as socket, pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004


def test_a_stream_ends_once_its_token_is_revoked_or_its_access_removed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JWT stops working once its API token is revoked: what it opened too (at the
    stream's next periodic check, shortened here)."""
    monkeypatch.setattr(stream_module, "ACCESS_CHECK_SECONDS", 0.1)
    url, _, _ = setup_deployment(api)
    with api.client() as client:
        created = client.post("/v1/tokens", json={"token": {"name": "short-lived"}}).json()
        token_id, secret = created["token"]["id"], created["token"]["token"]
        jwt_token = client.post("/v1/tokens/exchange", json={}, auth=("", secret)).json()["token"]
        with open_stream(url, jwt_token) as socket:
            socket.recv(timeout=5)  # the replay: it streams
            assert client.delete(f"/v1/tokens/{token_id}").status_code == 204
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    socket.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
        # A collaborator removed from the app: their stream of it ends too, at once (the
        # app's channel says so; no periodic check is due within the test).
        monkeypatch.setattr(stream_module, "ACCESS_CHECK_SECONDS", 3600.0)
        bob = api.new_user("bob")
        added = client.post(
            "/v1/apps/stream-app/collaborators", json={"collaborator": {"email": "bob@example.com"}}
        ).json()["collaborator"]
        with open_stream(url, bob) as socket:
            socket.recv(timeout=5)
            assert client.delete(f"/v1/apps/stream-app/collaborators/{added['id']}").status_code == 204
            removed = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    socket.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004
        assert time.monotonic() - removed < 5


WRITER = """
import sys
from dockyard.bootstrap import build_platform
from dockyard.settings import Settings
from dockyard.services.events import DeploymentLog
from dockyard.services import deployments as service
settings = Settings.from_mapping({"DOCKYARD_DATA_DIR": sys.argv[1], "DOCKYARD_DATABASE_URL": sys.argv[2]})
platform = build_platform(settings)
write = DeploymentLog(db=platform.db, bus=platform.bus, app_id=sys.argv[3], deployment_id=sys.argv[4])
for i in range(50):
    write(f"from another process {i}")
service.transition(db=platform.db, bus=platform.bus, deployment_id=sys.argv[4], new_status="build-error")
"""


def test_stream_sees_a_deployment_written_by_another_process(api: Api) -> None:
    if not api.platform.settings.is_postgres:
        pytest.skip("events cross processes only through PostgreSQL")
    url, app_id, deployment_id = setup_deployment(api)
    settings = api.platform.settings
    with open_stream(url, api.token) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "new"
        subprocess.run(
            [
                sys.executable,
                "-c",
                WRITER,
                str(settings.data_dir / "other"),
                settings.database_url,
                app_id,
                deployment_id,
            ],
            check=True,
            timeout=60,
        )
        frames = collect(socket, deployment_id)
    assert logs_of(frames) == [f"from another process {i}" for i in range(50)]
    assert frames[-1]["data"]["status"] == "build-error"


def test_an_oversize_frame_closes_the_stream(api: Api) -> None:
    url, _, _ = setup_deployment(api)
    with connect(url) as socket:
        socket.send("x" * (128 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
