"""The one table from dockyard's error tree to HTTP responses (the bodies of docs/api.md, "Errors")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard import errors as e

_STATUS: dict[type[e.DockyardError], int] = {
    e.BadRequest: 400,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.ValidationFailed: 422,
    e.RateLimited: 429,
}

SECURITY_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def error_response(exc: e.DockyardError) -> Response:
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
    headers = dict(SECURITY_HEADERS)
    body: dict[str, object]
    if isinstance(exc, e.NotFound):
        body = {"resource": exc.resource, "error": "not found"}
    elif isinstance(exc, e.ValidationFailed):
        body = {"errors": exc.errors}
    elif isinstance(exc, e.BadRequest | e.Forbidden | e.RateLimited):
        body = {"error": exc.message, "code": exc.code}
    else:
        body = {"error": exc.message}
    if isinstance(exc, e.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="dockyard"'
    if isinstance(exc, e.RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(body, status_code=status, headers=headers)


async def handle_dockyard_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.DockyardError)
    return error_response(exc)


async def handle_http_exception(_request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route or method) as JSON bodies too."""
    status = getattr(exc, "status_code", 500)
    if status == 404:
        return JSONResponse({"resource": "route", "error": "not found"}, status_code=404)
    detail = getattr(exc, "detail", "error")
    return JSONResponse({"error": str(detail)}, status_code=status)
