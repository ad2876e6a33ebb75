"""``POST /v1/apps/{app}/rollback``: which releases can be started again, and what a
refusal says (the rollback itself runs end to end in tests/e2e/test_day2_client_flow.py)."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import update
from tests.conftest import Api

from dockyard.db.models import WorkerRow
from dockyard.domain import status as st
from dockyard.services import deployments as service
from dockyard.services import presence
from dockyard.services.clock import now

EXTERNAL = "https://code.example.com/app/archive/main.tar.gz"


def _deployment(api: Api, client: httpx.Client, final: str, *, kept: bool = True) -> str:
    """A deployment of ``back-app`` run to ``final`` as a worker would, its release
    directory left on disk when ``kept``."""
    created = client.post(
        "/v1/apps/back-app/deployments", json={"deployment": {"source_url": EXTERNAL}}
    ).json()["deployment"]
    claimed = service.claim_next(
        db=api.platform.db, bus=api.platform.bus, worker_id="test", lease_seconds=30
    )
    assert claimed is not None and claimed.id == created["id"]
    path = [st.PUSHING, st.STARTING, st.SUCCESS] if final == st.SUCCESS else [final]
    for status in path:
        service.transition(
            db=api.platform.db, bus=api.platform.bus, deployment_id=claimed.id, new_status=status
        )
    if kept:
        (api.platform.settings.releases_dir / claimed.id).mkdir(parents=True)
    return claimed.id


def test_rollback_targets_and_refusals(api: Api) -> None:
    bob = api.new_user("bobby")
    with api.client(validate=True) as client, api.client(bob, validate=True) as stranger:
        assert client.post("/v1/apps", json={"app": {"name": "back-app"}}).status_code == 201
        nothing = client.post("/v1/apps/back-app/rollback", json={})
        assert nothing.status_code == 422
        assert "no earlier successful release" in nothing.json()["errors"]["deployment_id"][0]

        gone = _deployment(api, client, st.SUCCESS, kept=False)
        first = _deployment(api, client, st.SUCCESS)
        failed = _deployment(api, client, st.BUILD_ERROR)
        current = _deployment(api, client, st.SUCCESS)

        # No target: the successful release before the serving one (a failure is skipped).
        rollback = client.post("/v1/apps/back-app/rollback", json={})
        assert rollback.status_code == 201, rollback.text
        body = rollback.json()["deployment"]
        assert body["rollback_of"] == first and body["status"] == "queued"
        listed = client.get("/v1/apps/back-app/deployments?").json()["deployments"]
        assert listed[0]["id"] == body["id"] and listed[0]["rollback_of"] == first
        service.transition(
            db=api.platform.db, bus=api.platform.bus, deployment_id=body["id"],
            new_status=st.ABORTED,
        )

        for target, words in [
            (failed, "ended as build-error"),
            (current, "is the one serving now"),
            (gone, "no longer kept"),
        ]:
            refused = client.post("/v1/apps/back-app/rollback", json={"deployment_id": target})
            assert refused.status_code == 422, refused.text
            assert words in refused.json()["errors"]["deployment_id"][0]
        unknown = client.post("/v1/apps/back-app/rollback", json={"deployment_id": "nope"})
        assert unknown.status_code == 404 and unknown.json()["resource"] == "deployment"
        bad = client.post("/v1/apps/back-app/rollback", json={"deployment_id": 3})
        assert bad.status_code == 422

        # A named, kept release; and nobody else's app can be rolled back.
        named = client.post("/v1/apps/back-app/rollback", json={"deployment_id": first})
        assert named.status_code == 201 and named.json()["deployment"]["rollback_of"] == first
        assert stranger.post("/v1/apps/back-app/rollback", json={}).status_code == 404


def _claim(api: Api, worker: str) -> str | None:
    claimed = service.claim_next(
        db=api.platform.db, bus=api.platform.bus, worker_id=f"{worker}:1", lease_seconds=30,
        worker_name=worker,
    )  # fmt: skip
    return None if claimed is None else claimed.id


def test_a_rollback_is_claimed_by_the_worker_that_keeps_its_release(api: Api) -> None:
    """Separate workers keep releases in their own data dirs: another live worker leaves
    the rollback to the one that built the release; once that one is gone, anyone takes it
    (and the deployment says the release is no longer kept)."""
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "back-app"}}).status_code == 201
        ids = []
        for worker in ("w1", "w2"):
            created = client.post(
                "/v1/apps/back-app/deployments", json={"deployment": {"source_url": EXTERNAL}}
            ).json()["deployment"]
            assert _claim(api, worker) == created["id"]
            for status in (st.PUSHING, st.STARTING, st.SUCCESS):
                service.transition(
                    db=api.platform.db, bus=api.platform.bus, deployment_id=created["id"],
                    new_status=status,
                )  # fmt: skip
            (api.platform.settings.releases_dir / created["id"]).mkdir(parents=True)
            ids.append(created["id"])
        for worker in ("w1", "w2"):
            presence.beat(db=api.platform.db, name=worker, runtime="local", instance=worker)
        rollback = client.post("/v1/apps/back-app/rollback", json={}).json()["deployment"]
        assert rollback["rollback_of"] == ids[0]

        assert _claim(api, "w2") is None  # w1 keeps that release, and is alive
        assert _claim(api, "w1") == rollback["id"]
        service.transition(
            db=api.platform.db, bus=api.platform.bus, deployment_id=rollback["id"],
            new_status=st.ABORTED,
        )  # fmt: skip

        again = client.post("/v1/apps/back-app/rollback", json={"deployment_id": ids[0]})
        assert again.status_code == 201
        with api.platform.db.begin() as session:
            session.execute(update(WorkerRow).values(seen_at=now() - timedelta(minutes=5)))
        assert _claim(api, "w2") == again.json()["deployment"]["id"]  # w1 is gone
