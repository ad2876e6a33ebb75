"""``addons``, ``addons-plans``, ``addons-add``, ``addons-upgrade``, ``addons-remove``, ``addons-backup``,
``addons-backups``, ``addons-restore``: the app's databases. An ADDON argument is its id
(``ad-…``) or its provider's name (``postgresql``, ``redis``), as in Scalingo's client."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from dockyard.cli.client.appfile import resolve_app
from dockyard.cli.client.console import print_json, short_time, stdout
from dockyard.cli.client.errors import UsageError
from dockyard.cli.client.options import AppOption, JsonOption, YesOption
from dockyard.cli.client.session import open_api

AddonArgument = Annotated[
    str, typer.Argument(help="The addon's id (ad-…) or its provider (postgresql, redis).")
]


def addons(app: AppOption = None, json_output: JsonOption = False) -> None:
    """List the app's addons."""
    with open_api() as api:
        items: list[dict[str, Any]] = api.get(f"/v1/apps/{resolve_app(app)}/addons")["addons"]
    if json_output:
        print_json(items)
        return
    if not items:
        stdout().print("No addons: add one with `dockyard addons-add postgresql PLAN`.")
        return
    table = Table("Addon", Column("ID", no_wrap=True), "Plan", "Status", "Provisioned")
    for item in items:
        table.add_row(
            item["addon_provider"]["name"],
            item["id"],
            item["plan"]["name"],
            item["status"],
            short_time(item.get("provisioned_at")),
        )
    stdout().print(table)


def addons_plans(
    provider: Annotated[str, typer.Argument(help="postgresql or redis.")],
    json_output: JsonOption = False,
) -> None:
    """List a provider's plans."""
    with open_api() as api:
        plans: list[dict[str, Any]] = api.get(f"/v1/addon_providers/{provider}/plans")["plans"]
    if json_output:
        print_json(plans)
        return
    table = Table(Column("Plan", no_wrap=True), "Name", "Limits")
    for plan in plans:
        table.add_row(plan["name"], plan["display_name"], plan["description"])
    stdout().print(table)


def addons_add(
    provider: Annotated[str, typer.Argument(help="postgresql or redis.")],
    plan: Annotated[str, typer.Argument(help="A plan of `dockyard addons-plans PROVIDER`.")],
    app: AppOption = None,
) -> None:
    """Provision a database for the app; its URL goes into the app's variables."""
    name = resolve_app(app)
    body = {"addon": {"addon_provider_id": provider, "plan_id": plan}}
    with open_api() as api:
        done = api.post(f"/v1/apps/{name}/addons", body)
    out = stdout()
    out.print(f"Added {escape(provider)} ({escape(plan)}) to {escape(name)}: {done['addon']['id']}")
    out.print(f"Variables set: {escape(', '.join(done['variables']))}; the app restarts with them.")


def addons_upgrade(
    addon: AddonArgument,
    plan: Annotated[str, typer.Argument(help="A plan of `dockyard addons-plans PROVIDER`.")],
    app: AppOption = None,
) -> None:
    """Change an addon's plan: its server restarts with the new limits, on its data."""
    name = resolve_app(app)
    with open_api() as api:
        api.patch(f"/v1/apps/{name}/addons/{addon}", {"addon": {"plan_id": plan}})
    stdout().print(f"The addon {escape(addon)} of {escape(name)} is now on {escape(plan)}.")


def addons_remove(addon: AddonArgument, app: AppOption = None, yes: YesOption = False) -> None:
    """Remove an addon: the variables go first, then its data (for good)."""
    name = resolve_app(app)
    if not yes and not typer.confirm(f"Remove the addon {addon} of {name} and delete its data?"):
        raise UsageError("Nothing removed.")
    with open_api() as api:
        api.delete(f"/v1/apps/{name}/addons/{addon}")
    stdout().print(f"Removed the addon {escape(addon)} of {escape(name)}, and its data.")


def addons_backup(addon: AddonArgument, app: AppOption = None) -> None:
    """Back an addon's data up (pg_dump, or a Redis snapshot) into the server's blob store."""
    name = resolve_app(app)
    with open_api() as api:
        made = api.post(f"/v1/apps/{name}/addons/{addon}/backups")["backup"]
    stdout().print(
        f"Backup {made['id']} of {escape(addon)}: {made['size']} bytes. Restore it with "
        f"`dockyard addons-restore ADDON {made['id']}`."
    )


def addons_backups(app: AppOption = None, json_output: JsonOption = False) -> None:
    """List the app's addon backups, newest first."""
    with open_api() as api:
        items: list[dict[str, Any]] = api.get(f"/v1/apps/{resolve_app(app)}/addon_backups")[
            "backups"
        ]
    if json_output:
        print_json(items)
        return
    table = Table(Column("ID", no_wrap=True), "Provider", "Of addon", "Size", "Made")
    for item in items:
        table.add_row(
            item["id"],
            item["addon_provider_id"],
            item["addon_id"],
            str(item["size"]),
            short_time(item["created_at"]),
        )
    stdout().print(table)


def addons_restore(
    addon: AddonArgument,
    backup: Annotated[str, typer.Argument(help="A backup id of `dockyard addons-backups`.")],
    app: AppOption = None,
    yes: YesOption = False,
) -> None:
    """Put a backup of the app's back into an addon (of the same provider)."""
    name = resolve_app(app)
    if not yes and not typer.confirm(f"Replace the data of {addon} with backup {backup}?"):
        raise UsageError("Nothing restored.")
    with open_api() as api:
        api.post(f"/v1/apps/{name}/addons/{addon}/restore", {"backup_id": backup})
    stdout().print(f"Restored backup {escape(backup)} into {escape(addon)}.")


COMMANDS = {
    "addons": addons,
    "addons-plans": addons_plans,
    "addons-add": addons_add,
    "addons-upgrade": addons_upgrade,
    "addons-remove": addons_remove,
    "addons-backup": addons_backup,
    "addons-backups": addons_backups,
    "addons-restore": addons_restore,
}
