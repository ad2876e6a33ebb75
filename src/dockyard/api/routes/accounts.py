"""Authentication, the current user, regions and API tokens."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api import schemas
from dockyard.api.auth import authenticate, client_host, credential, verified
from dockyard.api.routes.common import call, json_body, json_response, no_content, platform_of
from dockyard.errors import ValidationFailed
from dockyard.services import auth as auth_service


async def exchange(request: Request) -> Response:
    """Basic ``:api_token`` → a signed JWT with ``exp``."""
    platform = platform_of(request)
    secret = credential(request.headers.get("authorization"))
    api_token = await verified(
        platform,
        client_host(request),
        lambda: auth_service.api_token_for_secret(db=platform.db, secret=secret),
    )
    platform.rate_limiter.check_user(api_token.user.id)
    token = auth_service.issue_jwt(
        key=platform.jwt_key, token=api_token, ttl=platform.settings.jwt_ttl
    )
    return json_response({"token": token})


async def users_self(request: Request) -> Response:
    user = await authenticate(request)
    return json_response({"user": schemas.user(user)})


async def regions(request: Request) -> Response:
    await authenticate(request)
    settings = platform_of(request).settings
    region = {
        "name": "local",
        "display_name": "dockyard (local)",
        "api": settings.public_url,
        "ssh": "",
        "dashboard": settings.public_url,
        "database_api": settings.public_url,
        "default": True,
    }
    return json_response({"regions": [region]})


async def list_tokens(request: Request) -> Response:
    user = await authenticate(request)
    rows = await call(auth_service.list_tokens, db=platform_of(request).db, user=user)
    return json_response({"tokens": [schemas.token(row) for row in rows]})


async def create_token(request: Request) -> Response:
    user = await authenticate(request)
    body = await json_body(request)
    fields = body.get("token") if isinstance(body, dict) else None
    if not isinstance(fields, dict):
        raise ValidationFailed({"token": ['is required: {"token": {"name": "ci"}}']})
    issued = await call(
        auth_service.create_token, db=platform_of(request).db, user=user, name=fields.get("name")
    )
    return json_response({"token": schemas.token(issued.token, issued.secret)}, status=201)


async def revoke_token(request: Request) -> Response:
    user = await authenticate(request)
    token_id = request.path_params["token_id"]
    await call(auth_service.revoke_token, db=platform_of(request).db, user=user, token_id=token_id)
    platform_of(request).user_cache.forget(token_id)  # its JWTs stop working now
    return no_content()


routes = [
    Route("/v1/tokens/exchange", exchange, methods=["POST"]),
    Route("/v1/users/self", users_self, methods=["GET"]),
    Route("/v1/regions", regions, methods=["GET"]),
    Route("/v1/tokens", list_tokens, methods=["GET"]),
    Route("/v1/tokens", create_token, methods=["POST"]),
    Route("/v1/tokens/{token_id}", revoke_token, methods=["DELETE"]),
]
