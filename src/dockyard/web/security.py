"""What keeps the dashboard's pages safe: the session cookie, CSRF tokens and the headers
every page is sent with.

The browser holds a random session secret in an HttpOnly, SameSite=Strict cookie; every
form carries a CSRF token derived from that secret with the server's key (HMAC), so it
needs no storage and dies with the session. The sign-in form, which has no session yet,
is protected by a double-submit token (a cookie and a form field that must match).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from dockyard.errors import Forbidden

SESSION_COOKIE = "dockyard_session"
SIGNIN_COOKIE = "dockyard_signin"
SESSION_TTL = timedelta(hours=12)
# The JWT a page may send to the API (deployment stream, uploads, logs): short-lived, so
# one read off a page is worth little; the page asks for a new one when it needs one.
PAGE_TOKEN_TTL = 300

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def csrf_token(key: bytes, session_secret: str) -> str:
    return hmac.new(key, b"csrf:" + session_secret.encode(), hashlib.sha256).hexdigest()


def check_csrf(key: bytes, session_secret: str, sent: str) -> None:
    if not sent or not hmac.compare_digest(csrf_token(key, session_secret), sent):
        raise Forbidden(
            "The form's security token is missing or stale: reload the page and try again.",
            code="csrf_failed",
        )


def new_signin_token() -> str:
    return secrets.token_urlsafe(24)


def check_signin_token(request: Request, sent: str) -> None:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise Forbidden(
            "The sign-in form expired or cookies are blocked: reload the page and try again.",
            code="csrf_failed",
        )


def _secure(request: Request) -> bool:
    platform = request.app.state.platform
    return bool(platform.settings.public_url.startswith("https://"))


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path="/", httponly=True, samesite="strict", secure=_secure(request)
    )
