"""Which API process holds an uploaded source and an app's build cache (several API
processes, no shared disk): the rules of services/sources.py and build_caches.py, on a
SQLite file and a blob store in a temporary directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.blobstore.local import LocalBlobStore
from dockyard.db.engine import make_engine, make_sessionmaker, migrate
from dockyard.errors import Conflict
from dockyard.services import apps, build_caches, sources
from dockyard.services.auth import create_user

A, B = "http://10.0.0.1:8088", "http://10.0.0.2:8088"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dockyard.db'}")
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def app_id(db: sessionmaker[Session]) -> str:
    owner = create_user(db=db, username="alice", email="alice@example.com").user
    return apps.create_app(db=db, owner=owner, name="held-app").id


def store(tmp_path: Path, name: str) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / name)


def put(blobs: LocalBlobStore, key: str, body: bytes = b"cache") -> str:
    pending = blobs.begin(key)
    pending.write(body)
    pending.commit()
    return f"etag-{body.decode()}"


def test_the_first_upload_to_record_itself_holds_the_source(db: sessionmaker[Session]) -> None:
    owner = create_user(db=db, username="bob", email="bob@example.com").user
    source = sources.create_source(db=db, owner=owner, ttl=600).source
    assert sources.holder_of(db=db, source_id=source.id) is None
    sources.mark_uploaded(db=db, source_id=source.id, size=10, holder_url=B)
    # The same upload, received by A at the same moment, comes second: B holds it.
    with pytest.raises(Conflict, match="write-once"):
        sources.mark_uploaded(db=db, source_id=source.id, size=10, holder_url=A)
    assert sources.holder_of(db=db, source_id=source.id) == B


def test_a_cache_is_held_by_the_last_process_that_received_one(
    tmp_path: Path, db: sessionmaker[Session], app_id: str
) -> None:
    blobs_a, blobs_b = store(tmp_path, "a"), store(tmp_path, "b")
    key = build_caches.blob_key(app_id)
    grant = build_caches.Grant(app_id=app_id, started_at=time.time())
    assert build_caches.held(db=db, app_id=app_id) is None

    etag, previous = build_caches.install(
        db=db, grant=grant, holder_url=A, swap=lambda: put(blobs_a, key, b"one")
    )
    assert (etag, previous) == ("etag-one", None)
    assert build_caches.held(db=db, app_id=app_id) == build_caches.Held(A, "etag-one")
    # B receives a newer one: it holds it now, and A is named as the one to tell.
    assert build_caches.install(
        db=db, grant=grant, holder_url=B, swap=lambda: put(blobs_b, key, b"two")
    ) == ("etag-two", A)
    # A again: no one else to tell when the holder does not change.
    blobs_a.delete(key)
    assert build_caches.install(
        db=db, grant=grant, holder_url=A, swap=lambda: put(blobs_a, key, b"three")
    ) == ("etag-three", B)
    blobs_a.delete(key)
    assert build_caches.install(
        db=db, grant=grant, holder_url=A, swap=lambda: put(blobs_a, key, b"four")
    ) == ("etag-four", None)

    # B's copy is stale: it goes when B is told (or looks); A's, the one recorded, stays.
    build_caches.drop_stale(db=db, blobs=blobs_a, app_id=app_id, holder_url=A)
    assert blobs_a.exists(key) and blobs_b.exists(key)
    assert build_caches.drop_all_stale(db=db, blobs=blobs_b, holder_url=B) == 1
    assert not blobs_b.exists(key) and blobs_a.exists(key)


def test_a_reset_drops_the_record_and_refuses_builds_started_before_it(
    tmp_path: Path, db: sessionmaker[Session], app_id: str
) -> None:
    blobs_a, blobs_b = store(tmp_path, "a"), store(tmp_path, "b")
    key = build_caches.blob_key(app_id)
    before = build_caches.Grant(app_id=app_id, started_at=time.time() - 1)
    build_caches.install(db=db, grant=before, holder_url=A, swap=lambda: put(blobs_a, key))

    build_caches.reset(db=db, blobs=blobs_b, app_id=app_id)  # through B, which holds nothing
    assert build_caches.held(db=db, app_id=app_id) is None
    build_caches.drop_stale(db=db, blobs=blobs_a, app_id=app_id, holder_url=A)
    assert not blobs_a.exists(key)
    with pytest.raises(Conflict, match="reset while this deployment built"):
        build_caches.install(db=db, grant=before, holder_url=A, swap=lambda: put(blobs_a, key))
    assert build_caches.held(db=db, app_id=app_id) is None

    after = build_caches.Grant(app_id=app_id, started_at=time.time() + 1)
    build_caches.install(db=db, grant=after, holder_url=B, swap=lambda: put(blobs_b, key))
    assert build_caches.held(db=db, app_id=app_id) == build_caches.Held(B, "etag-cache")
