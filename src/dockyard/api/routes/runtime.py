"""Running apps: their instances (``ps``), formation (``scale``), restarts, stop and start,
and the operations the official client polls (logs: ``logs.py``; one-offs: ``oneoffs.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api import schemas
from dockyard.api.auth import authenticate
from dockyard.api.routes.common import call, call_for_app, json_body, json_response, platform_of
from dockyard.errors import ValidationFailed
from dockyard.services import apps as apps_service
from dockyard.services import formation, lifecycle, oneoffs, operations
from dockyard.services.operations import OperationRecord


def _action(action: str) -> Callable[[Request], Awaitable[Response]]:
    operation = {"stop": lifecycle.stop_app, "start": lifecycle.start_app}[action]

    async def endpoint(request: Request) -> Response:
        user = await authenticate(request)
        platform = platform_of(request)
        app = await call(
            operation,
            db=platform.db,
            processes=platform.processes,
            owner=user,
            name=request.path_params["app"],
        )
        status = lifecycle.app_status(platform.processes, app.name)
        return json_response(
            {"app": schemas.app(app, platform.settings, status=status)}, status=202
        )

    return endpoint


def _operation_headers(request: Request, app: str, operation: OperationRecord) -> dict[str, str]:
    url = f"{platform_of(request).settings.public_url}/v1/apps/{app}/operations/{operation.id}"
    return {"Location": url}


async def restart(request: Request) -> Response:
    """``{"scope": ["web", "worker-1"]}``; an empty scope restarts every instance."""
    user = await authenticate(request)
    platform = platform_of(request)
    body = await json_body(request)
    scope = body.get("scope") if isinstance(body, dict) else None
    if scope is None:
        scope = []
    if not isinstance(scope, list) or not all(isinstance(item, str) for item in scope):
        raise ValidationFailed({"scope": ['must be a list of types or instances: ["web"]']})
    app, operation = await call(
        lifecycle.restart_app,
        db=platform.db,
        processes=platform.processes,
        owner=user,
        name=request.path_params["app"],
        scope=scope,
        timeout=float(platform.settings.boot_timeout) + platform.settings.stop_grace_seconds,
    )
    status = lifecycle.app_status(platform.processes, app.name)
    response = json_response(
        {"app": schemas.app(app, platform.settings, status=status)}, status=202
    )
    response.headers.update(_operation_headers(request, app.name, operation))
    return response


async def scale(request: Request) -> Response:
    """``{"containers": [{"name": "web", "amount": 3, "size": "L"}]}`` → 202 with the new
    formation, and the operation to poll in ``Location``."""
    user = await authenticate(request)
    platform = platform_of(request)
    body = await json_body(request)
    items = body.get("containers") if isinstance(body, dict) else None
    app, _formation, operation = await call(
        lifecycle.scale_app,
        db=platform.db,
        processes=platform.processes,
        owner=user,
        name=request.path_params["app"],
        items=items,
        quotas=platform.settings.quotas,
        timeout=float(platform.settings.boot_timeout) + platform.settings.stop_grace_seconds,
    )
    # The client prints what comes back as "being scaled to": the types asked for, not
    # the whole formation (the request was checked: a list of objects with a name).
    asked = {str(item["name"]) for item in items} if isinstance(items, list) else set()
    _, types = await call(formation.process_types, db=platform.db, owner=user, app_name=app.name)
    response = json_response(
        {"containers": [schemas.container_type(app, t) for t in types if t.name in asked]},
        status=202,
    )
    response.headers.update(_operation_headers(request, app.name, operation))
    return response


async def containers(request: Request) -> Response:
    """The formation: one entry per process type, with its amount and size."""
    user = await authenticate(request)
    platform = platform_of(request)
    app, types = await call(
        formation.process_types, db=platform.db, owner=user, app_name=request.path_params["app"]
    )
    return json_response({"containers": [schemas.container_type(app, t) for t in types]})


async def ps(request: Request) -> Response:
    """The instances running (or starting, or crashed) now."""
    user = await authenticate(request)
    platform = platform_of(request)
    app, instances = await call(
        lifecycle.instances,
        db=platform.db,
        processes=platform.processes,
        owner=user,
        name=request.path_params["app"],
    )
    runner = platform.one_off_runner
    if runner is not None:
        instances = [*instances, *await call(runner.running, app=app.name)]
    return json_response({"containers": [schemas.container(app, i) for i in instances]})


async def autoscalers(request: Request) -> Response:
    """dockyard scales only when asked; the client reads this list before it scales."""
    user = await authenticate(request)
    platform = platform_of(request)
    await call(apps_service.find_app, db=platform.db, owner=user, name=request.path_params["app"])
    body: dict[str, Any] = {"autoscalers": []}
    return json_response(body)


async def operation(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    row = await call_for_app(
        request,
        user,
        operations.find,
        operation_id=request.path_params["operation_id"],
    )
    runner, data = platform.one_off_runner, None
    if runner is not None and row.type == oneoffs.OPERATION_TYPE and row.status == operations.DONE:
        started = await call(
            runner.of_operation, app=request.path_params["app"], operation_id=row.id
        )
        data = None if started is None else oneoffs.start_data(row.app_id, started)
    return json_response({"operation": schemas.operation(row, data)})


routes = [
    Route("/v1/apps/{app}/stop", _action("stop"), methods=["POST"]),
    Route("/v1/apps/{app}/start", _action("start"), methods=["POST"]),
    Route("/v1/apps/{app}/restart", restart, methods=["POST"]),
    Route("/v1/apps/{app}/scale", scale, methods=["POST"]),
    Route("/v1/apps/{app}/containers", containers, methods=["GET"]),
    Route("/v1/apps/{app}/ps", ps, methods=["GET"]),
    Route("/v1/apps/{app}/autoscalers", autoscalers, methods=["GET"]),
    Route("/v1/apps/{app}/operations/{operation_id}", operation, methods=["GET"]),
]
