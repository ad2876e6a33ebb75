"""Small helpers shared by the route modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard.api.body import read_json
from dockyard.api.errors import SECURITY_HEADERS
from dockyard.domain.records import UserRecord
from dockyard.errors import BadRequest
from dockyard.platform import Platform

T = TypeVar("T")


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


async def call(fn: Callable[..., T], **kwargs: Any) -> T:
    """Run a (blocking) service function off the event loop."""
    return await run_in_threadpool(lambda: fn(**kwargs))


async def call_for_app(
    request: Request, user: UserRecord, fn: Callable[..., T], **kwargs: Any
) -> T:
    """``call`` for the request's app (``/v1/apps/{app}/...``) on behalf of ``user``: the
    arguments every app service takes (``db``, ``owner``, ``app_name``) filled in."""
    return await call(
        fn, db=platform_of(request).db, owner=user, app_name=request.path_params["app"], **kwargs
    )


async def read(request: Request, fn: Callable[..., T], **kwargs: Any) -> T:
    """Run a read-only service function.

    On SQLite (WAL) a read never waits for a writer and takes well under a millisecond,
    so it runs right here: a hop to a thread and back cost ten times more under load, in
    GIL hand-offs. Anything that may wait — PostgreSQL's network round trips, writes that
    may wait for SQLite's lock — goes to a thread through ``call``.
    """
    if platform_of(request).settings.is_postgres:
        return await call(fn, **kwargs)
    return fn(**kwargs)


def json_response(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=SECURITY_HEADERS)


def no_content() -> Response:
    return Response(status_code=204, headers=SECURITY_HEADERS)


async def json_body(request: Request) -> Any:
    return await read_json(request, max_bytes=platform_of(request).settings.max_json_bytes)


def int_param(
    request: Request,
    name: str,
    default: int,
    *,
    minimum: int = 1,
    maximum: int = 10_000,
    clamp: bool = False,
) -> int:
    """A whole-number query parameter. ``clamp``: a number above ``maximum`` is taken as
    ``maximum``, for counts the official client passes through from its user (``logs -n``,
    ``--per-page``) and only accepts a success for."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if clamp and raw.isdigit() and int(raw) > maximum:
        return maximum
    if not raw.isdigit() or not minimum <= int(raw) <= maximum:
        raise BadRequest(
            f"The query parameter {name!r} must be a whole number from {minimum} to {maximum}.",
            code="invalid_parameter",
        )
    return int(raw)
