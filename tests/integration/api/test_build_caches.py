"""The internal build-cache URL of a deployment (dockyard worker): only the deployment's
capability token opens it, only while it builds; uploads are bounded and replace the
app's cache whole; a cache reset and the app's deletion drop it — on both databases."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from tests.conftest import Api

from dockyard.db.engine import transaction
from dockyard.db.models import Deployment
from dockyard.domain import status as st
from dockyard.services import build_caches

GZIP = {"Content-Type": "application/gzip"}


@pytest.fixture
def building(api: Api) -> Iterator[tuple[httpx.Client, str, str]]:
    """An app's deployment in its build, and its cache URL (with the worker's token)."""
    with api.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "cached-app"}}).status_code == 201
        created = client.post(
            "/v1/apps/cached-app/deployments",
            json={"deployment": {"source_url": "https://code.example.com/a.tar.gz"}},
        )
        deployment_id = created.json()["deployment"]["id"]
        set_status(api, deployment_id, st.BUILDING)
        base = f"{api.url}/v1/internal/build-caches/{deployment_id}"
        yield client, base, build_caches.token_for(api.platform.jwt_key, deployment_id)


def set_status(api: Api, deployment_id: str, status: str) -> None:
    with transaction(api.platform.db) as session:
        session.execute(update(Deployment).where(Deployment.id == deployment_id).values(status=status))


def test_only_the_deployments_token_opens_its_cache(
    api: Api, building: tuple[httpx.Client, str, str]
) -> None:
    client, base, token = building
    body = gzip.compress(os.urandom(4096))
    # No cache yet; then one sent, fetched back whole, and unchanged for its ETag.
    assert httpx.get(f"{base}?token={token}").status_code == 404
    sent = httpx.put(f"{base}?token={token}", content=body, headers=GZIP)
    assert sent.status_code == 200, sent.text
    etag = sent.json()["build_cache"]["etag"]
    got = httpx.get(f"{base}?token={token}")
    assert (got.status_code, got.content, got.headers["ETag"]) == (200, body, etag)
    assert httpx.get(f"{base}?token={token}", headers={"If-None-Match": etag}).status_code == 304

    # No token, the user's own API token or JWT, a token of another deployment: refused.
    assert httpx.get(base).status_code == 401
    assert client.get(base).status_code == 401  # the user's credentials are no token here
    assert httpx.get(f"{base}?token={api.token}").status_code == 403
    other = build_caches.token_for(api.platform.jwt_key, "00000000-0000-0000-0000-000000000000")
    assert httpx.get(f"{base}?token={other}").status_code == 403
    assert httpx.put(f"{base}?token={other}", content=body, headers=GZIP).status_code == 403
    # An id that is no deployment, or one with a path in it, opens nothing.
    missing = "00000000-0000-0000-0000-000000000000"
    assert httpx.get(f"{api.url}/v1/internal/build-caches/{missing}?token={other}").status_code == 404
    tricky = f"{api.url}/v1/internal/build-caches/..%2F..%2Fsecret.key?token={token}"
    assert httpx.get(tricky).status_code in (403, 404)

    # Not gzip, over the limit: refused, the cache stays as it was.
    assert httpx.put(f"{base}?token={token}", content=b"plain", headers=GZIP).status_code == 415
    api.platform.settings = replace(api.platform.settings, max_cache_bytes=len(body) - 1)
    too_big = httpx.put(f"{base}?token={token}", content=body, headers=GZIP)
    assert too_big.status_code == 413 and "DOCKYARD_MAX_CACHE_BYTES" in too_big.text
    assert httpx.get(f"{base}?token={token}").content == body

    # Once the build is over, its token opens nothing any more.
    set_status(api, base.rsplit("/", 1)[-1], st.SUCCESS)
    ended = httpx.get(f"{base}?token={token}")
    assert ended.status_code == 403 and "success" in ended.text


def test_a_cache_reset_and_the_apps_deletion_drop_the_shared_cache(
    api: Api, building: tuple[httpx.Client, str, str]
) -> None:
    client, base, token = building
    deployment_id = base.rsplit("/", 1)[-1]
    body = gzip.compress(b"cache")
    assert httpx.put(f"{base}?token={token}", content=body, headers=GZIP).status_code == 200
    assert client.delete("/v1/apps/cached-app/caches/deployment").status_code == 204
    assert httpx.get(f"{base}?token={token}").status_code == 404
    # This build started before the reset: what it built from may not come back.
    late = httpx.put(f"{base}?token={token}", content=body, headers=GZIP)
    assert late.status_code == 409 and "reset while this deployment built" in late.text
    assert httpx.get(f"{base}?token={token}").status_code == 404

    # A build started after the reset sends its cache; deleting the app drops it.
    with transaction(api.platform.db) as session:
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(started_at=datetime.now(UTC) + timedelta(seconds=5))
        )
    assert httpx.put(f"{base}?token={token}", content=body, headers=GZIP).status_code == 200
    app_id = client.get("/v1/apps/cached-app").json()["app"]["id"]
    set_status(api, deployment_id, st.BUILD_ERROR)  # deleting an app waits for its builds
    deleted = client.delete("/v1/apps/cached-app", params={"current_name": "cached-app"})
    assert deleted.status_code == 204
    assert not api.platform.blobs.exists(build_caches.blob_key(app_id))
