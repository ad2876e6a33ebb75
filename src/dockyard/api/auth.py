"""Who is calling: ``Authorization: Bearer <JWT|API token>`` or ``Basic :<API token>``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from dockyard.domain.records import UserRecord
from dockyard.errors import Unauthenticated
from dockyard.platform import Platform
from dockyard.services import auth as auth_service

T = TypeVar("T")


def credential(header: str | None) -> str:
    """The API token or JWT carried by an Authorization header."""
    if not header:
        raise Unauthenticated("Authentication required: send 'Authorization: Bearer <token>'.")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("The Basic credentials are not valid base64.") from None
        user, _, password = decoded.partition(":")
        if user:
            raise Unauthenticated(
                "Basic credentials take an empty user name and the API token as password "
                "(base64 of ':' followed by the token)."
            )
        if password:
            return password
    raise Unauthenticated(
        "Unsupported Authorization header: use 'Bearer <token>' or Basic with the API token as password."
    )


def user_for_credential(platform: Platform, secret: str) -> UserRecord:
    if auth_service.looks_like_jwt(secret):
        return auth_service.user_for_jwt(db=platform.db, key=platform.jwt_key, token=secret)
    return auth_service.user_for_api_token(db=platform.db, secret=secret)


def still_valid(platform: Platform, secret: str) -> Callable[[], UserRecord]:
    """How a long-lived connection opened with ``secret`` checks, later, that it has not
    been revoked: a JWT by the API token it came from (its expiry does not end what it
    opened, as it ends no request under way), an API token by itself."""
    if auth_service.looks_like_jwt(secret):
        claims = auth_service.jwt_claims(key=platform.jwt_key, token=secret)
        return lambda: auth_service.user_for_jwt_claims(db=platform.db, claims=claims)
    return lambda: auth_service.user_for_api_token(db=platform.db, secret=secret)


def client_host(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else ""


async def verified(platform: Platform, host: str, verify: Callable[[], T]) -> T:
    """Run ``verify`` (blocking: it reads the database) for a client at ``host``. An
    address whose credentials keep failing is refused before its next lookup; a failure
    is counted against it (api/ratelimit.py)."""
    platform.rate_limiter.refuse_if_failing(host)
    try:
        return await run_in_threadpool(verify)
    except Unauthenticated:
        platform.rate_limiter.count_failure(host)
        raise


async def authenticate(conn: HTTPConnection) -> UserRecord:
    platform: Platform = conn.app.state.platform
    secret = credential(conn.headers.get("authorization"))
    if not auth_service.looks_like_jwt(secret):
        # API tokens are looked up every time, so a revoked one stops working at once.
        user = await verified(
            platform, client_host(conn), lambda: user_for_credential(platform, secret)
        )
    else:
        cache = platform.user_cache
        try:
            claims = auth_service.jwt_claims(key=platform.jwt_key, token=secret)
        except Unauthenticated:
            platform.rate_limiter.count_failure(client_host(conn))
            raise
        cached = cache.get(claims)
        if cached is None:
            cached = await verified(
                platform,
                client_host(conn),
                lambda: auth_service.user_for_jwt_claims(db=platform.db, claims=claims),
            )
            cache.put(claims, cached)
        user = cached
    platform.rate_limiter.check_user(user.id)
    return user
