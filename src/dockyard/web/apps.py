"""The apps list and an app's page, and the forms on them: each calls the service the
matching API route calls, with the signed-in user as ``owner``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dockyard import errors as e
from dockyard.domain.records import AppRecord, UserRecord
from dockyard.platform import Platform
from dockyard.services import apps as apps_service
from dockyard.services import deployments as deployments_service
from dockyard.services import formation, lifecycle
from dockyard.web import charts, security
from dockyard.web.common import (
    Handler,
    Visitor,
    in_words,
    page,
    platform_of,
    redirect,
    render,
    signed_in,
    status_of,
)
from dockyard.web.forms import read_form

# What a finished action says on the page it returns to (a fixed table: the query string
# names an entry, it never carries text of its own).
NOTICES = {
    "created": "The app is created. Deploy it by dropping a .tar.gz archive below.",
    "scaled": "Scaling requested: the instances start or stop in a moment.",
    "restarted": "Restart requested: the instances restart in a moment.",
    "variable-saved": (
        "The variable is saved: the app runs with it once restarted (or at its next deployment)."
    ),
    "variable-removed": (
        "The variable is removed: the app runs without it once restarted (or at its next "
        "deployment)."
    ),
    "cache-reset": "The build cache is reset: the next deployment builds from scratch.",
}


@dataclass(frozen=True)
class AppSection:
    """A section of the app page that a feature adds (domains, addons): its heading, its
    template, and what the template is given. None exists yet; a feature appends its own
    to ``APP_SECTIONS`` and the app page shows it under the variables."""

    title: str
    template: str
    load: Callable[[Platform, UserRecord, AppRecord], Mapping[str, Any]] = field(
        default=lambda _platform, _user, _app: {}
    )


APP_SECTIONS: list[AppSection] = []


def _apps_view(platform: Platform, user: UserRecord) -> dict[str, Any]:
    apps = apps_service.list_apps(db=platform.db, owner=user)
    return {
        "apps": [
            (
                app,
                lifecycle.app_status(platform.processes, app.name) or app.status,
                platform.settings.app_url(app.name),
            )
            for app in apps
        ]
    }


async def _apps_page(
    request: Request, visitor: Visitor, *, error: str = "", status: int = 200, name: str = ""
) -> Response:
    platform = platform_of(request)
    view = await run_in_threadpool(_apps_view, platform, visitor.user)
    return render(
        request, "apps.html", status=status, visitor=visitor, error=error, name=name, **view
    )


@page
async def apps_page(request: Request) -> Response:
    return await _apps_page(request, await signed_in(request))


@page
async def create_app(request: Request) -> Response:
    visitor = await signed_in(request)
    platform = platform_of(request)
    form = await read_form(request)
    security.check_csrf(platform.jwt_key, visitor.session_secret, form.get("csrf", ""))
    name = form.get("name", "").strip()
    try:
        app = await run_in_threadpool(
            lambda: apps_service.create_app(
                db=platform.db,
                owner=visitor.user,
                name=name,
                max_apps=platform.settings.max_apps_per_user,
            )
        )
    except e.DockyardError as exc:
        if isinstance(exc, e.Unauthenticated):
            raise
        return await _apps_page(
            request, visitor, error=in_words(exc), status=status_of(exc), name=name
        )
    return redirect(f"/apps/{quote(app.name)}?done=created")


def _app_view(platform: Platform, user: UserRecord, name: str) -> dict[str, Any]:
    app = apps_service.find_app(db=platform.db, owner=user, name=name)
    _, types = formation.process_types(db=platform.db, owner=user, app_name=name)
    _, instances = lifecycle.instances(
        db=platform.db, processes=platform.processes, owner=user, name=name
    )
    recent = deployments_service.list_deployments(
        db=platform.db, owner=user, app_name=name, page=1, per_page=10
    )
    variables = apps_service.list_variables(db=platform.db, owner=user, app_name=name)
    sections = [(section, dict(section.load(platform, user, app))) for section in APP_SECTIONS]
    return {
        "app": app,
        "app_status": lifecycle.app_status(platform.processes, name) or app.status,
        "app_url": platform.settings.app_url(name),
        "types": types,
        "instances": instances,
        "deployments": recent.items,
        "deployment_count": recent.total_count,
        "variables": variables,
        "sections": sections,
        "runs_apps": platform.processes is not None,
        "durations_chart": charts.deployment_durations(recent.items),
        "memory_chart": charts.instance_memory([(t.name, t.amount, t.size) for t in types]),
        "max_source_bytes": platform.settings.max_source_bytes,
    }


async def _app_page(
    request: Request, visitor: Visitor, name: str, *, error: str = "", status: int = 200
) -> Response:
    platform = platform_of(request)
    view = await run_in_threadpool(_app_view, platform, visitor.user, name)
    notice = NOTICES.get(request.query_params.get("done", ""), "") if not error else ""
    return render(
        request, "app.html", status=status, visitor=visitor, error=error, notice=notice, **view
    )


@page
async def app_page(request: Request) -> Response:
    return await _app_page(request, await signed_in(request), request.path_params["app"])


Action = Callable[[Platform, UserRecord, str, dict[str, str]], str]


def app_action(perform: Action) -> Handler:
    """A form on the app page: CSRF checked, then ``perform`` (a blocking call into the
    services) returns the notice to show; a refusal shows the app page with the reason."""

    @page
    async def endpoint(request: Request) -> Response:
        visitor = await signed_in(request)
        platform = platform_of(request)
        form = await read_form(request)
        security.check_csrf(platform.jwt_key, visitor.session_secret, form.get("csrf", ""))
        name = request.path_params["app"]
        try:
            notice = await run_in_threadpool(perform, platform, visitor.user, name, form)
        except (e.Unauthenticated, e.NotFound):
            raise
        except e.DockyardError as exc:
            return await _app_page(
                request, visitor, name, error=in_words(exc), status=status_of(exc)
            )
        return redirect(f"/apps/{quote(name)}?done={notice}")

    return endpoint


def scale(platform: Platform, user: UserRecord, name: str, form: dict[str, str]) -> str:
    raw = form.get("amount", "").strip()
    if not raw.isdigit():
        raise e.ValidationFailed({"amount": ["must be a whole number of instances"]})
    item: dict[str, object] = {"name": form.get("type", ""), "amount": int(raw)}
    if form.get("size"):
        item["size"] = form["size"]
    lifecycle.scale_app(
        db=platform.db,
        processes=platform.processes,
        owner=user,
        name=name,
        items=[item],
        quotas=platform.settings.quotas,
        timeout=float(platform.settings.boot_timeout) + platform.settings.stop_grace_seconds,
    )
    return "scaled"


def restart(platform: Platform, user: UserRecord, name: str, form: dict[str, str]) -> str:
    lifecycle.restart_app(
        db=platform.db,
        processes=platform.processes,
        owner=user,
        name=name,
        timeout=float(platform.settings.boot_timeout) + platform.settings.stop_grace_seconds,
    )
    return "restarted"


def set_variable(platform: Platform, user: UserRecord, name: str, form: dict[str, str]) -> str:
    apps_service.set_variables(
        db=platform.db,
        owner=user,
        app_name=name,
        values=[(form.get("name", "").strip(), form.get("value", ""))],
    )
    return "variable-saved"


def remove_variable(platform: Platform, user: UserRecord, name: str, form: dict[str, str]) -> str:
    apps_service.delete_variable(
        db=platform.db, owner=user, app_name=name, variable_id=form.get("variable_id", "")
    )
    return "variable-removed"


def reset_cache(platform: Platform, user: UserRecord, name: str, _form: dict[str, str]) -> str:
    lifecycle.reset_cache(
        db=platform.db,
        bus=platform.bus,
        blobs=platform.blobs,
        settings=platform.settings,
        owner=user,
        name=name,
    )
    return "cache-reset"
