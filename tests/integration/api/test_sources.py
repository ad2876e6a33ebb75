"""Sources: capability URLs, streamed write-once uploads, expiry — over real HTTP."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
from tests.conftest import Api

from dockyard.services.sources import blob_key, sweep_expired

GZIP_HEADERS = {"Content-Type": "application/x-gzip", "User-Agent": "Go-http-client/1.1"}


def new_source(api: Api) -> dict[str, str]:
    with api.client() as client:
        response = client.post("/v1/sources", json={})
    assert response.status_code == 201
    source: dict[str, str] = response.json()["source"]
    return source


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
        sock.sendall(head.encode() + body[: len(body) // 2])
        time.sleep(0.2)  # let the server write what it has received
    deadline = time.monotonic() + 10
    while any(api.platform.settings.blobs_dir.rglob(".partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(source["download_url"]).status_code == 404
    assert not list(api.platform.settings.blobs_dir.rglob(".partial-*"))
    # The source can still be uploaded whole afterwards.
    assert httpx.put(source["upload_url"], content=body, headers=GZIP_HEADERS).status_code == 200


def test_expired_source_is_refused_and_swept(api: Api) -> None:
    api.platform.settings = api.platform.settings.with_overrides(source_ttl=1)
    source = new_source(api)
    assert (
        httpx.put(
            source["upload_url"], content=archive_bytes(100), headers=GZIP_HEADERS
        ).status_code
        == 200
    )
    source_id = urlsplit(source["download_url"]).path.rsplit("/", 1)[1]
    assert api.platform.blobs.exists(blob_key(source_id))
    time.sleep(1.1)  # the TTL is on the server's clock; one second is the smallest TTL
    expired = httpx.get(source["download_url"])
    assert expired.status_code == 403
    assert "expired" in expired.json()["error"]
    assert sweep_expired(db=api.platform.db, blobs=api.platform.blobs) == 1
    assert not api.platform.blobs.exists(blob_key(source_id))


def test_create_source_needs_authentication(api: Api) -> None:
    assert httpx.post(f"{api.url}/v1/sources", json={}).status_code == 401
