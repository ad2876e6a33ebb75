"""The router end to end: real sockets, real uvicorn backends, a real client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import tracemalloc
from collections.abc import AsyncIterator

import httpx
import pytest
from router_helpers import PIECE, MiB, get, read_response
from websockets.asyncio.client import connect as ws_connect

from conftest import StartApp, StartRouter
from dockyard.router import Backend, Limits, Router, RouteTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def client(router: Router) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{router.port}", timeout=10)


def host(app: str, router: Router) -> dict[str, str]:
    return {"Host": f"{app}.localhost:{router.port}"}


# -- routing ------------------------------------------------------------------------------


async def test_routes_by_host_name_case_insensitively(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    a, b = await start_app("a"), await start_app("b")
    table.set_backend("a", a.backend)
    table.set_backend("b", b.backend)
    async with client(router) as c:
        assert (await c.get("/", headers=host("a", router))).json()["name"] == "a"
        assert (await c.get("/", headers={"Host": "B.LocalHost"})).json()["name"] == "b"
        assert (await c.get("/", headers={"Host": "a.localhost."})).json()["name"] == "a"


async def test_an_apps_instances_answer_in_turn_and_a_refused_one_is_skipped(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    one, two = await start_app("one"), await start_app("two")
    with socket.socket() as closed:  # a port nothing listens on: an instance just died
        closed.bind(("127.0.0.1", 0))
        dead = Backend("127.0.0.1", closed.getsockname()[1])
    table.set_backends("a", [one.backend, two.backend])
    names = []
    for _ in range(4):  # a new connection each time: no reuse of an open one
        async with client(router) as c:
            names.append((await c.get("/", headers=host("a", router))).json()["name"])
    assert sorted(names) == ["one", "one", "two", "two"]

    table.set_backends("a", [dead, one.backend])
    for _ in range(4):
        async with client(router) as c:
            resp = await c.get("/", headers=host("a", router))
            assert resp.status_code == 200 and resp.json()["name"] == "one"


async def test_an_app_scaled_to_zero_says_so(router: Router, table: RouteTable) -> None:
    table.set_backends("a", [], empty="scaled-down")
    async with client(router) as c:
        resp = await c.get("/", headers=host("a", router))
    assert resp.status_code == 503
    assert "scaled to zero web instances" in resp.text


async def test_unknown_host_gets_a_404_page_naming_it(router: Router) -> None:
    async with client(router) as c:
        for name in ("nope.localhost", "example.com", "a.b.localhost"):
            resp = await c.get("/", headers={"Host": f"{name}:{router.port}"})
            assert resp.status_code == 404
            assert resp.headers["content-type"].startswith("text/html")
            assert f"No app is served at {name}." in resp.text


async def test_a_host_header_cannot_inject_html(router: Router) -> None:
    async with client(router) as c:
        resp = await c.get("/", headers={"Host": "<script>x</script>"})
    assert resp.status_code == 404
    assert "<script>" not in resp.text
    assert "&lt;script&gt;" in resp.text


async def test_keep_alive_and_pipelined_requests_share_one_connection(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    ports = set()
    for _ in range(5):
        writer.write(get("a.localhost"))
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200")
        ports.add(httpx.Response(200, content=body).json()["headers"]["x-forwarded-port"])
    # Pipelined: three heads in one write, three answers in order, unknown host included.
    writer.write(get("a.localhost") + get("zzz.localhost") + get("a.localhost", "/chunks"))
    assert (await read_response(reader))[0].startswith(b"HTTP/1.1 200")
    assert (await read_response(reader))[0].startswith(b"HTTP/1.1 404")
    assert (await read_response(reader))[1] == b"onetwothree"
    writer.close()
    assert ports == {str(router.port)}


async def test_forwarded_headers_reach_the_backend(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    async with client(router) as c:
        seen = (await c.get("/", headers=host("a", router))).json()["headers"]
        passed = (
            await c.get(
                "/",
                headers={
                    **host("a", router),
                    "X-Forwarded-For": "203.0.113.9",
                    "X-Forwarded-Proto": "https",  # a client cannot claim TLS it did not use
                    "X-Request-Id": "abc-123",
                },
            )
        ).json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"a.localhost:{router.port}"
    assert seen["x-forwarded-port"] == str(router.port)
    assert len(seen["x-request-id"]) == 32
    assert seen["host"] == f"a.localhost:{router.port}"
    assert passed["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert passed["x-forwarded-proto"] == "http"
    assert passed["x-request-id"] == "abc-123"


# -- pages when no release answers --------------------------------------------------------


async def test_a_closed_backend_port_gets_a_502_page(router: Router, table: RouteTable) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens
    table.set_backend("gone", Backend("127.0.0.1", port))
    async with client(router) as c:
        resp = await c.get("/", headers=host("gone", router))
        again = await c.get("/", headers=host("gone", router))
    assert resp.status_code == 502
    assert "The app gone is not answering" in resp.text
    assert again.status_code == 502  # the connection stays usable after a page


async def test_deploying_stopped_and_crashed_pages(router: Router, table: RouteTable) -> None:
    table.set_status("web", "deploying")
    async with client(router) as c:
        deploying = await c.get("/", headers=host("web", router))
        table.set_status("web", "stopped")
        stopped = await c.get("/", headers=host("web", router))
        table.set_status("web", "crashed")
        crashed = await c.get("/", headers=host("web", router))
    assert deploying.status_code == 503
    assert "being deployed, try again in a moment" in deploying.text
    assert int(deploying.headers["retry-after"]) > 0
    assert stopped.status_code == 503
    assert "The app web is stopped." in stopped.text
    assert crashed.status_code == 502
    assert "not answering" in crashed.text


async def test_a_redeploy_keeps_the_running_release_serving(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    table.set_status("a", "deploying")
    async with client(router) as c:
        assert (await c.get("/", headers=host("a", router))).json()["name"] == "a"


# -- bodies -------------------------------------------------------------------------------


async def test_chunked_responses_pass_through_as_chunked(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(get("a.localhost", "/chunks"))
    head, body = await read_response(reader)
    writer.close()
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"onetwothree"


async def test_a_chunked_upload_reaches_the_backend_whole(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    digest = hashlib.sha256()

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(50):
            piece = PIECE[: 1000 + i * 997]
            digest.update(piece)
            yield piece

    async with client(router) as c:
        resp = await c.post("/upload", content=pieces(), headers=host("a", router))
    assert resp.json()["sha256"] == digest.hexdigest()


async def test_a_20_mib_upload_streams_without_being_buffered(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    # A small receive buffer on the backend and a reader that yields per piece: the
    # router has to hold the client back rather than keep what it cannot pass on.
    app = await start_app("a", rcvbuf=64 * 1024)
    table.set_backend("a", app.backend)
    size = 20 * MiB
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    tracemalloc.start()
    try:
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: a.localhost\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        for _ in range(size // len(PIECE)):
            writer.write(PIECE)
            await writer.drain()
        head, body = await read_response(reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    result = httpx.Response(200, content=body).json()
    assert result["bytes"] == size
    assert result["sha256"] == hashlib.sha256(PIECE * (size // len(PIECE))).hexdigest()
    assert peak < 4 * MiB, f"peak Python memory {peak / MiB:.1f} MiB while streaming 20 MiB"


@pytest.mark.parametrize("framing", ["chunked", "fixed"])
async def test_a_20_mib_download_streams_without_being_buffered(
    router: Router, table: RouteTable, start_app: StartApp, framing: str
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    size = 20 * MiB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a slow, small reader
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", router.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    tracemalloc.start()
    try:
        query = "&fixed=1" if framing == "fixed" else ""
        writer.write(get("a.localhost", f"/download?size={size}{query}"))
        head = await reader.readuntil(b"\r\n\r\n")
        received = 0
        digest = hashlib.sha256()
        if framing == "fixed":
            assert f"content-length: {size}".encode() in head.lower()
            while received < size:
                piece = await reader.read(64 * 1024)
                assert piece
                digest.update(piece)
                received += len(piece)
        else:
            assert b"transfer-encoding: chunked" in head.lower()
            while chunk_size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                piece = await reader.readexactly(chunk_size)
                digest.update(piece)
                received += len(piece)
                await reader.readexactly(2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        writer.close()
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(PIECE * (size // len(PIECE))).hexdigest()
    assert peak < 4 * MiB, f"peak Python memory {peak / MiB:.1f} MiB while streaming 20 MiB"


async def test_head_requests_get_no_body(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(b"HEAD / HTTP/1.1\r\nHost: a.localhost\r\n\r\n" + get("a.localhost"))
    first = await reader.readuntil(b"\r\n\r\n")
    _, body = await read_response(reader)  # the next response starts right after the head
    writer.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert b'"name":"a"' in body


# -- WebSocket ----------------------------------------------------------------------------


async def test_websocket_echo_through_the_router(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    async with ws_connect(
        f"ws://a.localhost:{router.port}/ws", host="127.0.0.1", port=router.port
    ) as ws:
        for text in ("hello", "x" * 100_000, "bye"):
            await ws.send(text)
            assert await ws.recv() == f"echo: {text}"


# -- zero downtime ------------------------------------------------------------------------


async def test_a_keep_alive_connection_moves_to_the_new_backend_on_its_next_request(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    old, new = await start_app("old"), await start_app("new")
    table.set_backend("web", old.backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(get("web.localhost"))
    assert b'"name":"old"' in (await read_response(reader))[1]
    table.set_backend("web", new.backend)
    writer.write(get("web.localhost"))
    assert b'"name":"new"' in (await read_response(reader))[1]
    writer.close()


async def test_switching_backends_under_polling_fails_no_request(
    router: Router, table: RouteTable, start_app: StartApp
) -> None:
    old, new = await start_app("old"), await start_app("new")
    table.set_backend("web", old.backend)
    seen: list[str] = []
    failures: list[object] = []
    switched = asyncio.Event()
    stopped = asyncio.Event()

    async def poll() -> None:
        async with client(router) as c:
            while not stopped.is_set() or len(seen) < 200:
                resp = await c.get("/", headers=host("web", router))
                if resp.status_code != 200:
                    failures.append((resp.status_code, resp.text))
                else:
                    seen.append(resp.json()["name"])
                if len(seen) == 50:
                    switched.set()
                if len(seen) >= 600:
                    break

    # An in-flight request on the old release must finish there after the switch.
    async with client(router) as slow_client:
        slow = asyncio.create_task(slow_client.get("/slow", headers=host("web", router)))
        await old.slow_entered.wait()
        pollers = [asyncio.create_task(poll()) for _ in range(4)]
        await switched.wait()
        table.set_backend("web", new.backend)
        old.slow_release.set()
        slow_resp = await slow
        await old.stop()  # the old release goes away, as after a real deploy
        stopped.set()
        await asyncio.gather(*pollers)
    assert failures == []
    assert slow_resp.status_code == 200
    assert slow_resp.text == "slow from old"
    assert seen[-1] == "new"
    assert "old" not in seen[seen.index("new") + 8 :]  # at most one in flight per poller


async def test_a_backend_that_drops_a_reused_connection_gets_the_request_again(
    router: Router, table: RouteTable
) -> None:
    # Like an app's idle keep-alive timeout firing as the next request arrives: the
    # backend answers one request per connection and closes on the second, unanswered.
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(one_per_connection, "127.0.0.1", 0)
    table.set_backend("flaky", Backend("127.0.0.1", server.sockets[0].getsockname()[1]))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
        for _ in range(3):
            writer.write(get("flaky.localhost"))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200")
            assert body == b"ok"
        writer.close()
    finally:
        server.close()


# -- abuse --------------------------------------------------------------------------------


async def test_a_client_trickling_its_headers_is_dropped(start_router: StartRouter) -> None:
    router = await start_router(Limits(header_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def trickle() -> None:
        for byte in b"GET / HTTP/1.1\r\nHost: a.localhost\r\nX-Slow: " + b"x" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    sender = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=5)  # until the router closes
    except ConnectionResetError:
        # Dropped all the same: on a loaded machine the router's lingering close can end
        # in a reset before this loop reads the 408, and a reset discards unread data.
        answer = b"HTTP/1.1 408 (reset before it was read)"
    sender.cancel()
    assert answer.startswith(b"HTTP/1.1 408")
    assert loop.time() - started >= 0.3
    writer.close()


async def test_one_address_may_hold_only_so_many_connections(start_router: StartRouter) -> None:
    """Without a cap, idle connections from one address could take every file descriptor
    of the server (the API's too, under ``serve``)."""
    router = await start_router(Limits(max_connections_per_client=3))
    held = [await asyncio.open_connection("127.0.0.1", router.port) for _ in range(3)]
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    refused = await asyncio.wait_for(reader.read(), timeout=5)  # answered, then closed
    assert refused.startswith(b"HTTP/1.1 429") and b"at most 3" in refused
    writer.close()
    # A connection given back frees its place; the ones held still work.
    held[0][1].close()
    await held[0][1].wait_closed()

    async def admitted() -> bytes:
        while True:  # until the router has seen the close
            reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
            writer.write(get("nothing.localhost"))
            try:
                head, _ = await read_response(reader)
            except (ConnectionResetError, asyncio.IncompleteReadError):
                head = b"HTTP/1.1 429 (refused, the request unread: reset)"
            writer.close()
            if not head.startswith(b"HTTP/1.1 429"):
                return head
            await asyncio.sleep(0.01)

    assert (await asyncio.wait_for(admitted(), timeout=5)).startswith(b"HTTP/1.1 404")
    reader, writer = held[1]
    writer.write(get("nothing.localhost"))
    head, _ = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 404")
    for _, writer in held[1:]:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(
    start_router: StartRouter, table: RouteTable
) -> None:
    router = await start_router(Limits(keepalive_timeout=0.2))
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(get("nothing.localhost"))
    head, _ = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 404")
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed, silently
    writer.close()


async def test_an_oversize_head_gets_431(router: Router) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(get("a.localhost", extra="X-Big: " + "y" * 70_000 + "\r\n"))
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.localhost\r\nX-A: b\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.localhost\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n",
        b"GET /  HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
    ],
    ids=["cl-and-te", "two-lengths", "folded", "space-in-name", "no-host", "bad-request-line"],
)
async def test_ambiguous_requests_get_400(
    router: Router, table: RouteTable, start_app: StartApp, request_bytes: bytes
) -> None:
    app = await start_app("a")
    table.set_backend("a", app.backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(request_bytes)
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400")


# -- shutdown -----------------------------------------------------------------------------


async def test_close_lets_the_in_flight_request_finish(
    start_router: StartRouter, table: RouteTable, start_app: StartApp
) -> None:
    router = await start_router()
    app = await start_app("a")
    table.set_backend("a", app.backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(get("a.localhost", "/slow"))
    await app.slow_entered.wait()
    closing = asyncio.create_task(router.close())
    assert await asyncio.wait_for(idle_reader.read(), timeout=5) == b""  # idle: closed now
    app.slow_release.set()
    head, body = await read_response(reader)
    await closing
    assert head.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in head.lower()
    assert body == b"slow from a"
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", router.port)
    writer.close()
    idle_writer.close()


async def test_a_backend_that_never_answers_gets_504_and_one_that_stalls_is_cut(
    start_router: StartRouter, table: RouteTable
) -> None:
    async def silent_or_stalling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head = await reader.readuntil(b"\r\n\r\n")
            if b"/stall" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await reader.read()  # then say nothing more until the router gives up
        writer.close()

    server = await asyncio.start_server(silent_or_stalling, "127.0.0.1", 0)
    table.set_backend("mute", Backend("127.0.0.1", server.sockets[0].getsockname()[1]))
    router = await start_router(Limits(io_timeout=0.3))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
        writer.write(get("mute.localhost"))
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 504")
        assert b"took too long to answer" in answer

        reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
        writer.write(get("mute.localhost", "/stall"))
        answer = await asyncio.wait_for(reader.read(), timeout=5)  # EOF: the router cut it
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        assert answer.endswith(b"partial")
    finally:
        server.close()
