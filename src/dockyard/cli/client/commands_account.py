"""``login``, ``logout``, ``whoami``."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.markup import escape

from dockyard.cli.client import config
from dockyard.cli.client.console import stderr, stdout
from dockyard.cli.client.errors import ClientError
from dockyard.cli.client.http import ApiClient
from dockyard.cli.client.session import open_api
from dockyard.cli.client.tokens import CachedJwt, TokenManager, fingerprint


def login(
    api_url: Annotated[str | None, typer.Option("--api-url", help="The server's API URL.")] = None,
    api_token: Annotated[
        str | None, typer.Option("--api-token", help="Your API token (asked for when not given).")
    ] = None,
) -> None:
    """Check an API token against a server and store both in the configuration file."""
    path = config.config_path(os.environ)
    try:
        data = config.load(path)
    except ClientError:
        data = {}  # a broken file is exactly what login rewrites
    if not api_url:
        default = (
            os.environ.get("DOCKYARD_API_URL") or data.get("api_url") or config.DEFAULT_API_URL
        )
        api_url = typer.prompt("API URL", default=default)
    if not api_token:
        api_token = typer.prompt("API token", hide_input=True)
    creds = config.Credentials(api_url=config.normalize_url(api_url), api_token=api_token.strip())

    issued: list[CachedJwt] = []
    with ApiClient(creds.api_url, creds.api_token) as client:
        client.tokens = TokenManager(
            fingerprint=fingerprint(creds.api_url, creds.api_token),
            exchange=client.exchange,
            on_renew=issued.append,
        )
        user = client.get("/v1/users/self").get("user", {})
    data.update(api_url=creds.api_url, api_token=creds.api_token)
    if issued:
        data["jwt"] = issued[-1].as_dict()
    config.save(path, data)
    stdout().print(
        f"Logged in as {_describe(user)} on {escape(creds.api_url)}.\n"
        f"Credentials saved in {escape(str(path))}."
    )
    if os.environ.get("DOCKYARD_API_URL") or os.environ.get("DOCKYARD_API_TOKEN"):
        stderr().print(
            "[yellow]Note:[/] DOCKYARD_API_URL / DOCKYARD_API_TOKEN are set and override the file."
        )


def logout() -> None:
    """Forget the stored API token."""
    path = config.config_path(os.environ)
    if path.exists():
        path.unlink()
        stdout().print(f"Removed {escape(str(path))}.")
    else:
        stdout().print("Not logged in: nothing to remove.")


def whoami() -> None:
    """Show the user the configured token belongs to."""
    with open_api() as api:
        user = api.get("/v1/users/self").get("user", {})
        stdout().print(f"{_describe(user)} on {escape(api.base_url)}")


def _describe(user: dict[str, Any]) -> str:
    return f"[bold]{escape(str(user.get('username')))}[/] ({escape(str(user.get('email')))})"


COMMANDS = {"login": login, "logout": logout, "whoami": whoami}
