"""The official client's day-2 requests for ``logs`` and ``run``, byte for byte as
API-OPS.md §4, §5 and §14 describe them, for end-to-end tests."""

from __future__ import annotations

import base64
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from tests.helpers import ScalingoClient, wait_for

LOGS_ORIGIN = Origin("http://scalingo-cli.local/1.48.0")
# 4 date fields, the bracketed name, the message, single spaces (the client's printer).
LINE_PATTERN = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} \+0000 UTC \[[a-z0-9-]+\] \S"


def logs_url(client: ScalingoClient, app: str) -> str:
    url: str = client.request("GET", f"/apps/{app}/logs")["logs_url"]
    return url


def dump(url: str, *, lines: int, filter: str = "") -> httpx.Response:
    """The history request: the client keeps scheme, host and path of the logs URL and
    rebuilds the query from exactly four parameters; no Authorization header."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    params = {
        "filter": filter,
        "n": str(lines),
        "timestamp": query["timestamp"][0],
        "token": query["token"][0],
    }
    return httpx.get(
        f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(params)}",
        headers={"Accept": "application/json", "Content-Type": "application/json"},
        timeout=30,
    )


def follow(url: str, *, filter: str = "") -> ClientConnection:
    """The ``-f`` WebSocket: the logs URL, ws scheme, ``&stream=true`` appended raw (and
    ``&filter=`` unencoded); no Authorization header, no subprotocol, nothing sent."""
    ws_url = "ws" + url[len("http") :] + "&stream=true"
    if filter:
        ws_url += f"&filter={filter}"
    return connect(ws_url, origin=LOGS_ORIGIN, open_timeout=10)


def next_log_frame(socket_: ClientConnection, *, containing: str, timeout: float) -> str:
    """The text of the first log frame holding ``containing`` (pings skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no log frame with {containing!r} within {timeout} s")
        frame = json.loads(socket_.recv(timeout=remaining))
        if frame.get("event") == "log":
            assert frame["timestamp"]
            text: str = frame["log"]
            if containing in text:
                return text


@dataclass
class Started:
    container: dict[str, Any]
    operation_url: str


def start_run(
    client: ScalingoClient,
    app: str,
    command: str,
    *,
    detached: bool,
    env: dict[str, str] | None = None,
) -> Started:
    client.request("GET", f"/apps/{app}")
    body = client.request(
        "POST",
        f"/apps/{app}/run",
        {
            "command": command,
            "env": {"TERM": "xterm-256color", "CLIENT_OS": "linux", **(env or {})},
            "size": "M",
            "detached": detached,
            "has_uploads": False,
        },
    )
    return Started(container=body["container"], operation_url=body["operation_url"])


def wait_operation(client: ScalingoClient, app: str, operation_url: str) -> dict[str, Any]:
    """The client's poll: the last path segment of the URL, on the API, until done."""
    op_id = operation_url.rstrip("/").rsplit("/", 1)[-1]

    def finished() -> dict[str, Any] | None:
        operation: dict[str, Any] = client.request("GET", f"/apps/{app}/operations/{op_id}")[
            "operation"
        ]
        return operation if operation["status"] in ("done", "error") else None

    return wait_for(finished, timeout=30, interval=0.2, what="the one-off's operation")


@dataclass
class Session:
    output: bytes
    exit_code: int


def basic(jwt: str) -> str:
    return "Basic " + base64.b64encode(f":{jwt}".encode()).decode()


def connect_attach(attach_url: str, jwt: str) -> tuple[socket.socket, bytes]:
    """The client's hand-written CONNECT on a raw TCP connection; returns the socket
    (now a raw byte stream) and the response head."""
    parts = urlsplit(attach_url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=30)
    sock.sendall(
        (
            f"CONNECT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"User-Agent: Go-http-client/1.1\r\nAuthorization: {basic(jwt)}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing after the head is taken here
        if not chunk:
            break
        head += chunk
    return sock, head


def read_until_closed(sock: socket.socket, *, timeout: float = 30) -> bytes:
    sock.settimeout(timeout)
    output = b""
    while chunk := sock.recv(65536):
        output += chunk
    sock.close()
    return output


def resize_and_wait(attach_url: str, jwt: str) -> int:
    """After the stream: the terminal size (strings), then ``/wait`` for the exit code."""
    sized = httpx.put(
        attach_url, json={"width": "132", "height": "43"}, headers={"Authorization": basic(jwt)}
    )
    assert sized.status_code == 200, sized.text
    waited = httpx.get(f"{attach_url}/wait", headers={"Authorization": basic(jwt)}, timeout=60)
    assert waited.status_code == 200, waited.text
    code: int = waited.json()["exit_code"]
    return code


def run_attached(client: ScalingoClient, app: str, command: str, *, stdin: bytes = b"") -> Session:
    """``scalingo run <command>``, interactive, with ``stdin`` typed into it."""
    started = start_run(client, app, command, detached=False)
    operation = wait_operation(client, app, started.operation_url)
    assert operation["status"] == "done", operation
    assert operation["type"] == "start-one-off"
    attach_url = operation["start_one_off_data"]["attach_url"]
    sock, head = connect_attach(attach_url, client.jwt)
    assert head.startswith(b"HTTP/1.1 200"), head
    if stdin:
        sock.sendall(stdin)
    output = read_until_closed(sock)
    return Session(output=output, exit_code=resize_and_wait(attach_url, client.jwt))
