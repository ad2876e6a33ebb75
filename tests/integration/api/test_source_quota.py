"""The quota on sources waiting to be deployed (issue 15, item 6), over real HTTP on
SQLite and PostgreSQL, scaled down: a handful of sources, a few MiB."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import Api, make_settings, serving_api

GZIP_HEADERS = {"Content-Type": "application/x-gzip"}
MAX_SOURCES = 5
MAX_BYTES = 3 * 1024 * 1024


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[Api]:
    settings = make_settings(
        tmp_path,
        database_url,
        DOCKYARD_MAX_PENDING_SOURCES=str(MAX_SOURCES),
        DOCKYARD_MAX_PENDING_SOURCE_BYTES=str(MAX_BYTES),
    )
    with serving_api(settings) as api:
        yield api


def _archive(size: int) -> bytes:
    return b"\x1f\x8b" + os.urandom(size - 2)


def _new_source(client: httpx.Client) -> httpx.Response:
    return client.post("/v1/sources", json={})


def test_a_user_holds_at_most_so_many_sources(api: Api) -> None:
    with api.client() as client:
        for _ in range(MAX_SOURCES):
            assert _new_source(client).status_code == 201
        refused = _new_source(client)
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "quota_exceeded"
    assert f"({MAX_SOURCES})" in body["error"] and "expires" in body["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 600
    # Another user's room is their own.
    with api.client(api.new_user("bob")) as bob:
        assert _new_source(bob).status_code == 201


def test_expired_sources_give_their_room_back(api: Api) -> None:
    with api.client() as client:
        for _ in range(MAX_SOURCES):
            assert _new_source(client).status_code == 201
        assert _new_source(client).status_code == 429
        with api.platform.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE sources SET expires_at = created_at")
        assert _new_source(client).status_code == 201


def test_uploads_are_refused_past_the_bytes_a_user_may_hold(api: Api) -> None:
    with api.client() as client:
        sources = [_new_source(client).json()["source"] for _ in range(3)]
    one_mib = _archive(1024 * 1024)
    first = httpx.put(sources[0]["upload_url"], content=one_mib + one_mib, headers=GZIP_HEADERS)
    assert first.status_code == 200, first.text
    # Declared: refused before a byte is stored, saying what is held and what is allowed.
    too_big = httpx.put(sources[1]["upload_url"], content=one_mib + one_mib, headers=GZIP_HEADERS)
    assert too_big.status_code == 413
    assert "2.0 MiB" in too_big.json()["error"] and "3.0 MiB" in too_big.json()["error"]
    # What fits still does; the refused one gave its reservation back.
    assert (
        httpx.put(sources[1]["upload_url"], content=one_mib, headers=GZIP_HEADERS).status_code
        == 200
    )
    # Chunked (no Content-Length): cut once it passes the room left (none now).

    def pieces() -> Iterator[bytes]:
        yield gzip.compress(b"x")[:2]
        yield os.urandom(512 * 1024)

    chunked = httpx.put(sources[2]["upload_url"], content=pieces(), headers=GZIP_HEADERS)
    assert chunked.status_code == 413
    assert "left of what your sources" in chunked.json()["error"]
    blobs = list((api.platform.settings.blobs_dir / "sources").glob("*"))
    assert len(blobs) == 2  # nothing of the refused uploads was kept
