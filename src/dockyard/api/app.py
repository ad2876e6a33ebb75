"""The ASGI application: routes per resource, one error table."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from dockyard.api import errors, stream, wsframes
from dockyard.api.routes import (
    accounts,
    addons,
    apps,
    build_caches,
    collaboration,
    deployments,
    domains,
    logs,
    meta,
    oneoffs,
    runtime,
    sources,
)
from dockyard.errors import DockyardError
from dockyard.platform import Platform
from dockyard.web import routes as web_routes

_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"]*", re.IGNORECASE)


class RedactTokens(logging.Filter):
    """Capability tokens travel in query strings; the access log must never show them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_QUERY.sub(r"\1[redacted]", record.msg)
        return True


def install_log_redaction() -> None:
    for name in ("uvicorn.access", "uvicorn.error", "dockyard"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def create_app(platform: Platform, *, lifespan: Lifespan | None = None) -> Starlette:
    @asynccontextmanager
    async def default_lifespan(_app: Starlette) -> AsyncIterator[None]:
        await platform.bus.start()
        try:
            yield
        finally:
            await platform.bus.close()

    install_log_redaction()
    app = Starlette(
        routes=[
            *accounts.routes,
            *apps.routes,
            *domains.routes,
            *sources.routes,
            *build_caches.routes,
            *deployments.routes,
            *runtime.routes,
            *collaboration.routes,
            *meta.routes,
            *logs.routes,
            *oneoffs.routes,
            *addons.routes,
            *stream.routes,
            # The dashboard, at / (the API keeps /v1 to itself).
            *web_routes.routes,
        ],
        exception_handlers={
            DockyardError: errors.handle_dockyard_error,
            HTTPException: errors.handle_http_exception,
        },
        middleware=[Middleware(wsframes.expose_connection)],
        lifespan=lifespan or default_lifespan,
    )
    app.state.platform = platform
    return app
