"""``create``, ``apps``, ``destroy``, ``open``."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from dockyard.cli.client.appfile import (
    APP_FILE,
    find_app_file,
    read_app_file,
    resolve_app,
    write_app_file,
)
from dockyard.cli.client.console import plain, print_json, short_time, stdout
from dockyard.cli.client.errors import UsageError
from dockyard.cli.client.options import AppOption, JsonOption, YesOption
from dockyard.cli.client.session import open_api


def create(
    name: Annotated[str, typer.Argument(help="The new app's name.")],
    link: Annotated[
        bool, typer.Option(help=f"Write a {APP_FILE} file here naming the app.")
    ] = True,
) -> None:
    """Create an app (and link this directory to it)."""
    with open_api() as api:
        app = api.post("/v1/apps", {"app": {"name": name}})["app"]
    out = stdout()
    out.print(
        f"Created app [bold]{escape(app['name'])}[/], served at {escape(str(app.get('url')))}"
    )
    if link:
        _link(Path.cwd(), app["name"])


def _link(directory: Path, name: str) -> None:
    existing = directory / APP_FILE
    if existing.is_file() and read_app_file(existing) != name:
        stdout().print(
            f"Kept {APP_FILE}, which names another app; pass --app {escape(name)} to use this one."
        )
        return
    write_app_file(directory, name)
    stdout().print(
        f"Wrote {APP_FILE}: commands run in {escape(str(directory))} now use {escape(name)}."
    )


def apps(json_output: JsonOption = False) -> None:
    """List your apps."""
    with open_api() as api:
        items: list[dict[str, Any]] = api.get("/v1/apps")["apps"]
    if json_output:
        print_json(items)
        return
    if not items:
        stdout().print("No apps yet: create one with `dockyard create NAME`.")
        return
    # Names and URLs are copied into other commands: never truncated.
    table = Table(Column("Name", no_wrap=True), "Status", Column("URL", no_wrap=True), "Created")
    for app in items:
        table.add_row(
            app["name"],
            str(app.get("status", "")),
            str(app.get("url", "")),
            short_time(app.get("created_at")),
        )
    stdout().print(table)


def destroy(
    name: Annotated[str | None, typer.Argument(help="The app to destroy.")] = None,
    app: AppOption = None,
    yes: YesOption = False,
) -> None:
    """Destroy an app: its processes, deployments and settings."""
    target = name or resolve_app(app)
    if not yes and not typer.confirm(
        f"Destroy the app {target}, its running processes and all its deployments?"
    ):
        raise UsageError("Nothing destroyed.")
    with open_api() as api:
        api.delete(f"/v1/apps/{target}")
    stdout().print(f"Destroyed app {escape(target)}.")
    _unlink(Path.cwd(), target)


def _unlink(directory: Path, name: str) -> None:
    found = find_app_file(directory)
    if found is not None and found.parent == directory and read_app_file(found) == name:
        found.unlink()
        stdout().print(f"Removed {APP_FILE}, which named it.")


def open_app(
    app: AppOption = None,
    browser: Annotated[
        bool, typer.Option("--browser", help="Also open it in a web browser.")
    ] = False,
) -> None:
    """Print the app's URL."""
    with open_api() as api:
        url = api.get(f"/v1/apps/{resolve_app(app)}")["app"]["url"]
    plain(stdout(), url)
    if browser:
        webbrowser.open(url)


COMMANDS = {
    "create": create,
    "apps": apps,
    "destroy": destroy,
    "open": open_app,
}
