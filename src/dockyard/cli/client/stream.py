"""Following a deployment live over the app's WebSocket stream (docs/api.md, "The deployment stream").

:class:`Follower` turns events into output for one deployment and knows nothing of
sockets, so it is tested alone. :func:`follow` connects, authenticates with the JWT and
feeds it; when the socket closes before a final status it reconnects, and since the
server replays every stored line on connection, the lines already printed are skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from dockyard.cli.client.console import IN_PROGRESS, plain, status_text
from dockyard.cli.client.errors import LOGIN_HINT, ClientError, NetworkError
from dockyard.cli.client.http import ApiClient

CLOSE_AUTH_FAILED = 4001
CLOSE_NOT_FOUND = 4004
MAX_RECONNECTS = 5
OPEN_TIMEOUT = 10.0
MAX_FRAME_BYTES = 4 * 1024 * 1024  # a replay frame holds a full deployment object


def is_final(status: str) -> bool:
    return status not in IN_PROGRESS


class Follower:
    """Prints the log lines and status changes of one deployment; ``final`` once it ends.

    Each new connection replays the deployment's lines and statuses from the start, in
    order; counting what this connection has sent tells what was already printed.
    """

    def __init__(self, deployment_id: str, out: Console) -> None:
        self.deployment_id = deployment_id
        self.out = out
        self.lines_printed = 0
        self.statuses: list[str] = []  # every status printed, over every connection
        self._lines_this_connection = 0
        self._statuses_this_connection = 0
        # Buildpacks and the runner mark failures with " !" lines (Heroku's convention);
        # the first line of the last such block is the reason.
        self.reason = ""
        self._in_error_block = False

    @property
    def status(self) -> str | None:
        return self.statuses[-1] if self.statuses else None

    @property
    def final(self) -> str | None:
        return self.status if self.status is not None and is_final(self.status) else None

    def connected(self) -> None:
        self._lines_this_connection = 0
        self._statuses_this_connection = 0

    def handle(self, event: Any) -> None:
        if not isinstance(event, dict) or event.get("id") != self.deployment_id:
            return
        data = event.get("data")
        if not isinstance(data, dict):
            return
        if event.get("type") == "log":
            self.log_line(str(data.get("content", "")))
        elif event.get("type") == "status" and isinstance(data.get("status"), str):
            self._statuses_this_connection += 1
            if self._statuses_this_connection > len(self.statuses):
                self._print_status(data["status"])

    def log_line(self, line: str) -> None:
        self._lines_this_connection += 1
        if self._lines_this_connection <= self.lines_printed:
            return
        plain(self.out, line.rstrip("\n"))
        self.lines_printed += 1
        is_error = line.lstrip().startswith("!")
        if is_error and not self._in_error_block:
            self.reason = line.strip().lstrip("!").strip()
        self._in_error_block = is_error

    def final_status(self, status: str) -> None:
        """The status read from the API after the stream closed early."""
        if status != self.status:
            self._print_status(status)

    def _print_status(self, status: str) -> None:
        self.statuses.append(status)
        self.out.print(f"[bold]==>[/] Deployment status: {status_text(status)}")


def follow(
    api: ApiClient,
    app: str,
    follower: Follower,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Stream until the deployment reaches a final status, and return it."""
    stream_url = api.get(f"/v1/apps/{app}")["app"]["links"]["deployments_stream"]
    failures = 0
    while True:
        try:
            _stream_once(api, stream_url, follower)
        except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
            _raise_if_refused(exc)
            reason = str(exc) or type(exc).__name__
        except InvalidURI:
            raise ClientError(f"The server gave an invalid stream URL: {stream_url}.") from None
        else:
            reason = "the server closed the stream"
        if follower.final:
            return follower.final
        # Closed early: the deployment may have finished meanwhile; the API says for sure.
        if _catch_up(api, app, follower):
            return follower.final or ""
        failures += 1
        if failures > MAX_RECONNECTS:
            raise NetworkError(
                f"The deployment stream {stream_url} keeps closing ({reason}).",
                f"The deployment goes on: `dockyard deployment-follow {follower.deployment_id}` "
                f"or `dockyard deployment-logs {follower.deployment_id}`.",
            )
        sleep(min(2.0**failures, 10.0))


def _stream_once(api: ApiClient, stream_url: str, follower: Follower) -> None:
    with connect(
        stream_url, open_timeout=OPEN_TIMEOUT, max_size=MAX_FRAME_BYTES, proxy=None
    ) as socket:
        socket.send(json.dumps({"type": "auth", "data": {"token": api.jwt()}}) + "\n")
        follower.connected()
        for raw in socket:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # not an event of the protocol: nothing to show
            follower.handle(event)
            if follower.final:
                return


def _raise_if_refused(exc: Exception) -> None:
    if not isinstance(exc, ConnectionClosed) or exc.rcvd is None:
        return
    if exc.rcvd.code == CLOSE_AUTH_FAILED:
        raise ClientError("The deployment stream refused the token.", LOGIN_HINT)
    if exc.rcvd.code == CLOSE_NOT_FOUND:
        raise ClientError("The deployment stream does not know this app.")


def _catch_up(api: ApiClient, app: str, follower: Follower) -> bool:
    """Print what the stream missed when the deployment is over; True if it is."""
    deployment = api.get(f"/v1/apps/{app}/deployments/{follower.deployment_id}")["deployment"]
    if not is_final(deployment["status"]):
        return False
    output = api.text(f"/v1/apps/{app}/deployments/{follower.deployment_id}/output")
    follower.connected()
    for line in output.splitlines():
        follower.log_line(line)
    follower.final_status(deployment["status"])
    return True
