"""The API's own description: ``/v1/openapi.json``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api.routes.common import json_response, platform_of


async def openapi_document(request: Request) -> Response:
    # Imported here: pydantic and the generation cost a server start nothing until asked.
    from dockyard.api.openapi import document

    return json_response(document(platform_of(request).settings.public_url))


routes = [Route("/v1/openapi.json", openapi_document, methods=["GET"])]
