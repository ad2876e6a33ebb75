"""A deployment's page: its status and build log, followed live by deployment.js over the
API's deployment stream."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dockyard.domain.records import UserRecord
from dockyard.platform import Platform
from dockyard.services import apps as apps_service
from dockyard.services import deployments as deployments_service
from dockyard.web.common import page, platform_of, render, signed_in


def _deployment_view(
    platform: Platform, user: UserRecord, name: str, deployment_id: str
) -> dict[str, Any]:
    app = apps_service.find_app(db=platform.db, owner=user, name=name)
    deployment = deployments_service.find_deployment(
        db=platform.db, owner=user, app_name=name, deployment_id=deployment_id
    )
    output = deployments_service.deployment_output(
        db=platform.db, owner=user, app_name=name, deployment_id=deployment_id
    )
    return {
        "app": app,
        "deployment": deployment,
        "output": output,
        "app_url": platform.settings.app_url(name),
        "stream_path": f"/v1/apps/{app.id}/deployments-stream",
    }


@page
async def deployment_page(request: Request) -> Response:
    visitor = await signed_in(request)
    view = await run_in_threadpool(
        _deployment_view,
        platform_of(request),
        visitor.user,
        request.path_params["app"],
        request.path_params["deployment_id"],
    )
    return render(request, "deployment.html", visitor=visitor, **view)
