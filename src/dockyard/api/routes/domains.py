"""Custom domains (``scalingo domains``, ``domains-add``, ``domains-remove``, ``domains-ssl``),
``force-https``, and the HTTPS router's ``ask`` check (API-OPS §7, §8)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api import schemas
from dockyard.api.auth import authenticate
from dockyard.api.routes.common import (
    call,
    call_for_app,
    json_body,
    json_response,
    no_content,
    platform_of,
)
from dockyard.domain.records import DomainRecord
from dockyard.errors import NotFound, ValidationFailed
from dockyard.platform import Platform
from dockyard.services import apps as apps_service
from dockyard.services import certificates, lifecycle
from dockyard.services import domains as domains_service

_EXAMPLE = '{"domain": {"name": "www.example.com"}}'


def _domain_fields(body: Any) -> dict[str, Any]:
    fields = body.get("domain") if isinstance(body, dict) else None
    if not isinstance(fields, dict):
        raise ValidationFailed({"domain": [f"is required: {_EXAMPLE}"]})
    return fields


def https_address(platform: Platform) -> tuple[str, int] | None:
    """Where visitors reach HTTPS, to read the certificate served; None without Caddy."""
    settings = platform.settings
    if settings.router != "caddy":
        return None
    host = settings.router_host
    return ("127.0.0.1" if host in ("0.0.0.0", "") else host, settings.router_https_port)


async def _render(platform: Platform, rows: list[DomainRecord]) -> list[dict[str, Any]]:
    views = await call(certificates.inspect_domains, records=rows, https=https_address(platform))
    return [
        schemas.domain(row, served=served, own=own)
        for row, (served, own) in zip(rows, views, strict=True)
    ]


async def list_domains(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    rows = await call_for_app(request, user, domains_service.list_domains)
    return json_response({"domains": await _render(platform, rows)})


async def show_domain(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    rows = await call_for_app(request, user, domains_service.list_domains)
    wanted = [row for row in rows if row.id == request.path_params["domain_id"]]
    if not wanted:
        raise NotFound("domain")
    return json_response({"domain": (await _render(platform, wanted))[0]})


async def add_domain(request: Request) -> Response:
    user = await authenticate(request)
    fields = _domain_fields(await json_body(request))
    platform = platform_of(request)
    settings = platform.settings
    row = await call(
        domains_service.add_domain,
        db=platform.db,
        bus=platform.bus,
        keys_dir=settings.tls_keys_dir,
        apps_domain=settings.apps_domain,
        allow_wildcard=settings.allow_wildcard_domains,
        owner=user,
        app_name=request.path_params["app"],
        name=fields.get("name"),
        tlscert=fields.get("tlscert") or None,
        tlskey=fields.get("tlskey") or None,
        letsencrypt_enabled=fields.get("letsencrypt_enabled", True),
    )
    # Not probed: nothing can be served for a name claimed a moment ago.
    own = certificates.describe(row.tlscert) if row.tlscert else None
    return json_response({"domain": schemas.domain(row, served=None, own=own)}, status=201)


async def update_domain(request: Request) -> Response:
    user = await authenticate(request)
    fields = _domain_fields(await json_body(request))
    if fields.get("canonical"):  # ``set-canonical-domain``
        raise ValidationFailed(
            {
                "canonical": [
                    "is not supported here: every domain of an app serves it alike (no "
                    "redirect to one of them)"
                ]
            }
        )
    platform = platform_of(request)
    row = await call(
        domains_service.update_domain,
        db=platform.db,
        bus=platform.bus,
        keys_dir=platform.settings.tls_keys_dir,
        owner=user,
        app_name=request.path_params["app"],
        domain_id=request.path_params["domain_id"],
        fields=fields,
    )
    return json_response({"domain": (await _render(platform, [row]))[0]})


async def remove_domain(request: Request) -> Response:
    user = await authenticate(request)
    platform = platform_of(request)
    await call(
        domains_service.remove_domain,
        db=platform.db,
        bus=platform.bus,
        keys_dir=platform.settings.tls_keys_dir,
        owner=user,
        app_name=request.path_params["app"],
        domain_id=request.path_params["domain_id"],
    )
    return no_content()


async def update_app_settings(request: Request) -> Response:
    """``PUT /v1/apps/{app}`` with a flat body: ``{"force_https": true}``; ``router_logs``
    is always on; ``sticky_session`` is refused, saying why."""
    user = await authenticate(request)
    body = await json_body(request)
    platform = platform_of(request)
    if isinstance(body, dict) and "force_https" not in body:
        if body.get("router_logs") is True:  # already so: the app as it is
            row = await call(
                apps_service.find_app, db=platform.db, owner=user, name=request.path_params["app"]
            )
            status = lifecycle.app_status(platform.processes, row.name)
            return json_response({"app": schemas.app(row, platform.settings, status=status)})
        if "router_logs" in body:
            raise ValidationFailed(
                {"router_logs": ["cannot be turned off: every request's router line is kept "
                                 "with the app's logs (logs --filter router)"]}
            )  # fmt: skip
        if "sticky_session" in body:
            raise ValidationFailed(
                {"sticky_session": ["is not supported: the router spreads requests over the "
                                    "app's running web instances"]}
            )  # fmt: skip
    if not isinstance(body, dict) or "force_https" not in body:
        raise ValidationFailed(
            {"force_https": ['is the setting that can be changed here: {"force_https": true}']}
        )
    row = await call(
        domains_service.set_force_https,
        db=platform.db,
        bus=platform.bus,
        owner=user,
        app_name=request.path_params["app"],
        enabled=body["force_https"],
    )
    status = lifecycle.app_status(platform.processes, row.name)
    return json_response({"app": schemas.app(row, platform.settings, status=status)})


async def tls_ask(request: Request) -> Response:
    """Caddy's on-demand TLS ``ask``: 200 only for a name an app has, so nobody can make the
    router order certificates for other names (and exhaust the CA's rate limits)."""
    platform = platform_of(request)
    name = request.query_params.get("domain", "")
    allowed = bool(name) and await call(
        domains_service.may_obtain_certificate,
        db=platform.db,
        apps_domain=platform.settings.apps_domain,
        host=name,
    )
    if allowed:
        return json_response({"domain": name, "allowed": True})
    return json_response({"error": f"no app is served at {name!r}"}, status=404)


routes = [
    Route("/v1/apps/{app}", update_app_settings, methods=["PUT", "PATCH"]),
    Route("/v1/apps/{app}/domains", list_domains, methods=["GET"]),
    Route("/v1/apps/{app}/domains", add_domain, methods=["POST"]),
    Route("/v1/apps/{app}/domains/{domain_id}", show_domain, methods=["GET"]),
    Route("/v1/apps/{app}/domains/{domain_id}", update_domain, methods=["PATCH", "PUT"]),
    Route("/v1/apps/{app}/domains/{domain_id}", remove_domain, methods=["DELETE"]),
    Route("/internal/tls/ask", tls_ask, methods=["GET"]),
]
