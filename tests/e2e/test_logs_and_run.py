"""``scalingo logs`` and ``scalingo run`` (with ``--detached``, ``--env``,
``one-off-stop``), request for request as the official client sends them, on a real
server running a real app (issue 18)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosedOK

from tests.conftest import server_process
from tests.e2e import scalingo_ops as ops
from tests.e2e.deployer import Deployer
from tests.helpers import ScalingoClient, tar_gz_from_files, wait_for

APP_SERVER = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        print("the app says", self.path, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\\n")
    def log_message(self, *args):
        pass

print("booting on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""
APP = tar_gz_from_files({"Procfile": "web: python3 server.py\n", "server.py": APP_SERVER})


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployer, ScalingoClient]]:
    """A real server with one deployed app, ``day-two``, and the official client of its owner."""
    server = server_process(tmp_path_factory.mktemp("server"))
    server.start()
    try:
        token = server.create_user("olivia")
        deployer = Deployer(server=server, token=token)
        deployer.create_app("day-two")
        status, output = deployer.deploy("day-two", archive=APP)
        assert status == "success", output
        client = ScalingoClient(server.url, token)
        client.exchange()
        yield deployer, client
    finally:
        server.stop()
        server.remove_data()


def test_logs_lines_shows_what_the_app_printed_and_the_router_saw(
    deployed: tuple[Deployer, ScalingoClient],
) -> None:
    deployer, client = deployed
    assert deployer.get("day-two", "/printed-for-logs").status_code == 200
    url = ops.logs_url(client, "day-two")
    assert "?" in url and "token=" in url and "timestamp=" in url

    def dumped() -> str | None:
        response = ops.dump(url, lines=5)
        text = response.text if response.status_code == 200 else ""
        return text if 'path="/printed-for-logs"' in text else None

    text = wait_for(dumped, timeout=10, what="the request in the logs")
    lines = text.splitlines()
    assert len(lines) <= 5
    for line in lines:
        assert re.match(ops.LINE_PATTERN, line), line
        assert "  " not in line
    assert any("[web-1] the app says /printed-for-logs" in line for line in lines), text
    router = next(line for line in lines if "[router]" in line)
    assert re.search(r'method=GET path="/printed-for-logs" .*status=200 duration=\d', router)

    only_web = ops.dump(url, lines=50, filter="web").text.splitlines()
    assert only_web and all("[web-1]" in line for line in only_web)
    only_router = ops.dump(url, lines=50, filter="router").text.splitlines()
    assert only_router and all("[router]" in line for line in only_router)
    assert ops.dump(url, lines=5, filter="worker").status_code == 204
    # ``logs -n 20000``: more than is kept is asked for; the client accepts only a success.
    assert ops.dump(url, lines=20_000, filter="web").text.splitlines() == only_web


def test_logs_follow_gets_a_new_line_within_a_second(
    deployed: tuple[Deployer, ScalingoClient],
) -> None:
    deployer, client = deployed
    url = ops.logs_url(client, "day-two")
    with ops.follow(url, filter="web") as stream:
        asked = time.monotonic()
        deployer.get("day-two", "/followed-live")
        text = ops.next_log_frame(stream, containing="/followed-live", timeout=5)
        assert time.monotonic() - asked < 1.0
    assert "[web-1] the app says /followed-live" in text
    assert "[router]" not in text  # the filter holds on the stream too


def test_logs_follow_ends_when_the_app_is_deleted(
    deployed: tuple[Deployer, ScalingoClient],
) -> None:
    """The client follows until the stream closes; it must not wait forever on pings for
    an app that is gone (API-OPS §4)."""
    deployer, client = deployed
    deployer.create_app("brief-app")
    with ops.follow(ops.logs_url(client, "brief-app")) as stream:
        client.request("DELETE", "/apps/brief-app", expect=204)
        deleted = time.monotonic()
        with pytest.raises(ConnectionClosedOK) as closed:
            while True:
                assert json.loads(stream.recv(timeout=10))["event"] == "ping"
        assert time.monotonic() - deleted < 5
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_run_prints_with_the_apps_variables_and_exits_3(
    deployed: tuple[Deployer, ScalingoClient],
) -> None:
    _, client = deployed
    client.request(
        "POST",
        "/apps/day-two/variables",
        {"variable": {"name": "FROM_APP", "value": "app-var"}},
        expect=201,
    )
    session = ops.run_attached(
        client, "day-two", 'echo "out of $FROM_APP and $CONTAINER on $(tty)"; exit 3'
    )
    assert session.exit_code == 3
    assert b"out of app-var and day-two-one-off-" in session.output, session.output


def test_run_reads_stdin_and_ctrl_c_reaches_the_command(
    deployed: tuple[Deployer, ScalingoClient],
) -> None:
    _, client = deployed
    command = (
        "trap 'echo interrupted; exit 130' INT; read line; echo \"read: $line\"; sleep 30 & wait"
    )
    started = ops.start_run(client, "day-two", command, detached=False)
    assert started.container["label"].startswith("one-off-")
    operation = ops.wait_operation(client, "day-two", started.operation_url)
    attach_url = operation["start_one_off_data"]["attach_url"]
    sock, head = ops.connect_attach(attach_url, client.jwt)
    assert head.startswith(b"HTTP/1.1 200"), head
    sock.sendall(b"typed words\r")
    sock.settimeout(10)
    seen = b""
    while b"read: typed words" not in seen:
        seen += sock.recv(4096)
    sock.sendall(b"\x03")
    seen += ops.read_until_closed(sock)
    assert b"interrupted" in seen, seen
    assert ops.resize_and_wait(attach_url, client.jwt) == 130


def test_a_one_off_stops_when_its_client_goes_away(
    deployed: tuple[Deployer, ScalingoClient],
) -> None:
    _, client = deployed
    started = ops.start_run(client, "day-two", "sleep 300", detached=False)
    label = started.container["label"]
    operation = ops.wait_operation(client, "day-two", started.operation_url)
    sock, head = ops.connect_attach(operation["start_one_off_data"]["attach_url"], client.jwt)
    assert head.startswith(b"HTTP/1.1 200")
    assert label in _labels(client)
    sock.close()
    wait_for(lambda: label not in _labels(client), timeout=15, what=f"{label} to stop")


def test_detached_output_lands_in_the_logs_under_its_label(
    deployed: tuple[Deployer, ScalingoClient],
) -> None:
    _, client = deployed
    started = ops.start_run(
        client, "day-two", 'echo "detached says $EXTRA"', detached=True, env={"EXTRA": "from-env"}
    )
    label = started.container["label"]
    assert re.fullmatch(r"one-off-\d+", label)
    url = ops.logs_url(client, "day-two")

    def logged() -> str | None:
        response = ops.dump(url, lines=20, filter=label)
        return response.text if "detached says from-env" in response.text else None

    text = wait_for(logged, timeout=15, what="the detached one-off's output in the logs")
    assert f"[{label}] detached says from-env" in text
    # The timeline says who ran what ("detached one-off container with command '…'").
    events = client.request("GET", "/apps/day-two/events?page=1&per_page=30")["events"]
    ran = next(e for e in events if e["type"] == "run")
    assert ran["type_data"] == {"command": 'echo "detached says $EXTRA"', "detached": True}
    assert ran["user"]["username"] == "olivia"


def test_one_off_stop(deployed: tuple[Deployer, ScalingoClient]) -> None:
    _, client = deployed
    label = ops.start_run(client, "day-two", "sleep 300", detached=True).container["label"]
    containers = client.request("GET", "/apps/day-two/ps")["containers"]
    container = next(c for c in containers if c["label"] == label)
    assert container["type"] == "one-off" and container["state"] == "running"
    client.request("POST", f"/apps/day-two/containers/{container['id']}/stop", {}, expect=202)
    wait_for(lambda: label not in _labels(client), timeout=20, what=f"{label} to stop")
    client.request("POST", f"/apps/day-two/containers/{container['id']}/stop", {}, expect=404)


def test_another_user_gets_404_on_logs_and_one_offs(
    deployed: tuple[Deployer, ScalingoClient],
) -> None:
    deployer, owner = deployed
    stranger = ScalingoClient(deployer.server.url, deployer.server.create_user("mallory"))
    stranger.exchange()
    stranger.request("GET", "/apps/day-two/logs", expect=404)
    stranger.request(
        "POST",
        "/apps/day-two/run",
        {"command": "id", "env": {}, "size": "M", "detached": True},
        expect=404,
    )

    started = ops.start_run(owner, "day-two", "sleep 300", detached=False)
    operation_id = started.operation_url.rsplit("/", 1)[-1]
    stranger.request("GET", f"/apps/day-two/operations/{operation_id}", expect=404)
    container_id = started.container["id"]
    stranger.request("POST", f"/apps/day-two/containers/{container_id}/stop", {}, expect=404)
    attach_url = ops.wait_operation(owner, "day-two", started.operation_url)["start_one_off_data"][
        "attach_url"
    ]
    sock, head = ops.connect_attach(attach_url, stranger.jwt)
    sock.close()
    assert head.startswith(b"HTTP/1.1 404"), head
    waited = httpx.get(f"{attach_url}/wait", headers={"Authorization": ops.basic(stranger.jwt)})
    assert waited.status_code == 404
    # The owner's terminal was not taken by the attempt: the owner still attaches.
    sock, head = ops.connect_attach(attach_url, owner.jwt)
    assert head.startswith(b"HTTP/1.1 200"), head
    sock.close()

    # A logs URL opens one app's logs only, and nothing without its token.
    stranger.request("POST", "/apps", {"app": {"name": "other-app"}}, expect=201)
    other_url = ops.logs_url(stranger, "other-app")
    assert ops.dump(other_url, lines=20).status_code == 204  # never deployed: no log
    refused = stranger.request(
        "POST", "/apps/other-app/run", {"command": "id", "env": {}, "size": "M"}, expect=409
    )
    assert "deploy it before running a command" in refused["error"]
    day2_url = ops.logs_url(owner, "day-two")
    day2_id = day2_url.split("/v1/logs/")[1].split("?")[0]
    stolen = other_url.replace(other_url.split("/v1/logs/")[1].split("?")[0], day2_id)
    assert ops.dump(stolen, lines=5).status_code == 401
    assert httpx.get(day2_url.split("?")[0] + "?n=5").status_code == 401


def _labels(client: ScalingoClient) -> list[str]:
    return [c["label"] for c in client.request("GET", "/apps/day-two/ps")["containers"]]


def test_destroying_an_app_stops_its_one_offs(deployed: tuple[Deployer, ScalingoClient]) -> None:
    deployer, client = deployed
    deployer.create_app("short-lived")
    status, output = deployer.deploy("short-lived", archive=APP)
    assert status == "success", output
    ops.start_run(client, "short-lived", "sleep 301.25", detached=True)
    wait_for(lambda: _sleepers("301.25"), timeout=10, what="the one-off to run")
    client.request("DELETE", "/apps/short-lived?", expect=204)
    wait_for(lambda: not _sleepers("301.25"), timeout=20, what="the one-off to be stopped")


def _sleepers(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                    found.append(entry.name)
            except OSError:
                continue
    return found
