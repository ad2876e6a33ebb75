"""``logs``: what the running app prints."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dockyard.cli.client.appfile import resolve_app
from dockyard.cli.client.options import AppOption
from dockyard.cli.client.session import open_api


def logs(
    app: AppOption = None,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=1, help="How many recent lines.")
    ] = 100,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
) -> None:
    """Print the running app's output (stdout and stderr of its processes)."""
    name = resolve_app(app)
    path = f"/v1/apps/{name}/logs"
    with open_api() as api:
        if not follow:
            text = api.text(path, {"lines": lines})
            sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
            return
        try:
            for line in api.stream_lines(path, {"lines": lines, "follow": "true"}):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            return  # the way to stop following: not an error


COMMANDS = {"logs": logs}
