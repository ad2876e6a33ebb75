"""The client side of the ``dockyard`` command: talks to a dockyard server over its API.

``register`` adds every client command to the main typer app; each is wrapped by
:func:`errors.reported`, the one place where an expected failure becomes a message.
"""

from __future__ import annotations

import typer

from dockyard.cli.client import (
    commands_account,
    commands_addons,
    commands_apps,
    commands_deploy,
    commands_deployments,
    commands_env,
    commands_formation,
    commands_logs,
    commands_run,
)
from dockyard.cli.client.errors import reported

MODULES = (
    commands_account,
    commands_apps,
    commands_env,
    commands_deploy,
    commands_deployments,
    commands_formation,
    commands_logs,
    commands_run,
    commands_addons,
)


def register(app: typer.Typer) -> None:
    for module in MODULES:
        for name, command in module.COMMANDS.items():
            app.command(name)(reported(command))
