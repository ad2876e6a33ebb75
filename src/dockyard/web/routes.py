"""The dashboard's routes, mounted at / next to the API's /v1 (``dockyard.api.app``)."""

from __future__ import annotations

from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dockyard.web import account, apps, deployments
from dockyard.web.common import HERE

routes = [
    Route("/", apps.apps_page, methods=["GET"]),
    Route("/signin", account.signin_page, methods=["GET"]),
    Route("/signin", account.signin, methods=["POST"]),
    Route("/signout", account.signout, methods=["POST"]),
    Route("/session/token", account.page_token, methods=["POST"]),
    Route("/apps", apps.create_app, methods=["POST"]),
    Route("/apps/{app}", apps.app_page, methods=["GET"]),
    Route("/apps/{app}/scale", apps.app_action(apps.scale), methods=["POST"]),
    Route("/apps/{app}/restart", apps.app_action(apps.restart), methods=["POST"]),
    Route("/apps/{app}/variables", apps.app_action(apps.set_variable), methods=["POST"]),
    Route("/apps/{app}/variables/remove", apps.app_action(apps.remove_variable), methods=["POST"]),
    Route("/apps/{app}/cache/reset", apps.app_action(apps.reset_cache), methods=["POST"]),
    Route("/apps/{app}/deployments/{deployment_id}", deployments.deployment_page, methods=["GET"]),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]
