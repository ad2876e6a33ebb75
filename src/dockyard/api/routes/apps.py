"""Apps and their environment variables (Scalingo's shapes)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api import schemas
from dockyard.api.auth import authenticate
from dockyard.api.routes.common import (
    call,
    call_for_app,
    json_body,
    json_response,
    no_content,
    platform_of,
)
from dockyard.errors import ValidationFailed
from dockyard.services import apps as apps_service
from dockyard.services import lifecycle


def _field(body: Any, key: str, example: str) -> dict[str, Any]:
    fields = body.get(key) if isinstance(body, dict) else None
    if not isinstance(fields, dict):
        raise ValidationFailed({key: [f"is required: {example}"]})
    return fields


async def create_app(request: Request) -> Response:
    user = await authenticate(request)
    fields = _field(await json_body(request), "app", '{"app": {"name": "my-app"}}')
    platform = platform_of(request)
    row = await call(
        apps_service.create_app,
        db=platform.db,
        owner=user,
        name=fields.get("name"),
        max_apps=platform.settings.max_apps_per_user,
    )
    return json_response({"app": schemas.app(row, platform.settings)}, status=201)


async def list_apps(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    rows = await call(apps_service.list_apps, db=platform.db, owner=user)
    return json_response(
        {
            "apps": [
                schemas.app(
                    row,
                    platform.settings,
                    status=lifecycle.app_status(platform.processes, row.name),
                )
                for row in rows
            ]
        }
    )


async def show_app(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    row = await call(
        apps_service.find_app, db=platform.db, owner=user, name=request.path_params["app"]
    )
    return json_response(
        {
            "app": schemas.app(
                row, platform.settings, status=lifecycle.app_status(platform.processes, row.name)
            )
        }
    )


async def delete_app(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    await call(
        lifecycle.destroy_app,
        db=platform.db,
        bus=platform.bus,
        blobs=platform.blobs,
        settings=platform.settings,
        processes=platform.processes,
        owner=user,
        name=request.path_params["app"],
        artifacts=platform.artifacts,
        addons=platform.addons,
    )
    return no_content()


async def list_variables(request: Request) -> Response:
    user = await authenticate(request)
    rows = await call_for_app(request, user, apps_service.list_variables)
    return json_response({"variables": [schemas.variable(row) for row in rows]})


async def create_variable(request: Request) -> Response:
    user = await authenticate(request)
    fields = _field(
        await json_body(request), "variable", '{"variable": {"name": "KEY", "value": "v"}}'
    )
    rows = await call_for_app(
        request,
        user,
        apps_service.set_variables,
        values=[(fields.get("name"), fields.get("value"))],
    )
    return json_response({"variable": schemas.variable(rows[0])}, status=201)


async def bulk_update_variables(request: Request) -> Response:
    user = await authenticate(request)
    body = await json_body(request)
    items = body.get("variables") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValidationFailed(
            {"variables": ['is required: {"variables": [{"name": "KEY", "value": "v"}]}']}
        )
    rows = await call_for_app(
        request,
        user,
        apps_service.set_variables,
        values=[(item.get("name"), item.get("value")) for item in items],
    )
    return json_response({"variables": [schemas.variable(row) for row in rows]})


async def update_variable(request: Request) -> Response:
    user = await authenticate(request)
    fields = _field(await json_body(request), "variable", '{"variable": {"value": "v"}}')
    row = await call_for_app(
        request,
        user,
        apps_service.update_variable,
        variable_id=request.path_params["variable_id"],
        value=fields.get("value"),
    )
    return json_response({"variable": schemas.variable(row)})


async def delete_variable(request: Request) -> Response:
    user = await authenticate(request)
    await call_for_app(
        request,
        user,
        apps_service.delete_variable,
        variable_id=request.path_params["variable_id"],
    )
    return no_content()


routes = [
    Route("/v1/apps", create_app, methods=["POST"]),
    Route("/v1/apps", list_apps, methods=["GET"]),
    Route("/v1/apps/{app}", show_app, methods=["GET"]),
    Route("/v1/apps/{app}", delete_app, methods=["DELETE"]),
    Route("/v1/apps/{app}/variables", list_variables, methods=["GET"]),
    Route("/v1/apps/{app}/variables", create_variable, methods=["POST"]),
    Route("/v1/apps/{app}/variables", bulk_update_variables, methods=["PUT"]),
    Route("/v1/apps/{app}/variables/{variable_id}", update_variable, methods=["PATCH", "PUT"]),
    Route("/v1/apps/{app}/variables/{variable_id}", delete_variable, methods=["DELETE"]),
]
