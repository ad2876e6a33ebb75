"""``run``: a one-off command in a new instance of the app, attached to this terminal
(or ``--detached``, its output then in ``dockyard logs --filter one-off-N``)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from dockyard.cli.client import attach
from dockyard.cli.client.appfile import resolve_app
from dockyard.cli.client.console import plain, stderr
from dockyard.cli.client.errors import ClientError, UsageError
from dockyard.cli.client.options import AppOption
from dockyard.cli.client.session import open_api

OPERATION_WAIT_SECONDS = 120


def run(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    app: AppOption = None,
    detached: Annotated[
        bool, typer.Option("--detached", "-d", help="Run in the background; output to the logs.")
    ] = False,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for this run (repeatable).")
    ] = None,
    size: Annotated[str, typer.Option("--size", "-s", help="The instance size.")] = "M",
) -> None:
    """Run a command in a one-off instance of the app's current release."""
    name = resolve_app(app)
    variables: dict[str, str] = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{item!r} is not KEY=VALUE.")
        variables[key] = value
    with open_api() as api:
        started = api.post(
            f"/v1/apps/{name}/run",
            {"command": " ".join(command), "env": variables, "size": size, "detached": detached},
        )
        label = started["container"]["label"]
        if detached:
            plain(
                stderr(),
                f"Started {label}; its output: dockyard logs --app {name} --filter {label}",
            )
            return
        operation = _wait(api.get, name, started["operation_url"])
        url: str = operation["start_one_off_data"]["attach_url"]
        jwt = api.jwt()
    sock = attach.open_session(url, jwt)
    attach.send_size(url, jwt)
    with attach.raw_terminal():
        attach.bridge(sock)
    code = attach.exit_code(url, jwt)
    if code:
        raise typer.Exit(code)  # the command's own status becomes ours


def _wait(get: Any, app: str, operation_url: str) -> dict[str, Any]:
    operation_id = operation_url.rstrip("/").rsplit("/", 1)[-1]
    deadline = time.monotonic() + OPERATION_WAIT_SECONDS
    while True:
        operation: dict[str, Any] = get(f"/v1/apps/{app}/operations/{operation_id}")["operation"]
        if operation["status"] == "done":
            return operation
        if operation["status"] == "error":
            raise ClientError(f"The one-off could not start: {operation['error']}")
        if time.monotonic() > deadline:
            raise ClientError("The one-off did not start in time.")
        time.sleep(0.2)


COMMANDS = {"run": run}
