"""An app's timeline, its collaborators and its name (API-OPS §6, §11, §13)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api import schemas
from dockyard.api.auth import authenticate
from dockyard.api.routes.common import (
    call,
    int_param,
    json_body,
    json_response,
    no_content,
    platform_of,
)
from dockyard.errors import ValidationFailed
from dockyard.services import collaborators as collaborators_service
from dockyard.services import lifecycle, timeline
from dockyard.services.timeline import EventPage


def _event_page(result: EventPage) -> dict[str, Any]:
    return {
        "events": [schemas.event(row) for row in result.items],
        "meta": {
            "pagination": schemas.pagination(
                page=result.page, per_page=result.per_page, total_count=result.total_count
            )
        },
    }


async def app_events(request: Request) -> Response:
    user = await authenticate(request)
    result = await call(
        timeline.app_events,
        db=platform_of(request).db,
        user=user,
        app_name=request.path_params["app"],
        page=int_param(request, "page", 1, maximum=1_000_000),
        per_page=int_param(request, "per_page", 30, maximum=100, clamp=True),
    )
    return json_response(_event_page(result))


async def user_events(request: Request) -> Response:
    user = await authenticate(request)
    result = await call(
        timeline.user_events,
        db=platform_of(request).db,
        user=user,
        page=int_param(request, "page", 1, maximum=1_000_000),
        per_page=int_param(request, "per_page", 30, maximum=100, clamp=True),
    )
    return json_response(_event_page(result))


async def list_collaborators(request: Request) -> Response:
    user = await authenticate(request)
    rows = await call(
        collaborators_service.list_collaborators,
        db=platform_of(request).db,
        user=user,
        app_name=request.path_params["app"],
    )
    return json_response({"collaborators": [schemas.collaborator(row) for row in rows]})


def _collaborator_fields(body: object, example: str) -> dict[str, object]:
    fields = body.get("collaborator") if isinstance(body, dict) else None
    if not isinstance(fields, dict):
        raise ValidationFailed({"collaborator": [f"is required: {example}"]})
    return fields


async def add_collaborator(request: Request) -> Response:
    user = await authenticate(request)
    fields = _collaborator_fields(
        await json_body(request), '{"collaborator": {"email": "bob@example.com"}}'
    )
    row = await call(
        collaborators_service.add_collaborator,
        db=platform_of(request).db,
        user=user,
        app_name=request.path_params["app"],
        email=fields.get("email"),
        is_limited=fields.get("is_limited"),
    )
    return json_response({"collaborator": schemas.collaborator(row)}, status=201)


async def update_collaborator(request: Request) -> Response:
    user = await authenticate(request)
    fields = _collaborator_fields(
        await json_body(request), '{"collaborator": {"is_limited": false}}'
    )
    row = await call(
        collaborators_service.update_collaborator,
        db=platform_of(request).db,
        user=user,
        app_name=request.path_params["app"],
        collaborator_id=request.path_params["collaborator_id"],
        is_limited=fields.get("is_limited"),
    )
    return json_response({"collaborator": schemas.collaborator(row)})


async def remove_collaborator(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    await call(
        collaborators_service.remove_collaborator,
        db=platform.db,
        bus=platform.bus,
        user=user,
        app_name=request.path_params["app"],
        collaborator_id=request.path_params["collaborator_id"],
    )
    return no_content()


async def rename_app(request: Request) -> Response:
    user = await authenticate(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ValidationFailed(
            {"new_name": ['is required: {"current_name": "my-app", "new_name": "new-app"}']}
        )
    platform = platform_of(request)
    row = await call(
        lifecycle.rename_app,
        db=platform.db,
        bus=platform.bus,
        processes=platform.processes,
        owner=user,
        name=request.path_params["app"],
        current_name=body.get("current_name"),
        new_name=body.get("new_name"),
    )
    return json_response(
        {
            "app": schemas.app(
                row, platform.settings, status=lifecycle.app_status(platform.processes, row.name)
            )
        }
    )


routes = [
    Route("/v1/events", user_events, methods=["GET"]),
    Route("/v1/apps/{app}/events", app_events, methods=["GET"]),
    Route("/v1/apps/{app}/collaborators", list_collaborators, methods=["GET"]),
    Route("/v1/apps/{app}/collaborators", add_collaborator, methods=["POST"]),
    Route(
        "/v1/apps/{app}/collaborators/{collaborator_id}", remove_collaborator, methods=["DELETE"]
    ),
    Route(
        "/v1/apps/{app}/collaborators/{collaborator_id}", update_collaborator, methods=["PATCH"]
    ),
    Route("/v1/apps/{app}/rename", rename_app, methods=["POST"]),
]
