"""``deployments``, ``deployment-logs``, ``deployment-follow``, ``deployment-delete-cache``,
``rollback``."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from dockyard.cli.client.appfile import resolve_app
from dockyard.cli.client.console import print_json, short_time, status_text, stdout
from dockyard.cli.client.errors import ClientError
from dockyard.cli.client.http import ApiClient
from dockyard.cli.client.options import AppOption, JsonOption
from dockyard.cli.client.session import open_api
from dockyard.cli.client.watch import watch

DeploymentArgument = Annotated[
    str | None, typer.Argument(help="The deployment's id (default: the latest).")
]


def deployments(
    app: AppOption = None,
    page: Annotated[int, typer.Option(min=1, help="Page number.")] = 1,
    per_page: Annotated[int, typer.Option(min=1, max=100, help="Deployments per page.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """List the app's deployments, newest first."""
    name = resolve_app(app)
    with open_api() as api:
        body = api.get(f"/v1/apps/{name}/deployments", {"page": page, "per_page": per_page})
    items: list[dict[str, Any]] = body["deployments"]
    pagination = body.get("meta", {}).get("pagination", {})
    if json_output:
        print_json(body)
        return
    out = stdout()
    if not items:
        out.print(
            f"No deployments of {escape(name)} on this page." if page > 1 else "No deployments yet."
        )
        return
    table = Table("Created", "Status", "Git ref", "Pusher", "Duration")
    # Ids are copied into other commands: never truncated, whatever the terminal width.
    table.columns.insert(0, Column("ID", no_wrap=True, min_width=max(len(i["id"]) for i in items)))
    for item in items:
        table.add_row(
            item["id"],
            short_time(item.get("created_at")),
            status_text(str(item.get("status"))),
            escape(str(item.get("git_ref") or "")),
            escape(str((item.get("pusher") or {}).get("username", ""))),
            f"{item.get('duration') or 0} s",
        )
    out.print(table)
    out.print(_page_line(pagination))


def _page_line(pagination: dict[str, Any]) -> str:
    line = (
        f"Page {pagination.get('current_page')} of {pagination.get('total_pages')} "
        f"({pagination.get('total_count')} deployments)."
    )
    if pagination.get("next_page"):
        line += f" Next: --page {pagination['next_page']}"
    return line


def latest_deployment_id(api: ApiClient, app: str) -> str:
    """Element 0 of the newest-first list, as the official client does."""
    items = api.get(f"/v1/apps/{app}/deployments", {"page": 1, "per_page": 1})["deployments"]
    if not items:
        raise ClientError(f"{app} has no deployments yet.", "Deploy it with `dockyard deploy`.")
    return str(items[0]["id"])


def deployment_logs(deployment: DeploymentArgument = None, app: AppOption = None) -> None:
    """Print a deployment's build log."""
    name = resolve_app(app)
    with open_api() as api:
        deployment_id = deployment or latest_deployment_id(api, name)
        text = api.text(f"/v1/apps/{name}/deployments/{deployment_id}/output")
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")


def deployment_follow(deployment: DeploymentArgument = None, app: AppOption = None) -> None:
    """Stream a deployment's build log until it ends (exit status 0 only on success)."""
    name = resolve_app(app)
    with open_api() as api:
        watch(api, name, deployment or latest_deployment_id(api, name))


def deployment_delete_cache(app: AppOption = None) -> None:
    """Empty the build cache: the next deployment builds from scratch."""
    name = resolve_app(app)
    with open_api() as api:
        api.delete(f"/v1/apps/{name}/caches/deployment")
    stdout().print(f"Build cache of {escape(name)} deleted.")


def rollback(
    deployment: Annotated[
        str | None,
        typer.Argument(
            help="The deployment whose release to start again (default: the one before the current)."
        ),
    ] = None,
    app: AppOption = None,
    follow: Annotated[
        bool, typer.Option("--follow/--no-follow", help="Stream the rollback's log.")
    ] = True,
) -> None:
    """Serve a previous (still kept) release again, without a build, as a new deployment."""
    name = resolve_app(app)
    with open_api() as api:
        body = {} if deployment is None else {"deployment_id": deployment}
        created = api.post(f"/v1/apps/{name}/rollback", body)["deployment"]
        stdout().print(
            f"Rollback [bold]{escape(created['id'])}[/] of {escape(name)} to the release of "
            f"deployment {escape(str(created.get('rollback_of')))} "
            f"({escape(str(created.get('git_ref')))}) created."
        )
        if not follow:
            stdout().print(f"Follow it with `dockyard deployment-follow {escape(created['id'])}`.")
            return
        watch(api, name, created["id"])


COMMANDS = {
    "rollback": rollback,
    "deployments": deployments,
    "deployment-logs": deployment_logs,
    "deployment-follow": deployment_follow,
    "deployment-delete-cache": deployment_delete_cache,
}
