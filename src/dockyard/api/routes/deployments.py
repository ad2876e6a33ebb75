"""Deployments of an app and the deployment cache (docs/api.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from dockyard.api import schemas
from dockyard.api.auth import authenticate
from dockyard.api.errors import SECURITY_HEADERS
from dockyard.api.routes.common import (
    call,
    int_param,
    json_body,
    json_response,
    no_content,
    platform_of,
    read,
)
from dockyard.domain.records import UserRecord
from dockyard.errors import ValidationFailed
from dockyard.platform import Platform
from dockyard.services import deployments as service
from dockyard.services import lifecycle
from dockyard.services.deployments import ListingKey


async def create(request: Request) -> Response:
    user = await authenticate(request)
    parsed = service.parse_request(await json_body(request))
    platform = platform_of(request)
    app_name = request.path_params["app"]
    row = await call(
        service.create_deployment,
        db=platform.db,
        bus=platform.bus,
        owner=user,
        app_name=app_name,
        request=parsed,
        public_url=platform.settings.public_url,
    )
    platform.deployment_queued.send()
    return json_response(
        {"deployment": schemas.deployment(row, app_name, platform.settings)}, status=201
    )


async def rollback(request: Request) -> Response:
    """Start a kept release again, without a build, as a new deployment (docs/api.md)."""
    user = await authenticate(request)
    body = await json_body(request)
    target = body.get("deployment_id") if isinstance(body, dict) else None
    if target is not None and not isinstance(target, str):
        raise ValidationFailed(
            {"deployment_id": ["must be a deployment's id, or left out for the previous release"]}
        )
    platform = platform_of(request)
    app_name = request.path_params["app"]
    releases = platform.settings.releases_dir
    row = await call(
        service.create_rollback,
        db=platform.db,
        bus=platform.bus,
        owner=user,
        app_name=app_name,
        deployment_id=target,
        # An api process apart from the workers keeps no release: the worker that holds
        # the target's claims the rollback (services/deployments.py) and says if it is gone.
        release_kept=None
        if platform.remote_processes is not None
        else lambda deployment_id: (releases / deployment_id).is_dir(),
    )
    platform.deployment_queued.send()
    return json_response(
        {"deployment": schemas.deployment(row, app_name, platform.settings)}, status=201
    )


async def index(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    page = int_param(request, "page", 1, maximum=1_000_000)
    per_page = int_param(request, "per_page", 20, maximum=100)
    app_name = request.path_params["app"]
    current = await _listing_key(request, user, app_name)
    cache_key = (current.app_id, current.version, app_name, page, per_page)

    async def render() -> bytes:
        result = await read(
            request,
            service.list_deployments,
            db=platform.db,
            owner=user,
            app_name=app_name,
            page=page,
            per_page=per_page,
        )
        return _json(
            {
                "deployments": [
                    schemas.deployment(row, app_name, platform.settings) for row in result.items
                ],
                "meta": {
                    "pagination": schemas.pagination(
                        page=page, per_page=per_page, total_count=result.total_count
                    )
                },
            }
        )

    return await _cached(platform, cache_key, render)


async def _listing_key(request: Request, user: UserRecord, app_name: str) -> ListingKey:
    """The app's id and deployments version: from memory while no change was published."""
    platform = platform_of(request)
    keys = platform.listing_keys
    cached, generation = keys.get((user.id, app_name))
    if cached is not None:
        return cached
    current = await read(
        request, service.listing_key, engine=platform.engine, owner=user, app_name=app_name
    )
    keys.put((user.id, app_name), current, generation)
    return current


def _json(body: object) -> bytes:
    return bytes(json_response(body).body)


async def _cached(
    platform: Platform, key: Hashable, render: Callable[[], Awaitable[bytes]]
) -> Response:
    """A rendered deployment body, from the page cache when the app's deployments have not
    changed since it was rendered. Entries are stored under the version read *before* the
    query: a change in between makes an entry nobody asks for again, never a stale one."""
    pages = platform.deployment_pages
    body = pages.get(key)
    if body is None:
        body = await render()
        pages.put(key, body)
    return Response(body, media_type="application/json", headers=SECURITY_HEADERS)


async def show(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    app_name = request.path_params["app"]
    deployment_id = request.path_params["deployment_id"]
    current = await _listing_key(request, user, app_name)
    cache_key = (current.app_id, current.version, app_name, "show", deployment_id)

    async def render() -> bytes:
        row = await read(
            request,
            service.find_deployment,
            db=platform.db,
            owner=user,
            app_name=app_name,
            deployment_id=deployment_id,
        )
        return _json({"deployment": schemas.deployment(row, app_name, platform.settings)})

    return await _cached(platform, cache_key, render)


async def output(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    text = await read(
        request,
        service.deployment_output,
        db=platform.db,
        owner=user,
        app_name=request.path_params["app"],
        deployment_id=request.path_params["deployment_id"],
    )
    return PlainTextResponse(text, headers={"Cache-Control": "no-store"})


async def cancel(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    app_name = request.path_params["app"]
    row = await call(
        service.cancel,
        db=platform.db,
        bus=platform.bus,
        owner=user,
        app_name=app_name,
        deployment_id=request.path_params["deployment_id"],
    )
    return json_response({"deployment": schemas.deployment(row, app_name, platform.settings)})


async def reset_cache(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    await call(
        lifecycle.reset_cache,
        db=platform.db,
        bus=platform.bus,
        blobs=platform.blobs,
        settings=platform.settings,
        owner=user,
        name=request.path_params["app"],
    )
    return no_content()


routes = [
    Route("/v1/apps/{app}/deployments", create, methods=["POST"]),
    Route("/v1/apps/{app}/deployments", index, methods=["GET"]),
    Route("/v1/apps/{app}/deployments/{deployment_id}", show, methods=["GET"]),
    Route("/v1/apps/{app}/deployments/{deployment_id}/output", output, methods=["GET"]),
    Route("/v1/apps/{app}/deployments/{deployment_id}/cancel", cancel, methods=["POST"]),
    Route("/v1/apps/{app}/rollback", rollback, methods=["POST"]),
    Route("/v1/apps/{app}/caches/deployment", reset_cache, methods=["DELETE"]),
]
