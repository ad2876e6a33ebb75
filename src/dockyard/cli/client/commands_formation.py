"""``ps``, ``scale``, ``restart``: an app's running instances and its formation."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dockyard.cli.client.appfile import resolve_app
from dockyard.cli.client.console import plain, print_json, short_time, stdout
from dockyard.cli.client.errors import UsageError
from dockyard.cli.client.http import ApiClient
from dockyard.cli.client.options import AppOption, JsonOption
from dockyard.cli.client.session import open_api

_SCALE_ARG = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]*):(?P<amount>\d+)(?::(?P<size>[A-Z0-9]+))?$")
OPERATION_WAIT_SECONDS = 120


def ps(app: AppOption = None, json_output: JsonOption = False) -> None:
    """List the app's instances: name, state, size, command."""
    with open_api() as api:
        containers: list[dict[str, Any]] = api.get(f"/v1/apps/{resolve_app(app)}/ps")["containers"]
    if json_output:
        print_json(containers)
        return
    table = Table("Name", "State", "Size", "Command", "Started", box=None)
    for item in containers:
        table.add_row(
            escape(item["label"]),
            escape(item["state"]),
            escape(item["container_size"]["name"]),
            escape(item["command"]),
            short_time(item["created_at"]),
        )
    stdout().print(table)


def parse_scale(args: list[str]) -> list[dict[str, Any]]:
    """``web:3``, ``web:2:L``, ``worker:0`` as the API's items."""
    items = []
    for arg in args:
        match = _SCALE_ARG.match(arg)
        if match is None:
            raise UsageError(f"{arg!r} is not TYPE:AMOUNT or TYPE:AMOUNT:SIZE (e.g. web:3:L).")
        items.append(
            {
                "name": match["name"],
                "amount": int(match["amount"]),
                "size": match["size"] or "",
            }
        )
    return items


def scale(
    changes: Annotated[list[str], typer.Argument(help="TYPE:AMOUNT[:SIZE], e.g. web:3 worker:0")],
    app: AppOption = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until every instance runs.")
    ] = True,
) -> None:
    """Change how many instances of each process type run, and their size."""
    name = resolve_app(app)
    with open_api() as api:
        response = api.request(
            "POST", f"/v1/apps/{name}/scale", json={"containers": parse_scale(changes)}
        )
        out = stdout()
        for item in response.json()["containers"]:
            plain(out, f"{item['name']}: {item['amount']} - {item['size']}")
        if wait:
            _wait(api, name, response.headers.get("location", ""))
    plain(out, f"{name} is scaled.")


def restart(
    scope: Annotated[
        list[str] | None, typer.Argument(help="Types or instances (web, worker-2); all if none.")
    ] = None,
    app: AppOption = None,
) -> None:
    """Restart the app's instances (all, or those of the types or names given)."""
    name = resolve_app(app)
    with open_api() as api:
        response = api.request("POST", f"/v1/apps/{name}/restart", json={"scope": scope or []})
        _wait(api, name, response.headers.get("location", ""))
    stdout().print(f"Restarted {escape(name)}.")


def _wait(api: ApiClient, app: str, location: str) -> None:
    """Poll the operation the server named until it is done; an error is the command's."""
    operation_id = location.rstrip("/").rsplit("/", 1)[-1]
    if not operation_id:
        return
    deadline = time.monotonic() + OPERATION_WAIT_SECONDS
    while time.monotonic() < deadline:
        operation = api.get(f"/v1/apps/{app}/operations/{operation_id}")["operation"]
        if operation["status"] == "done":
            return
        if operation["status"] == "error":
            raise UsageError(f"The {operation['type']} failed: {operation['error']}")
        time.sleep(0.25)
    raise UsageError(
        f"The operation did not end within {OPERATION_WAIT_SECONDS} s; see `dockyard ps`."
    )


COMMANDS = {"ps": ps, "scale": scale, "restart": restart}
