"""``logs``: what the running app prints, and what its router answered.

The same endpoints as the official client (API-OPS.md §4): ``GET /v1/apps/{app}/logs``
gives a logs URL; the history is read from it, and ``--follow`` reads new lines from a
WebSocket at that URL."""

from __future__ import annotations

import json
import sys
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

import httpx
import typer
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import connect

from dockyard.cli.client.appfile import resolve_app
from dockyard.cli.client.errors import NetworkError
from dockyard.cli.client.http import USER_AGENT, raise_for_status, redact, transport_error
from dockyard.cli.client.options import AppOption
from dockyard.cli.client.session import open_api


def logs(
    app: AppOption = None,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many recent lines.")
    ] = 100,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    filter: Annotated[
        str,
        typer.Option(
            "--filter", "-F", help="Only these processes or types: web, web-1, web|worker, router."
        ),
    ] = "",
) -> None:
    """Print the running app's output (its processes, one-offs and router)."""
    name = resolve_app(app)
    with open_api() as api:
        url: str = api.get(f"/v1/apps/{name}/logs")["logs_url"]
    sys.stdout.write(_history(url, lines, filter))
    sys.stdout.flush()
    if follow:
        try:
            _follow(url, filter)
        except KeyboardInterrupt:
            return  # the way to stop following: not an error


def _history(url: str, lines: int, filter: str) -> str:
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    params: dict[str, str | int] = {"filter": filter, "n": lines}
    params.update({key: query[key] for key in ("token", "timestamp") if key in query})
    target = f"{parts.scheme}://{parts.netloc}{parts.path}"
    try:
        response = httpx.get(target, params=params, headers={"User-Agent": USER_AGENT}, timeout=30)
    except httpx.TransportError as exc:
        raise transport_error(exc, "GET", target) from None
    if response.status_code in (204, 404):
        return ""
    raise_for_status(response)
    return response.text


def _follow(url: str, filter: str) -> None:
    ws_url = "ws" + url[len("http") :] + "&stream=true"
    if filter:
        ws_url += f"&filter={filter}"
    try:
        with connect(ws_url, open_timeout=10, user_agent_header=USER_AGENT) as stream:
            for message in stream:
                frame = json.loads(message)
                if frame.get("event") == "log":
                    sys.stdout.write(str(frame.get("log", "")).rstrip("\n") + "\n")
                    sys.stdout.flush()
    except ConnectionClosed:
        return  # the server went away (it restarted, or the app was deleted)
    except (OSError, WebSocketException) as exc:
        raise NetworkError(f"Following the logs at {redact(url)} failed: {exc}.") from None


COMMANDS = {"logs": logs}
