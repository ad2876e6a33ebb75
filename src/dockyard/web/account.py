"""Signing in (an API token exchanged for a session), signing out, and the short-lived
JWT a page sends to the API."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dockyard import errors as e
from dockyard.api.auth import client_host, verified
from dockyard.services import auth as auth_service
from dockyard.services import web_sessions
from dockyard.web import security
from dockyard.web.common import in_words, page, platform_of, redirect, render, signed_in, status_of
from dockyard.web.forms import read_form


async def signin_form(request: Request, *, error: str = "", status: int = 200) -> Response:
    token = security.new_signin_token()
    response = render(request, "signin.html", status=status, signin_token=token, error=error)
    security.set_cookie(request, response, security.SIGNIN_COOKIE, token, max_age=3600)
    return response


async def signin_page(request: Request) -> Response:
    try:
        await signed_in(request)
    except e.Unauthenticated:
        return await signin_form(request)
    return redirect("/")


async def signin(request: Request) -> Response:
    platform = platform_of(request)
    form = await read_form(request)
    try:
        security.check_signin_token(request, form.get("signin_token", ""))
        api_token = form.get("api_token", "").strip()
        if not api_token:
            raise e.Unauthenticated("Paste your API token (dockyard login prints one).")
        # Checked as the API checks a credential: failures count against the address.
        session = await verified(
            platform,
            client_host(request),
            lambda: web_sessions.sign_in(
                db=platform.db, api_token=api_token, ttl=security.SESSION_TTL
            ),
        )
    except e.DockyardError as exc:
        status = 401 if isinstance(exc, e.Unauthenticated) else status_of(exc)
        return await signin_form(request, error=in_words(exc), status=status)
    response = redirect("/")
    security.set_cookie(
        request,
        response,
        security.SESSION_COOKIE,
        session.secret,
        max_age=int(security.SESSION_TTL.total_seconds()),
    )
    security.clear_cookie(request, response, security.SIGNIN_COOKIE)
    return response


@page
async def signout(request: Request) -> Response:
    visitor = await signed_in(request)
    form = await read_form(request)
    platform = platform_of(request)
    security.check_csrf(platform.jwt_key, visitor.session_secret, form.get("csrf", ""))
    await run_in_threadpool(
        lambda: web_sessions.sign_out(db=platform.db, secret=visitor.session_secret)
    )
    response = redirect("/signin")
    security.clear_cookie(request, response, security.SESSION_COOKIE)
    return response


async def page_token(request: Request) -> Response:
    """A short-lived JWT for the page's own calls to the API (the deployment stream, the
    upload, the logs): the session's user, never their API token."""
    platform = platform_of(request)
    try:
        visitor = await signed_in(request)
        security.check_csrf(
            platform.jwt_key, visitor.session_secret, request.headers.get("x-csrf-token", "")
        )
    except e.DockyardError as exc:
        status = 401 if isinstance(exc, e.Unauthenticated) else status_of(exc)
        return JSONResponse(
            {"error": in_words(exc)}, status_code=status, headers=security.PAGE_HEADERS
        )
    token = auth_service.issue_jwt(
        key=platform.jwt_key, token=visitor.grant, ttl=security.PAGE_TOKEN_TTL
    )
    return JSONResponse({"token": token}, headers=security.PAGE_HEADERS)
