"""Turning stream events into output for one deployment."""

from __future__ import annotations

import io
import json
import threading

import pytest
from rich.console import Console
from websockets.sync.server import ServerConnection, serve

from dockyard.cli.client.errors import NetworkError
from dockyard.cli.client.stream import Follower, follow


def follower() -> tuple[Follower, io.StringIO]:
    buffer = io.StringIO()
    return Follower("dep-1", Console(file=buffer, width=200, color_system=None)), buffer


def log(line: str, dep: str = "dep-1") -> dict[str, object]:
    return {"type": "log", "id": dep, "data": {"content": line}}


def status(value: str, dep: str = "dep-1") -> dict[str, object]:
    return {"type": "status", "id": dep, "data": {"status": value}}


def test_only_this_deployments_lines_and_statuses_are_shown() -> None:
    f, out = follower()
    for event in [
        {"type": "new", "id": "dep-0", "data": {"deployment": {}}},
        log("old build", "dep-0"),
        status("success", "dep-0"),
        {"type": "ping", "data": {"ts": 1}},
        log("-----> Building [with brackets]"),
        status("building"),
    ]:
        f.handle(event)
    text = out.getvalue()
    assert "old build" not in text
    assert "-----> Building [with brackets]" in text  # data, never rich markup
    assert "Deployment status: building" in text
    assert f.final is None


def test_final_is_any_status_outside_the_running_ones() -> None:
    for final in ["success", "build-error", "crashed-error", "timeout-error", "aborted"]:
        f, _ = follower()
        f.handle(status("starting"))
        f.handle(status(final))
        assert f.final == final


def test_a_reconnection_replay_prints_nothing_twice() -> None:
    f, out = follower()
    f.connected()
    for line in ["one", "two"]:
        f.handle(log(line))
    f.handle(status("building"))
    f.handle(status("pushing"))
    f.connected()  # the server replays everything stored
    for line in ["one", "two", "three"]:
        f.handle(log(line))
    f.handle(status("building"))
    f.handle(status("pushing"))
    f.handle(status("starting"))
    text = out.getvalue()
    assert [text.count(word) for word in ["one", "two", "three"]] == [1, 1, 1]
    assert [text.count(f"status: {s}") for s in ["building", "pushing", "starting"]] == [1, 1, 1]
    assert f.statuses == ["building", "pushing", "starting"]


def test_the_first_line_of_the_last_error_block_is_the_reason() -> None:
    f, _ = follower()
    f.handle(log(" !     a warning early on"))
    f.handle(log("-----> building"))
    f.handle(log(" !     The deployment was cancelled while web-1 was booting."))
    f.handle(log(" !     The previous release, if any, is still serving."))
    assert f.reason == "The deployment was cancelled while web-1 was booting."


def test_malformed_events_are_ignored() -> None:
    f, out = follower()
    event: object
    for event in [
        None,
        [],
        {"type": "log", "id": "dep-1"},
        {"type": "status", "id": "dep-1", "data": {"status": 3}},
    ]:
        f.handle(event)
    assert out.getvalue() == ""


class FakeApi:
    """What ``follow`` asks of the API client: the app, the JWT, the deployment."""

    def __init__(self, stream_url: str, status: str = "building") -> None:
        self.stream_url = stream_url
        self.status = status

    def get(self, path: str) -> dict[str, object]:
        if path.endswith("/deployments/dep-1"):
            return {"deployment": {"id": "dep-1", "status": self.status}}
        return {"app": {"links": {"deployments_stream": self.stream_url}}}

    def jwt(self) -> str:
        return "a.b.c"

    def text(self, path: str) -> str:
        return "one\ntwo\nthree\n"


def serve_stream(scripts: list[list[dict[str, object]]]) -> tuple[str, list[str], object]:
    """A WebSocket server playing one script per connection, then closing it."""
    auths: list[str] = []

    def handler(connection: ServerConnection) -> None:
        auths.append(str(connection.recv(timeout=5)))
        for event in scripts.pop(0) if scripts else []:
            connection.send(json.dumps(event))

    server = serve(handler, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}/v1/apps/x/deployments-stream", auths, server


def test_follow_reconnects_and_prints_each_line_once() -> None:
    first: list[dict[str, object]] = [
        {"type": "new", "id": "dep-1", "data": {}},
        log("one"),
        status("building"),
    ]
    second = [log("one"), status("building"), log("two"), status("pushing"), status("success")]
    url, auths, server = serve_stream([first, second])
    f, out = follower()
    try:
        assert follow(FakeApi(url), "x", f, sleep=lambda _s: None) == "success"  # type: ignore[arg-type]
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert [json.loads(a) for a in auths] == [{"type": "auth", "data": {"token": "a.b.c"}}] * 2
    assert out.getvalue().count("one") == 1
    assert f.statuses == ["building", "pushing", "success"]


def test_a_stream_closed_after_the_end_catches_up_from_the_api() -> None:
    url, _, server = serve_stream([[log("one"), status("building")]])
    f, out = follower()
    try:
        api = FakeApi(url, status="build-error")
        assert follow(api, "x", f, sleep=lambda _s: None) == "build-error"  # type: ignore[arg-type]
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    text = out.getvalue()
    assert [text.count(word) for word in ["one", "two", "three"]] == [1, 1, 1]
    assert f.statuses == ["building", "build-error"]


def test_a_stream_that_keeps_closing_gives_up_with_a_hint() -> None:
    url, _, server = serve_stream([])
    f, _ = follower()
    try:
        with pytest.raises(NetworkError) as caught:
            follow(FakeApi(url), "x", f, sleep=lambda _s: None)  # type: ignore[arg-type]
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert "deployment-follow dep-1" in caught.value.hint
