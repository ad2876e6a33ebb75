"""What every dashboard page shares: the templates, the signed-in visitor, rendering with
the security headers, and refusals shown as pages that say why."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from dockyard import errors as e
from dockyard.domain.formation import SIZES
from dockyard.domain.records import UserRecord
from dockyard.platform import Platform
from dockyard.services import web_sessions
from dockyard.services.auth import Grant
from dockyard.web import charts, security

HERE = Path(__file__).parent
templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals["human_duration"] = charts.human_duration
templates.globals["duration_seconds"] = charts.duration_seconds

_STATUS: list[tuple[type[e.DockyardError], int]] = [
    (e.BadRequest, 400),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.PayloadTooLarge, 413),
    (e.ValidationFailed, 422),
    (e.RateLimited, 429),
]


def status_of(exc: e.DockyardError) -> int:
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)


def in_words(exc: e.DockyardError) -> str:
    if isinstance(exc, e.ValidationFailed):
        return "; ".join(
            f"{name} {message}" for name, messages in exc.errors.items() for message in messages
        )
    if isinstance(exc, e.NotFound):
        return f"No {exc.resource} of that name is yours (it does not exist, or belongs to someone else)."
    return exc.message


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


@dataclass(frozen=True)
class Visitor:
    grant: Grant  # the user, and the API token the session was opened with
    session_secret: str
    csrf: str

    @property
    def user(self) -> UserRecord:
        return self.grant.user


async def signed_in(request: Request) -> Visitor:
    platform = platform_of(request)
    secret = request.cookies.get(security.SESSION_COOKIE, "")
    if not secret:
        raise e.Unauthenticated("Sign in to see this page.")
    grant = await run_in_threadpool(
        lambda: web_sessions.user_for_session(db=platform.db, secret=secret)
    )
    return Visitor(grant, secret, security.csrf_token(platform.jwt_key, secret))


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    visitor: Visitor | None = None,
    **context: Any,
) -> HTMLResponse:
    html = templates.get_template(template).render(
        request=request, visitor=visitor, sizes=list(SIZES), **context
    )
    return HTMLResponse(html, status_code=status, headers=security.PAGE_HEADERS)


def redirect(url: str) -> RedirectResponse:
    """After a form: 303, so the browser GETs the page and a reload does not post again."""
    return RedirectResponse(url, status_code=303, headers=security.PAGE_HEADERS)


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """Sends a visitor without a session to the sign-in page, and shows any other refusal
    as a page that says why."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except e.Unauthenticated:
            return redirect("/signin")
        except e.DockyardError as exc:
            visitor = None
            with contextlib.suppress(e.Unauthenticated):
                visitor = await signed_in(request)
            return render(
                request,
                "error.html",
                status=status_of(exc),
                visitor=visitor,
                message=in_words(exc),
            )

    return endpoint
