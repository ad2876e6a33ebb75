"""Two API processes on one PostgreSQL database, each with a disk of its own (README,
"Running on several machines"): whichever receives a source's upload holds it and the
other passes it on; whichever receives a build cache holds it, the other never serves a
stale copy, and a reset through either drops it."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update
from tests.conftest import Api, ThreadServer, make_settings

from dockyard.api.app import create_app
from dockyard.bootstrap import build_platform
from dockyard.db.engine import transaction
from dockyard.db.models import Deployment
from dockyard.domain import status as st
from dockyard.errors import Conflict
from dockyard.services import build_caches, sources
from dockyard.services.auth import create_user

GZIP = {"Content-Type": "application/gzip"}


def start_api(stack: ExitStack, tmp_path: Path, postgres_url: str, name: str, token: str) -> Api:
    settings = make_settings(tmp_path / name, postgres_url)
    platform = build_platform(settings)
    stack.callback(platform.engine.dispose)
    stack.enter_context(ThreadServer(create_app(platform), settings))
    return Api(platform=platform, url=settings.public_url, token=token, username="alice")


@pytest.fixture
def apis(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Api, Api, ExitStack]]:
    """API processes A and B; B is stopped when its ExitStack closes."""
    with ExitStack() as stack_a, ExitStack() as stack_b:
        a = start_api(stack_a, tmp_path, postgres_url, "a", "")
        a.token = create_user(db=a.platform.db, username="alice", email="a@example.com").secret
        b = start_api(stack_b, tmp_path, postgres_url, "b", a.token)
        yield a, b, stack_b


def at(api: Api, url: str) -> str:
    """``url`` sent to ``api`` (as a load balancer might)."""
    parts = urlsplit(url)
    return f"{api.url}{parts.path}?{parts.query}"


def test_the_api_that_receives_the_upload_holds_the_source(
    apis: tuple[Api, Api, ExitStack],
) -> None:
    a, b, stop_b = apis
    with a.client() as client:
        source = client.post("/v1/sources", json={}).json()["source"]
    source_id = urlsplit(source["upload_url"]).path.rsplit("/", 1)[-1]
    body = gzip.compress(os.urandom(4096))
    # Created through A, uploaded through B: B holds it, on its disk only.
    assert httpx.put(at(b, source["upload_url"]), content=body, headers=GZIP).status_code == 200
    assert sources.holder_of(db=a.platform.db, source_id=source_id) == b.platform.settings.own_url
    assert b.platform.blobs.exists(sources.blob_key(source_id))
    assert not a.platform.blobs.exists(sources.blob_key(source_id))
    # Sources stay write-once across processes.
    again = httpx.put(at(a, source["upload_url"]), content=body, headers=GZIP)
    assert again.status_code == 409 and "write-once" in again.text
    with pytest.raises(Conflict, match="write-once"):
        sources.mark_uploaded(db=a.platform.db, source_id=source_id, size=1, holder_url=a.url)

    # The download URL works through either: A passes B's copy on.
    for api in (a, b):
        got = httpx.get(at(api, source["download_url"]))
        assert (got.status_code, got.content) == (200, body)
    # B gone: A says the source must be uploaded again.
    stop_b.close()
    gone = httpx.get(at(a, source["download_url"]))
    assert gone.status_code == 409
    assert "upload the source again" in gone.json()["error"]


@pytest.fixture
def building(apis: tuple[Api, Api, ExitStack]) -> tuple[str, str, str]:
    """An app's deployment in its build: the app's id, its cache URL path and token."""
    a, _b, _stop = apis
    with a.client() as client:
        assert client.post("/v1/apps", json={"app": {"name": "cached-app"}}).status_code == 201
        created = client.post(
            "/v1/apps/cached-app/deployments",
            json={"deployment": {"source_url": "https://code.example.com/a.tar.gz"}},
        ).json()["deployment"]
    with transaction(a.platform.db) as session:
        session.execute(
            update(Deployment).where(Deployment.id == created["id"]).values(status=st.BUILDING)
        )
    token = build_caches.token_for(a.platform.jwt_key, created["id"])
    return created["app_id"], f"/v1/internal/build-caches/{created['id']}", token


def test_the_api_that_receives_a_build_cache_holds_it_and_a_reset_drops_it_anywhere(
    apis: tuple[Api, Api, ExitStack], building: tuple[str, str, str]
) -> None:
    a, b, _stop = apis
    app_id, path, token = building
    db = a.platform.db
    first, second = gzip.compress(b"first cache"), gzip.compress(b"second cache")

    def url(api: Api) -> str:
        return f"{api.url}{path}?token={token}"

    def copy_on(api: Api) -> bool:
        return api.platform.blobs.exists(build_caches.blob_key(app_id))

    sent = httpx.put(url(a), content=first, headers=GZIP)
    assert sent.status_code == 200, sent.text
    held = build_caches.held(db=db, app_id=app_id)
    assert held == build_caches.Held(
        a.platform.settings.own_url, sent.json()["build_cache"]["etag"]
    )
    assert httpx.get(url(a)).content == first
    assert httpx.get(url(b)).status_code == 404  # workers ask the holder

    # A newer cache reaches B: B holds it; A's copy is never served again, and goes
    # when A hears of the move.
    assert httpx.put(url(b), content=second, headers=GZIP).status_code == 200
    moved = build_caches.held(db=db, app_id=app_id)
    assert moved is not None and moved.holder_url == b.platform.settings.own_url
    assert httpx.get(url(b)).content == second
    assert httpx.get(url(a)).status_code == 404
    build_caches.drop_stale(
        db=db, blobs=b.platform.blobs, app_id=app_id, holder_url=b.platform.settings.own_url
    )
    assert copy_on(b)  # the one recorded stays
    # As at A's start, or after a gap of its bus: every copy not recorded as A's goes.
    build_caches.drop_all_stale(
        db=db, blobs=a.platform.blobs, holder_url=a.platform.settings.own_url
    )
    assert not copy_on(a)

    # A reset through A (which holds nothing): the record goes, B serves it no more.
    with a.client() as client:
        assert client.delete("/v1/apps/cached-app/caches/deployment").status_code == 204
    assert build_caches.held(db=db, app_id=app_id) is None
    assert httpx.get(url(b)).status_code == 404
    build_caches.drop_stale(
        db=db, blobs=b.platform.blobs, app_id=app_id, holder_url=b.platform.settings.own_url
    )
    assert not copy_on(b)
    # This build started before the reset: neither process takes its cache.
    for api in (a, b):
        late = httpx.put(url(api), content=first, headers=GZIP)
        assert late.status_code == 409 and "reset while this deployment built" in late.text
