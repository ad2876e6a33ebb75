"""Addons (``scalingo addons-list``, ``addons-plans``, ``addons-add``, ``addons``,
``addons-remove``, ``addons-info``; API-OPS §9), the small database API ``addons-info``
calls (``/api/databases/{id}``, with the addon token), and dockyard's own backups."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api import addon_schemas as views
from dockyard.api.auth import authenticate, credential
from dockyard.api.routes.common import (
    call,
    call_for_app,
    json_body,
    json_response,
    no_content,
    platform_of,
)
from dockyard.domain import addons as catalogue
from dockyard.errors import NotFound, ValidationFailed
from dockyard.services import addons as addons_service

_EXAMPLE = '{"addon": {"addon_provider_id": "postgresql", "plan_id": "postgresql-starter-512"}}'


async def list_providers(request: Request) -> Response:
    await authenticate(request)
    return json_response(
        {"addon_providers": [views.provider(p) for p in catalogue.PROVIDERS.values()]}
    )


async def list_plans(request: Request) -> Response:
    await authenticate(request)
    chosen = catalogue.provider(request.path_params["provider"])
    if chosen is None:
        raise NotFound("addon_provider")
    return json_response({"plans": [views.plan(p) for p in chosen.plans]})


async def list_addons(request: Request) -> Response:
    user = await authenticate(request)
    rows = await call_for_app(request, user, addons_service.list_addons)
    return json_response({"addons": [views.addon(row) for row in rows]})


async def show_addon(request: Request) -> Response:
    user = await authenticate(request)
    row = await call_for_app(
        request,
        user,
        addons_service.get_addon,
        addon_id=request.path_params["addon_id"],
    )
    return json_response({"addon": views.addon(row)})


def _addon_fields(body: Any) -> dict[str, Any]:
    fields = body.get("addon") if isinstance(body, dict) else None
    if not isinstance(fields, dict):
        raise ValidationFailed({"addon": [f"is required: {_EXAMPLE}"]})
    return fields


async def add_addon(request: Request) -> Response:
    user = await authenticate(request)
    fields = _addon_fields(await json_body(request))
    platform = platform_of(request)
    done = await call(
        addons_service.provision,
        db=platform.db,
        servers=platform.addons,
        processes=platform.supervisor,
        owner=user,
        app_name=request.path_params["app"],
        provider_id=fields.get("addon_provider_id"),
        plan_id=fields.get("plan_id"),
    )
    return json_response(
        {"addon": views.addon(done.addon), "message": done.message, "variables": done.variables},
        status=201,
    )


async def change_plan(request: Request) -> Response:
    """``scalingo addons-upgrade``."""
    user = await authenticate(request)
    fields = _addon_fields(await json_body(request))
    platform = platform_of(request)
    row = await call(
        addons_service.change_plan,
        db=platform.db,
        servers=platform.addons,
        owner=user,
        app_name=request.path_params["app"],
        addon_id=request.path_params["addon_id"],
        plan_id=fields.get("plan_id"),
    )
    return json_response(
        {"addon": views.addon(row), "message": f"The addon's plan is now {row.plan}."}
    )


async def remove_addon(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    await call(
        addons_service.remove,
        db=platform.db,
        servers=platform.addons,
        processes=platform.supervisor,
        owner=user,
        app_name=request.path_params["app"],
        addon_id=request.path_params["addon_id"],
    )
    return no_content()


async def addon_token(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    token = await call(
        addons_service.addon_token,
        db=platform.db,
        key=platform.jwt_key,
        owner=user,
        app_name=request.path_params["app"],
        addon_id=request.path_params["addon_id"],
    )
    return json_response({"addon": {"token": token}})


async def show_database(request: Request) -> Response:
    """The database API (``SCALINGO_DB_URL``): authenticated by the addon token only."""
    platform = platform_of(request)
    info = await call(
        addons_service.database_info,
        db=platform.db,
        servers=platform.addons,
        key=platform.jwt_key,
        token=credential(request.headers.get("authorization")),
        addon_id=request.path_params["addon_id"],
    )
    return json_response({"database": info})


async def create_backup(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    row = await call(
        addons_service.backup,
        db=platform.db,
        servers=platform.addons,
        blobs=platform.blobs,
        scratch=addons_service.scratch_dir(platform.settings.data_dir),
        owner=user,
        app_name=request.path_params["app"],
        addon_id=request.path_params["addon_id"],
    )
    return json_response({"backup": views.backup(row)}, status=201)


async def list_backups(request: Request) -> Response:
    user = await authenticate(request)
    rows = await call_for_app(request, user, addons_service.list_backups)
    return json_response({"backups": [views.backup(row) for row in rows]})


async def restore_backup(request: Request) -> Response:
    user = await authenticate(request)
    body = await json_body(request)
    platform = platform_of(request)
    row = await call(
        addons_service.restore,
        db=platform.db,
        servers=platform.addons,
        blobs=platform.blobs,
        owner=user,
        app_name=request.path_params["app"],
        addon_id=request.path_params["addon_id"],
        backup_id=body.get("backup_id") if isinstance(body, dict) else None,
    )
    return json_response({"addon": views.addon(row)})


routes = [
    Route("/v1/addon_providers", list_providers, methods=["GET"]),
    Route("/v1/addon_providers/{provider}/plans", list_plans, methods=["GET"]),
    Route("/v1/apps/{app}/addons", list_addons, methods=["GET"]),
    Route("/v1/apps/{app}/addons", add_addon, methods=["POST"]),
    Route("/v1/apps/{app}/addons/{addon_id}", show_addon, methods=["GET"]),
    Route("/v1/apps/{app}/addons/{addon_id}", change_plan, methods=["PATCH"]),
    Route("/v1/apps/{app}/addons/{addon_id}", remove_addon, methods=["DELETE"]),
    Route("/v1/apps/{app}/addons/{addon_id}/token", addon_token, methods=["POST"]),
    Route("/v1/apps/{app}/addons/{addon_id}/backups", create_backup, methods=["POST"]),
    Route("/v1/apps/{app}/addon_backups", list_backups, methods=["GET"]),
    Route("/v1/apps/{app}/addons/{addon_id}/restore", restore_backup, methods=["POST"]),
    Route("/api/databases/{addon_id}", show_database, methods=["GET"]),
]
