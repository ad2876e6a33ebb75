"""``env``, ``env-set``, ``env-unset``: the app's environment variables."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli.client.appfile import resolve_app
from dockyard.cli.client.console import plain, print_json, stdout
from dockyard.cli.client.errors import UsageError
from dockyard.cli.client.options import AppOption, JsonOption
from dockyard.cli.client.session import open_api

APPLY_NOTE = "Running processes see the change after the next deployment or `dockyard restart`."


def env(app: AppOption = None, json_output: JsonOption = False) -> None:
    """List the app's environment variables."""
    with open_api() as api:
        items: list[dict[str, Any]] = api.get(f"/v1/apps/{resolve_app(app)}/variables")["variables"]
    items.sort(key=lambda item: str(item.get("name")))
    if json_output:
        print_json({item["name"]: item["value"] for item in items})
        return
    out = stdout()
    for item in items:
        plain(out, f"{item['name']}={item['value']}")


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(
                f"{pair!r} is not NAME=VALUE.",
                "Example: dockyard env-set DEBUG=1 'GREETING=hello world'",
            )
        values[name] = value
    return values


def env_set(
    pairs: Annotated[list[str], typer.Argument(help="NAME=VALUE pairs.", metavar="NAME=VALUE...")],
    app: AppOption = None,
) -> None:
    """Set environment variables."""
    values = parse_assignments(pairs)
    name = resolve_app(app)
    body = {"variables": [{"name": key, "value": value} for key, value in values.items()]}
    with open_api() as api:
        api.put(f"/v1/apps/{name}/variables", body)
    stdout().print(f"Set {escape(', '.join(values))} on {escape(name)}. {APPLY_NOTE}")


def env_unset(
    names: Annotated[list[str], typer.Argument(help="Variable names.", metavar="NAME...")],
    app: AppOption = None,
) -> None:
    """Remove environment variables."""
    app_name = resolve_app(app)
    with open_api() as api:
        items = api.get(f"/v1/apps/{app_name}/variables")["variables"]
        ids = {item["name"]: item["id"] for item in items}
        # All names are checked before anything is deleted: no half-done unset.
        unknown = [name for name in names if name not in ids]
        if unknown:
            raise UsageError(
                f"{app_name} has no variable {', '.join(unknown)}.", "`dockyard env` lists them."
            )
        for name in dict.fromkeys(names):
            api.delete(f"/v1/apps/{app_name}/variables/{ids[name]}")
    stdout().print(
        f"Removed {escape(', '.join(dict.fromkeys(names)))} from {escape(app_name)}. {APPLY_NOTE}"
    )


COMMANDS = {"env": env, "env-set": env_set, "env-unset": env_unset}
