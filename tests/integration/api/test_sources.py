"""Sources: capability URLs, streamed write-once uploads, expiry — over real HTTP."""

from __future__ import annotations

import gzip
import os
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from tests.conftest import Api
from tests.helpers import wait_for

from dockyard.db.engine import transaction
from dockyard.db.models import Source
from dockyard.errors import Forbidden
from dockyard.services.auth import user_for_api_token
from dockyard.services.clock import now
from dockyard.services.sources import (
    ORPHAN_GRACE,
    UPLOAD,
    authorize,
    blob_key,
    create_source,
    sweep_expired,
)

GZIP_HEADERS = {"Content-Type": "application/x-gzip", "User-Agent": "Go-http-client/1.1"}


def new_source(api: Api) -> dict[str, str]:
    with api.client() as client:
        response = client.post("/v1/sources", json={})
    assert response.status_code == 201
    source: dict[str, str] = response.json()["source"]
    return source


def partials(api: Api) -> list[Path]:
    """Uploads being written (they become the blob only when complete)."""
    return list(api.platform.settings.blobs_dir.rglob(".partial-*"))


def archive_bytes(size: int) -> bytes:
    return gzip.compress(os.urandom(size), compresslevel=1)


def test_round_trip_is_byte_for_byte(api: Api) -> None:
    source = new_source(api)
    assert source["upload_url"].split("?")[0] == source["download_url"].split("?")[0]
    assert source["upload_url"] != source["download_url"]
    body = archive_bytes(5 * 1024 * 1024)
    put = httpx.put(source["upload_url"], content=body, headers=GZIP_HEADERS)
    assert put.status_code == 200
    got = httpx.get(source["download_url"])
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["Cache-Control"] == "no-store"
    assert got.headers["Referrer-Policy"] == "no-referrer"


def test_tokens_are_bound_to_their_method(api: Api) -> None:
    source = new_source(api)
    wrong_put = httpx.put(source["download_url"], content=archive_bytes(100), headers=GZIP_HEADERS)
    assert wrong_put.status_code == 403
    assert "upload_url" in wrong_put.json()["error"]
    assert (
        httpx.put(
            source["upload_url"], content=archive_bytes(100), headers=GZIP_HEADERS
        ).status_code
        == 200
    )
    wrong_get = httpx.get(source["upload_url"])
    assert wrong_get.status_code == 403
    assert "download_url" in wrong_get.json()["error"]
    forged = httpx.get(source["download_url"].split("?")[0] + "?token=guess")
    assert forged.status_code == 403


def test_not_gzip_is_415_and_nothing_is_stored(api: Api) -> None:
    source = new_source(api)
    response = httpx.put(
        source["upload_url"], content=b"PK\x03\x04 a zip file", headers=GZIP_HEADERS
    )
    assert response.status_code == 415
    assert "gzip" in response.json()["error"]
    assert httpx.get(source["download_url"]).status_code == 404
    # Refused bytes do not use up the write-once slot.
    assert (
        httpx.put(
            source["upload_url"], content=archive_bytes(100), headers=GZIP_HEADERS
        ).status_code
        == 200
    )


def test_over_the_size_cap_is_413_without_storing(api: Api) -> None:
    api.platform.settings = api.platform.settings.with_overrides(max_source_bytes=64 * 1024)
    source = new_source(api)
    big = archive_bytes(256 * 1024)
    declared = httpx.put(source["upload_url"], content=big, headers=GZIP_HEADERS)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        for offset in range(0, len(big), 16 * 1024):
            yield big[offset : offset + 16 * 1024]

    streamed = httpx.put(
        source["upload_url"], content=chunks(), headers=GZIP_HEADERS
    )  # chunked: no Content-Length
    assert streamed.status_code == 413
    assert httpx.get(source["download_url"]).status_code == 404
    assert not list(api.platform.settings.blobs_dir.rglob("*.tar.gz"))


def test_write_once_second_upload_is_409(api: Api) -> None:
    source = new_source(api)
    first = archive_bytes(1000)
    assert httpx.put(source["upload_url"], content=first, headers=GZIP_HEADERS).status_code == 200
    again = httpx.put(source["upload_url"], content=archive_bytes(1000), headers=GZIP_HEADERS)
    assert again.status_code == 409
    assert httpx.get(source["download_url"]).content == first


def test_concurrent_double_put_one_wins_whole(api: Api) -> None:
    source = new_source(api)
    bodies = [archive_bytes(3 * 1024 * 1024), archive_bytes(3 * 1024 * 1024)]
    statuses: list[int] = [0, 0]
    barrier = threading.Barrier(2)

    def upload(index: int) -> None:
        barrier.wait()
        statuses[index] = httpx.put(
            source["upload_url"], content=bodies[index], headers=GZIP_HEADERS, timeout=60
        ).status_code

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409]
    winner = statuses.index(200)
    assert httpx.get(source["download_url"]).content == bodies[winner]


def test_client_disconnect_mid_upload_leaves_nothing(api: Api) -> None:
    source = new_source(api)
    url = urlsplit(source["upload_url"])
    body = archive_bytes(2 * 1024 * 1024)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/x-gzip\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[: len(body) * 3 // 4])  # over one write batch
        # The server is writing what it received before the client goes away.
        wait_for(
            lambda: any(p.stat().st_size > 0 for p in partials(api)),
            timeout=10,
            what="the first bytes on disk",
        )
    wait_for(lambda: not partials(api), timeout=10, what="the partial upload to go")
    assert httpx.get(source["download_url"]).status_code == 404
    assert not list(api.platform.settings.blobs_dir.rglob(".partial-*"))
    # The source can still be uploaded whole afterwards.
    assert httpx.put(source["upload_url"], content=body, headers=GZIP_HEADERS).status_code == 200


def test_expired_source_is_refused_and_swept(api: Api) -> None:
    source = new_source(api)
    assert (
        httpx.put(
            source["upload_url"], content=archive_bytes(100), headers=GZIP_HEADERS
        ).status_code
        == 200
    )
    source_id = urlsplit(source["download_url"]).path.rsplit("/", 1)[1]
    assert api.platform.blobs.exists(blob_key(source_id))
    with transaction(api.platform.db) as session:  # the server's clock passes expires_at
        row = session.get(Source, source_id)
        assert row is not None
        row.expires_at = now() - timedelta(seconds=1)
    expired = httpx.get(source["download_url"])
    assert expired.status_code == 403
    assert "expired" in expired.json()["error"]
    with transaction(api.platform.db) as session:  # recorded as this API process's
        assert session.get(Source, source_id).holder_url == api.platform.settings.own_url  # type: ignore[union-attr]
    # Another API process leaves it to its holder (its file is on the holder's disk)...
    elsewhere = "http://10.9.9.9:8088"
    assert sweep_expired(db=api.platform.db, blobs=api.platform.blobs, holder_url=elsewhere) == 0
    assert api.platform.blobs.exists(blob_key(source_id))
    # ...unless the holder never swept it for a day (gone for good): then the row goes.
    later = now() + ORPHAN_GRACE
    assert (
        sweep_expired(
            db=api.platform.db, blobs=api.platform.blobs, holder_url=elsewhere, clock=lambda: later
        )
        == 1
    )
    assert api.platform.blobs.exists(blob_key(source_id))  # not its file to delete
    api.platform.blobs.delete(blob_key(source_id))


def test_the_holder_sweeps_its_expired_source(api: Api) -> None:
    source = new_source(api)
    put = httpx.put(source["upload_url"], content=archive_bytes(100), headers=GZIP_HEADERS)
    assert put.status_code == 200
    source_id = urlsplit(source["download_url"]).path.rsplit("/", 1)[1]
    with transaction(api.platform.db) as session:
        row = session.get(Source, source_id)
        assert row is not None
        row.expires_at = now() - timedelta(seconds=1)
    own = api.platform.settings.own_url
    assert sweep_expired(db=api.platform.db, blobs=api.platform.blobs, holder_url=own) == 1
    assert not api.platform.blobs.exists(blob_key(source_id))


def test_a_source_expires_ttl_seconds_after_its_creation_on_the_servers_clock(api: Api) -> None:
    created_at = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)

    def at(seconds: int) -> Callable[[], datetime]:
        return lambda: created_at + timedelta(seconds=seconds)

    db = api.platform.db
    owner = user_for_api_token(db=db, secret=api.token)
    new = create_source(db=db, owner=owner, ttl=60, clock=at(0))
    source_id = new.source.id

    def upload_at(seconds: int) -> None:
        authorize(
            db=db, source_id=source_id, token=new.upload_token, purpose=UPLOAD, clock=at(seconds)
        )

    upload_at(59)
    with pytest.raises(Forbidden) as refused:
        upload_at(60)
    assert refused.value.code == "source_expired"
    assert "create a new source" in refused.value.message
    own = api.platform.settings.own_url
    assert sweep_expired(db=db, blobs=api.platform.blobs, holder_url=own, clock=at(59)) == 0
    assert sweep_expired(db=db, blobs=api.platform.blobs, holder_url=own, clock=at(60)) == 1


def test_create_source_needs_authentication(api: Api) -> None:
    assert httpx.post(f"{api.url}/v1/sources", json={}).status_code == 401
