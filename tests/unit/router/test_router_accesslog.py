"""The router's access lines: one per answered request, written in batches off the loop."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence

import httpx
import pytest

from conftest import StartApp
from dockyard.router import Router, RouteTable
from dockyard.router.accesslog import AccessLog

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

Batch = Mapping[str, Sequence[tuple[float, str]]]


async def test_each_answered_request_is_one_line_for_its_app(
    table: RouteTable, start_app: StartApp
) -> None:
    written: list[Batch] = []
    access_log = AccessLog(written.append, flush_seconds=0.05)
    router = Router(table, apps_domain="localhost", access_log=access_log)
    await router.start("127.0.0.1", 0)
    try:
        backend = await start_app("a")
        table.set_backend("site", backend.backend)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{router.port}") as client:
            assert (
                await client.get("/?q=1", headers={"Host": "site.localhost"})
            ).status_code == 200
            assert (await client.get("/", headers={"Host": "gone.localhost"})).status_code == 404
            assert (await client.get("/", headers={"Host": "example.org"})).status_code == 404
        for _ in range(100):
            if written:
                break
            await asyncio.sleep(0.02)
    finally:
        await router.close()
    lines = {
        app: [text for _, text in entries] for batch in written for app, entries in batch.items()
    }
    assert set(lines) == {"site", "gone"}  # a host naming no app is nobody's line
    (site,) = lines["site"]
    assert re.fullmatch(
        r'method=GET path="/\?q=1" host=site.localhost from="127.0.0.1" status=200 duration=\d+\.\d{3}s',
        site,
    ), site
    assert "status=404" in lines["gone"][0]


async def test_lines_past_the_bound_are_dropped_and_counted() -> None:
    written: list[Batch] = []
    access_log = AccessLog(written.append, max_pending=2)
    for _ in range(5):
        access_log.record("a", b"GET", b"/", "a.localhost", b"::1", 200, 0.001)
    await access_log.flush()
    assert [len(batch["a"]) for batch in written] == [2]
    assert access_log.dropped == 3


async def test_a_failing_writer_does_not_stop_the_log(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[Batch] = []

    def flaky(batch: Batch) -> None:
        calls.append(batch)
        if len(calls) == 1:
            raise OSError("disk full")

    access_log = AccessLog(flaky)
    access_log.record("a", b"GET", b"/1", "h", b"ip", 200, 0.0)
    await access_log.flush()
    access_log.record("a", b"GET", b"/2", "h", b"ip", 200, 0.0)
    await access_log.flush()
    assert len(calls) == 2
    assert "could not be written" in caplog.text
