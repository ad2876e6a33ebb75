"""One-off commands: ``POST /v1/apps/{app}/run`` (API-OPS.md §5) and
``POST /v1/apps/{app}/containers/{id}/stop`` (``one-off-stop``, §14). The terminal of
an attached one-off is served by the attach server (``dockyard.api.attach``) of the
process that runs it: this one under ``dockyard serve``, the app's worker otherwise."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api import schemas
from dockyard.api.auth import authenticate
from dockyard.api.routes.common import call, json_body, json_response, platform_of
from dockyard.services import oneoffs


async def run(request: Request) -> Response:
    """200 (the client expects nothing else) with the container and the operation."""
    user = await authenticate(request)
    platform = platform_of(request)
    wanted = oneoffs.parse_run(await json_body(request))
    app, started, operation = await call(
        oneoffs.run,
        db=platform.db,
        runner=platform.one_off_runner,
        owner=user,
        name=request.path_params["app"],
        request=wanted,
    )
    settings = platform.settings
    return json_response(
        {
            "container": schemas.container(app, started.instance),
            "attach_url": started.attach_url,
            "operation_url": f"{settings.public_url}/v1/apps/{app.name}/operations/{operation.id}",
        }
    )


async def stop(request: Request) -> Response:
    """202: the one-off is being stopped (SIGTERM, grace, SIGKILL)."""
    user = await authenticate(request)
    platform = platform_of(request)
    await call(
        oneoffs.stop,
        db=platform.db,
        runner=platform.one_off_runner,
        owner=user,
        name=request.path_params["app"],
        container_id=request.path_params["container_id"],
    )
    return json_response({}, status=202)


routes = [
    Route("/v1/apps/{app}/run", run, methods=["POST"]),
    Route("/v1/apps/{app}/containers/{container_id}/stop", stop, methods=["POST"]),
]
