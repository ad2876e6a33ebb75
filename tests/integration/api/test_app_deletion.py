"""Deleting an app ends its deployments first, takes no new one meanwhile, and its
sandbox uid is never handed out again (issue 15, item 3), on SQLite and PostgreSQL.
The running case (a release starting) is in tests/e2e/test_hardening.py."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from tests.conftest import Api

from dockyard.db.models import App
from dockyard.services import apps as apps_service
from dockyard.services.auth import user_for_api_token


def _deploy(client: httpx.Client, app: str) -> int:
    response = client.post(
        f"/v1/apps/{app}/deployments",
        json={"deployment": {"source_url": "https://example.com/app.tar.gz"}},
    )
    return int(response.status_code)


def _uid(api: Api, app: str) -> int:
    with api.platform.db() as session:
        uid = session.scalar(select(App.sandbox_uid).where(App.name == app))
    assert uid is not None
    return uid


def test_a_deleted_apps_uid_is_never_given_to_another_app(api: Api) -> None:
    with api.client() as client:
        for name in ("first-app", "second-app"):
            assert client.post("/v1/apps", json={"app": {"name": name}}).status_code == 201
        highest = _uid(api, "second-app")
        assert client.delete("/v1/apps/second-app").status_code == 204
        assert client.post("/v1/apps", json={"app": {"name": "third-app"}}).status_code == 201
        assert _uid(api, "third-app") > highest
        # Nor after a name is reused.
        assert client.post("/v1/apps", json={"app": {"name": "second-app"}}).status_code == 201
        assert _uid(api, "second-app") > _uid(api, "third-app")


def test_queued_deployments_end_before_their_app_is_deleted(api: Api) -> None:
    """No worker runs here: the queued deployments are aborted, not left to one."""
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "queued-app"}}).status_code == 201
        assert _deploy(client, "queued-app") == 201
        assert _deploy(client, "queued-app") == 201
        assert client.delete("/v1/apps/queued-app").status_code == 204
        assert client.get("/v1/apps/queued-app").status_code == 404


def test_an_app_being_deleted_takes_no_new_deployment(api: Api) -> None:
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "leaving-app"}}).status_code == 201
        owner = user_for_api_token(db=api.platform.db, secret=api.token)
        apps_service.mark_deleting(db=api.platform.db, owner=owner, name="leaving-app")
        refused = client.post(
            "/v1/apps/leaving-app/deployments",
            json={"deployment": {"source_url": "https://example.com/app.tar.gz"}},
        )
        assert refused.status_code == 409
        assert "being deleted" in refused.json()["error"]
        # Deleting again finishes the job.
        assert client.delete("/v1/apps/leaving-app").status_code == 204
