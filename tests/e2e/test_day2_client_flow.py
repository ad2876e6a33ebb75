"""Day-2 commands of the official client on a real server, request for request
(API-OPS §6, §11, §13): timeline, rollback, collaborators and rename, with what a user
would see printed."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import ServerProcess
from tests.helpers import FINAL, ScalingoClient, tar_gz_from_files, wait_for

SERVER = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"{os.environ['RELEASE']} {os.environ['CONTAINER']}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def release(name: str) -> bytes:
    return tar_gz_from_files(
        {"Procfile": f"web: RELEASE={name} python3 server.py\n", "server.py": SERVER}
    )


def deploy(client: ScalingoClient, app: str, name: str) -> dict[str, Any]:
    """``scalingo deploy`` of an archive: source, upload, deployment, the stream."""
    source = client.request("POST", "/sources", expect=201)["source"]
    client.upload(source["upload_url"], release(name))
    created = client.request(
        "POST",
        f"/apps/{app}/deployments",
        {"deployment": {"git_ref": name, "source_url": source["download_url"]}},
        expect=201,
    )["deployment"]
    stream = client.request("GET", f"/apps/{app}")["app"]["links"]["deployments_stream"]
    lines, statuses, _ = client.follow(stream, created["id"])
    assert statuses[-1] == "success", "\n".join(lines)
    return dict(created)


def served(server: ServerProcess, app: str, *, timeout: float = 5) -> str:
    try:
        response = httpx.get(
            f"http://127.0.0.1:{server.router_port}/",
            headers={"Host": f"{app}.localhost:{server.router_port}"},
            timeout=timeout,
        )
    except httpx.HTTPError:
        return ""
    return response.text if response.status_code == 200 else ""


def timeline_line(event: dict[str, Any]) -> str:
    """What ``scalingo timeline`` prints for the event types asserted here (the client's
    templates, GS/events_*.go)."""
    data, who = event["type_data"], f"{event['user']['username']} ({event['user']['email']})"
    text = {
        "deployment": lambda: f"deployment of {data['git_ref']} ({data['status']})",
        "new_variable": lambda: f"'{data['name']}' added to the environment",
        "scale": lambda: "containers have been scaled from ["
        + ", ".join(f"{k}:{v}" for k, v in sorted(data["previous_containers"].items()))
        + "], to ["
        + ", ".join(f"{k}:{v}" for k, v in sorted(data["containers"].items()))
        + "]",
        "restart": lambda: "containers began to restart"
        + (f" (reason: {data['reason'].replace('_', ' ')})" if data.get("reason") else ""),
        "new_collaborator": lambda: f"'{data['collaborator']['email']}' has been invited",
        "rename_app": lambda: (
            f"the application has been renamed from '{data['old_name']}' to '{data['new_name']}'"
        ),
        "new_app": lambda: "the application has been created",
    }[event["type"]]()
    return f"{event['type']} - {text} {who}"


def test_timeline_rollback_collaborator_and_rename(dockyard_server: ServerProcess) -> None:
    alice = ScalingoClient(dockyard_server.url, dockyard_server.create_user("alice"))
    bob = ScalingoClient(dockyard_server.url, dockyard_server.create_user("bobby"))
    alice.exchange()
    bob.exchange()
    alice.request("POST", "/apps", {"app": {"name": "day2-app"}}, expect=201)
    first = deploy(alice, "day2-app", "v1")
    deploy(alice, "day2-app", "v2")
    assert served(dockyard_server, "day2-app").startswith("v2 ")

    # env-set, scale web:2, restart: each lands in the timeline.
    alice.request(
        "PUT", "/apps/day2-app/variables",
        {"variables": [{"name": "GREETING", "value": "top-secret-value"}]},
    )
    alice.request(
        "POST", "/apps/day2-app/scale", {"containers": [{"name": "web", "amount": 2}]}, expect=202
    )
    alice.request("POST", "/apps/day2-app/restart", {"scope": []}, expect=202)
    body = alice.request("GET", "/apps/day2-app/events?page=1&per_page=30")
    assert "top-secret-value" not in str(body)
    printed = [timeline_line(event) for event in body["events"]]
    assert printed == [
        "restart - containers began to restart (reason: user restart) alice (alice@example.com)",
        "scale - containers have been scaled from [web:1:M], to [web:2:M] alice (alice@example.com)",
        "new_variable - 'GREETING' added to the environment alice (alice@example.com)",
        "deployment - deployment of v2 (success) alice (alice@example.com)",
        "deployment - deployment of v1 (success) alice (alice@example.com)",
        "new_app - the application has been created alice (alice@example.com)",
    ]
    assert body["meta"]["pagination"]["total_pages"] == 1
    # Both instances back, so the rollback below is timed from a settled app rather than
    # beside the restart's second instance still starting.
    wait_for(
        lambda: {served(dockyard_server, "day2-app") for _ in range(6)}
        == {"v2 day2-app-web-1\n", "v2 day2-app-web-2\n"},
        timeout=30, what="both instances of v2 serving again after the restart",
    )

    # Rollback: the previous release serves again within two seconds, with no build.
    asked = time.monotonic()
    rollback = alice.request("POST", "/apps/day2-app/rollback", {}, expect=201)["deployment"]
    slow: list[str] = []

    def v1_served() -> bool:
        # Asked as a visitor would, who gives up on a page after a second and asks again;
        # what a slow answer was is kept for the message below.
        started = time.monotonic()
        answer = served(dockyard_server, "day2-app", timeout=1)
        if time.monotonic() - started > 0.5:
            slow.append(f"{time.monotonic() - started:.2f} s: {answer!r}")
        return answer.startswith("v1 ")

    wait_for(v1_served, timeout=10, interval=0.02, what="v1 served after the rollback")
    took = time.monotonic() - asked
    assert took < 2.0, f"the rollback took {took:.2f} s to serve v1; slow answers: {slow}"
    assert rollback["rollback_of"] == first["id"] and rollback["git_ref"] == "v1"
    stream = alice.request("GET", "/apps/day2-app")["app"]["links"]["deployments_stream"]
    _, statuses, _ = alice.follow(stream, rollback["id"])
    assert statuses[-1] == "success"
    output = alice.request("GET", f"/apps/day2-app/deployments/{rollback['id']}/output")
    assert f"Rolling back to the release of deployment {first['id']} (no build)" in output
    for build_step in ("Fetching source", "Unpacking", "buildpack", "Packaging"):
        assert build_step not in output, output
    listed = alice.request("GET", "/apps/day2-app/deployments?page=1&per_page=20")
    assert [d["git_ref"] for d in listed["deployments"]] == ["v1", "v2", "v1"]
    # Both instances came back: the formation survives the rollback.
    wait_for(
        lambda: {served(dockyard_server, "day2-app").split()[-1] for _ in range(6)}
        == {"day2-app-web-1", "day2-app-web-2"},
        timeout=10, what="both web instances of v1 answering",
    )

    # A collaborator deploys, but may neither destroy the app nor share it.
    alice.request(
        "POST", "/apps/day2-app/collaborators",
        {"collaborator": {"email": "bobby@example.com", "is_limited": False}}, expect=201,
    )
    listed_collaborators = bob.request("GET", "/apps/day2-app/collaborators")["collaborators"]
    assert [(c["email"], c["status"]) for c in listed_collaborators] == [
        ("bobby@example.com", "accepted")
    ]
    assert [a["name"] for a in bob.request("GET", "/apps")["apps"]] == ["day2-app"]
    deploy(bob, "day2-app", "v3")
    wait_for(
        lambda: served(dockyard_server, "day2-app").startswith("v3 "),
        timeout=10, what="bob's v3 served",
    )
    refused = bob.request("DELETE", "/apps/day2-app", expect=403)
    assert "owner" in refused["error"]
    bob.request(
        "POST", "/apps/day2-app/collaborators",
        {"collaborator": {"email": "alice@example.com", "is_limited": False}}, expect=403,
    )

    # rename: the URL and the route follow; the instances know their new name.
    alice.request("GET", "/apps/day2-app")
    renamed = alice.request(
        "POST", "/apps/day2-app/rename",
        {"current_name": "day2-app", "new_name": "day2-renamed"},
    )["app"]
    assert renamed["name"] == "day2-renamed"
    assert renamed["url"].startswith("http://day2-renamed.localhost")
    wait_for(
        lambda: served(dockyard_server, "day2-renamed").startswith("v3 day2-renamed-web-"),
        timeout=20, what="the renamed app answering under its new name",
    )
    assert served(dockyard_server, "day2-app") == ""
    alice.request("GET", "/apps/day2-app", expect=404)

    # The user timeline spans the user's apps, newest first, with the app's name.
    mine = alice.request("GET", "/events?page=1&per_page=3")
    newest = mine["events"][0]
    assert newest["app_name"] == "day2-renamed"
    assert timeline_line(newest) == (
        "rename_app - the application has been renamed from 'day2-app' to 'day2-renamed' "
        "alice (alice@example.com)"
    )
    app_events = alice.request("GET", "/apps/day2-renamed/events?per_page=100")["events"]
    deployments = [e["type_data"] for e in app_events if e["type"] == "deployment"]
    assert [(d["git_ref"], d["pusher"], d["status"]) for d in deployments] == [
        ("v3", "bobby", "success"), ("v1", "alice", "success"),
        ("v2", "alice", "success"), ("v1", "alice", "success"),
    ]
    assert deployments[1]["rollback_of"] == first["id"]
    assert all(d["status"] in FINAL for d in deployments)
