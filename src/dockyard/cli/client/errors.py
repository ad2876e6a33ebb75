"""The client's error tree, and the one place where errors become words.

    ClientError                 anything expected: printed as "Error: …", no traceback
    ├── NotLoggedIn             no API URL or token configured
    ├── UsageError              a wrong argument, a missing .dockyard file (exit 2)
    ├── NetworkError            the server could not be reached (URL + what to check)
    ├── ApiError                the server answered with an error status
    │   └── AuthFailed          401: the token was refused (run `dockyard login`)
    └── DeploymentFailed        a deployment ended in a status other than success

Commands raise these; :func:`reported` (applied to every command by ``register``) is the
only place that prints them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

P = ParamSpec("P")
T = TypeVar("T")

LOGIN_HINT = "Run `dockyard login` (or set DOCKYARD_API_URL and DOCKYARD_API_TOKEN)."


class ClientError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class NotLoggedIn(ClientError):
    def __init__(self) -> None:
        super().__init__("Not logged in to a dockyard server.", LOGIN_HINT)


class UsageError(ClientError):
    exit_code = 2


class NetworkError(ClientError):
    pass


class DeploymentFailed(ClientError):
    pass


class ApiError(ClientError):
    def __init__(self, status: int, body: Any, *, method: str, url: str, hint: str = "") -> None:
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        super().__init__(describe_api_error(status, body, method=method, url=url), hint)

    @property
    def resource(self) -> str | None:
        value = self.body.get("resource") if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None


class AuthFailed(ApiError):
    pass


def describe_api_error(status: int, body: Any, *, method: str, url: str) -> str:
    """An error body of docs/api.md in words (``body`` is parsed JSON, or text when it was not)."""
    if isinstance(body, dict):
        resource = body.get("resource")
        if status == 404 and resource == "route":
            # Starlette's own 404: the path does not exist on this server at all.
            path = _path(url)
            return f"The server does not provide {method} {path} (404): it may be an older version."
        if status == 404 and isinstance(resource, str):
            return _not_found(resource, url)
        errors = body.get("errors")
        if isinstance(errors, dict) and errors:
            return "; ".join(_field_errors(errors))
        message = body.get("error")
        if isinstance(message, str) and message:
            return message
    text = body.strip() if isinstance(body, str) else json.dumps(body)
    snippet = f": {text[:300]}" if text else ""
    return f"The server answered {status} to {method} {url}{snippet}"


def _field_errors(errors: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for field, messages in errors.items():
        items = messages if isinstance(messages, list) else [messages]
        lines.extend(f"{field}: {message}" for message in items)
    return lines


def _not_found(resource: str, url: str) -> str:
    parts = _path(url).strip("/").split("/")
    # /v1/apps/NAME… names the app the user asked for; say which one.
    if resource == "app" and len(parts) >= 3 and parts[1] == "apps":
        return f"app not found: there is no app named {parts[2]!r} in your account"
    return f"{resource} not found"


def _path(url: str) -> str:
    without_query = url.split("?", 1)[0]
    if "://" in without_query:
        without_query = "/" + without_query.split("://", 1)[1].partition("/")[2]
    return without_query


def render(error: ClientError) -> str:
    text = f"[bold red]Error:[/] {escape(error.message)}"
    if error.hint:
        text += f"\n{escape(error.hint)}"
    return text


def reported(command: Callable[P, T]) -> Callable[P, T]:
    """Run ``command``, printing an expected failure in words with a non-zero exit status."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except ClientError as error:
            Console(stderr=True, highlight=False).print(render(error), soft_wrap=True)
            raise typer.Exit(error.exit_code) from None

    return wrapper
