"""Watching a deployment to its end from a command: Ctrl-C, and the outcome in words."""

from __future__ import annotations

import sys

import click
import typer
from rich.markup import escape

from dockyard.cli.client.console import stderr, stdout
from dockyard.cli.client.errors import DeploymentFailed
from dockyard.cli.client.http import ApiClient
from dockyard.cli.client.stream import Follower, follow

EXIT_DETACHED = 130  # interrupted by the user, outcome unknown

REASONS = {
    "build-error": "the build failed (fetching or unpacking the archive, or the buildpack)",
    "crashed-error": "the app exited while it was starting",
    "timeout-error": "the app did not accept connections on $PORT in time",
    "hook-error": "the postdeploy hook failed (its output is above)",
    "aborted": "it was cancelled or interrupted",
}


def watch(api: ApiClient, app: str, deployment_id: str) -> None:
    """Follow until a final status; return on success, raise DeploymentFailed otherwise."""
    follower = Follower(deployment_id, stdout())
    try:
        status = follow(api, app, follower)
    except KeyboardInterrupt:
        if not _cancel_wanted(deployment_id):
            _detach(app, deployment_id)
        api.post(f"/v1/apps/{app}/deployments/{deployment_id}/cancel")
        stderr().print("Cancellation requested; waiting for the deployment to stop.")
        status = follow(api, app, follower)  # a second Ctrl-C ends the command at once
    report(api, app, deployment_id, status, follower.reason)


def _cancel_wanted(deployment_id: str) -> bool:
    if not sys.stdin.isatty():
        return False  # nobody to ask: leave the deployment alone
    try:
        return typer.confirm(f"\nCancel deployment {deployment_id}?", default=False)
    except click.exceptions.Abort:
        return False


def _detach(app: str, deployment_id: str) -> None:
    command = f"dockyard deployment-follow {deployment_id} --app {app}"
    stderr().print(
        f"Detached: deployment {escape(deployment_id)} goes on. "
        f"Follow it again with `{escape(command)}`."
    )
    raise typer.Exit(EXIT_DETACHED)


def report(api: ApiClient, app: str, deployment_id: str, status: str, detail: str = "") -> None:
    if status == "success":
        url = api.get(f"/v1/apps/{app}")["app"].get("url", "")
        stdout().print(f"[bold green]Deployed.[/] {escape(app)} is running at {escape(str(url))}")
        return
    reason = REASONS.get(status, "it did not succeed")
    message = f"Deployment {deployment_id} ended with status {status}: {reason}."
    if detail:
        message += f"\nReason: {detail}"
    raise DeploymentFailed(
        message,
        f"The log is above; all of it: `dockyard deployment-logs {deployment_id} --app {app}`.",
    )
