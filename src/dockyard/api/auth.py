"""Who is calling: ``Authorization: Bearer <JWT|API token>`` or ``Basic :<API token>``."""

from __future__ import annotations

import base64
import binascii
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from dockyard.bootstrap import Platform
from dockyard.db.models import User
from dockyard.errors import Unauthenticated
from dockyard.services import auth as auth_service


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
        _user, _, password = decoded.partition(":")
        if password:
            return password
    raise Unauthenticated(
        "Unsupported Authorization header: use 'Bearer <token>' or Basic with the API token as password."
    )


def user_for_credential(platform: Platform, secret: str) -> User:
    if auth_service.looks_like_jwt(secret):
        return auth_service.user_for_jwt(db=platform.db, key=platform.jwt_key, token=secret)
    return auth_service.user_for_api_token(db=platform.db, secret=secret)


class UserCache:
    """Users behind already-verified JWTs, for a few seconds: the signature and expiry are
    checked on every request, but the database is not read again for each one."""

    def __init__(self, ttl: float = 10.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._users: dict[str, tuple[float, User]] = {}

    def get(self, user_id: str) -> User | None:
        entry = self._users.get(user_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, user: User) -> None:
        if len(self._users) >= self.size:
            self._users.clear()
        self._users[user.id] = (time.monotonic() + self.ttl, user)


async def authenticate(conn: HTTPConnection) -> User:
    platform: Platform = conn.app.state.platform
    secret = credential(conn.headers.get("authorization"))
    platform.rate_limiter.check(auth_service.hash_token(secret))
    if not auth_service.looks_like_jwt(secret):
        # API tokens are looked up every time, so a revoked one stops working at once.
        return await run_in_threadpool(user_for_credential, platform, secret)
    cache: UserCache = platform.extras.setdefault("user_cache", UserCache())
    user_id = auth_service.jwt_subject(key=platform.jwt_key, token=secret)
    user = cache.get(user_id)
    if user is None:
        user = await run_in_threadpool(
            lambda: auth_service.user_by_id(db=platform.db, user_id=user_id)
        )
        cache.put(user)
    return user
