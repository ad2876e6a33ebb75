"""The Caddy router against a real Caddy it starts: routes pushed through the admin API
within a second, round robin across instances, a dead instance skipped, pages for apps
with nothing running, a certificate of the owner's served, access logs delivered, and
attaching to a Caddy that is already running."""

from __future__ import annotations

import asyncio
import http.server
import socket
import ssl
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from tests.acme_stack import require_binaries
from tests.conftest import free_port
from tests.helpers import wait_for
from tests.tlshelpers import self_signed

from dockyard.router.caddy import CaddyOptions, CaddyRouter
from dockyard.routetable import Backend, RouteTable
from dockyard.services.certificates import served_certificate

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")


@contextmanager
def instance(name: str) -> Iterator[Backend]:
    """An app instance answering its own name."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = name.encode()
            if self.path == "/proto":  # how the app sees the visitor's scheme
                body = str(self.headers.get("X-Forwarded-Proto")).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Backend("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def options(tmp_path: Path, admin: str | None = None, upstreams: str = "router") -> CaddyOptions:
    return CaddyOptions(
        admin=admin or f"127.0.0.1:{free_port()}",
        binary="caddy",
        apps_domain="apps.test",
        http_port=free_port(),
        https_port=free_port(),
        acme_ca="https://127.0.0.1:9/dir",  # never reached: no name here may get one
        acme_ca_root="",
        acme_email="",
        ask_url="http://127.0.0.1:9/ask",
        storage_dir=tmp_path / "caddy",
        upstreams=upstreams,
    )


class LoopThread:
    """An event loop running in a thread, as uvicorn's runs in ``dockyard serve``: the
    built-in routers Caddy proxies to live on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    running = LoopThread()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def table() -> RouteTable:
    return RouteTable()


@pytest.fixture(params=["router", "instances"])
def caddy(
    tmp_path: Path, table: RouteTable, request: pytest.FixtureRequest, loop: LoopThread
) -> Iterator[tuple[CaddyRouter, list[tuple[str, str]]]]:
    """A started Caddy router, in each of its upstream modes (through the built-in router,
    or straight to the instances)."""
    require_binaries()
    logged: list[tuple[str, str]] = []
    router = CaddyRouter(
        table,
        options(tmp_path, upstreams=request.param),
        access_log=lambda app, line: logged.append((app, line)),
    )
    loop.run(router.start("127.0.0.1", router.port))
    try:
        yield router, logged
    finally:
        loop.run(router.close())


def get(router: CaddyRouter, host: str, client: httpx.Client | None = None) -> httpx.Response:
    # A new connection each time unless a client is given: round robin is per request.
    url = f"http://127.0.0.1:{router.port}/"
    if client is not None:
        return client.get(url, headers={"Host": host})
    return httpx.get(url, headers={"Host": host}, timeout=10)


def answer(router: CaddyRouter, host: str) -> httpx.Response | None:
    """``host``'s answer; None for a connection Caddy reset while it takes a configuration.
    Caddy 2.6 reloads by swapping sockets (docs/security.md, README "HTTPS"): a request
    in flight then may be reset, which is why only domain changes are pushed to it. While
    waiting for a change to be served, such a reset means "not yet"."""
    try:
        return get(router, host)
    except httpx.TransportError:
        return None


def serves(router: CaddyRouter, host: str, text: str) -> bool:
    return (response := answer(router, host)) is not None and response.text == text


def test_instances_answer_in_turn_and_a_dead_one_is_skipped(
    caddy: tuple[CaddyRouter, list[tuple[str, str]]], table: RouteTable
) -> None:
    router, _ = caddy
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = Backend("127.0.0.1", closed.getsockname()[1])
    with instance("one") as one, instance("two") as two:
        table.set_backends("shop-app", [dead, one, two])
        wait_for(
            lambda: get(router, "shop-app.apps.test").status_code == 200,
            timeout=1,
            interval=0.02,
            what="the route to be pushed",
        )
        answers = [get(router, "shop-app.apps.test") for _ in range(12)]
        assert {a.status_code for a in answers} == {200}
        if router.options.upstreams == "instances":
            assert {a.text for a in answers} == {"one", "two"}
        else:
            # The built-in router gives each of Caddy's (kept-alive) connections an
            # instance in turn, so sequential requests share one; the dead one never answers.
            assert {a.text for a in answers} <= {"one", "two"}


def test_every_change_is_served_within_a_second_and_unchanged_ones_are_not_pushed(
    caddy: tuple[CaddyRouter, list[tuple[str, str]]], table: RouteTable
) -> None:
    router, logged = caddy
    with instance("old") as old, instance("new") as new:
        table.set_backend("shop-app", old)
        wait_for(
            lambda: serves(router, "shop-app.apps.test", "old"),
            timeout=1,
            interval=0.02,
            what="the first route",
        )
        table.set_backend("shop-app", new)
        wait_for(
            lambda: serves(router, "shop-app.apps.test", "new"),
            timeout=1,
            interval=0.02,
            what="the switch to the new instance",
        )
        pushes = router.pushes
        for _ in range(5):
            table.set_backend("shop-app", new)
        table.set_hosts(aliases={"www.example.test": "shop-app"}, force_https=["shop-app"])
        moved = wait_for(
            lambda: (r := answer(router, "www.example.test")) is not None
            and r.status_code == 301
            and r,
            timeout=1,
            interval=0.02,
            what="the custom domain and its redirect",
        )
        assert isinstance(moved, httpx.Response)
        assert moved.headers["location"] == f"https://www.example.test:{router.https_port}/"
        assert router.pushes == pushes + 1  # the five identical tables were not pushed
        table.set_hosts(aliases={})
        table.set_status("shop-app", "stopped")
        page = wait_for(
            lambda: (r := answer(router, "shop-app.apps.test")) is not None
            and r.status_code == 503
            and r,
            timeout=1,
            interval=0.02,
            what="the stopped page",
        )
        assert isinstance(page, httpx.Response)
        assert "The app shop-app is stopped." in page.text
        unknown = get(router, "nobody.apps.test")
        assert unknown.status_code == 404
        assert "nobody.apps.test" in unknown.text
    wait_for(
        lambda: any(app == "shop-app" and '"GET / HTTP/1.1" 200' in line for app, line in logged),
        timeout=5,
        what="access log lines for the app",
    )


def test_a_certificate_of_the_owners_is_served_for_its_name(
    caddy: tuple[CaddyRouter, list[tuple[str, str]]], table: RouteTable, tmp_path: Path
) -> None:
    router, _ = caddy
    cert, key = self_signed(tmp_path / "own", "secure.example.test")
    with instance("secure") as one:
        table.set_backend("shop-app", one)
        table.set_hosts(
            aliases={"secure.example.test": "shop-app"},
            own_certificates={
                "secure.example.test": (
                    str(tmp_path / "own" / "secure.example.test.crt"),
                    str(tmp_path / "own" / "secure.example.test.key"),
                )
            },
        )
        served = wait_for(
            lambda: served_certificate("127.0.0.1", router.https_port, "secure.example.test"),
            timeout=2,
            interval=0.05,
            what="the owner's certificate to be served",
        )
        assert served.subject == "CN=secure.example.test"
        context = httpx.create_ssl_context(verify=False)
        with httpx.Client(verify=context) as client:
            response = client.get(
                f"https://127.0.0.1:{router.https_port}/",
                headers={"Host": "secure.example.test"},
                extensions={"sni_hostname": "secure.example.test"},
            )
            assert response.text == "secure"
            proto = client.get(
                f"https://127.0.0.1:{router.https_port}/proto",
                headers={"Host": "secure.example.test"},
                extensions={"sni_hostname": "secure.example.test"},
            )
            assert proto.text == "https"
        assert get(router, "secure.example.test").status_code == 200
        plain = httpx.get(
            f"http://127.0.0.1:{router.port}/proto", headers={"Host": "secure.example.test"}
        )
        assert plain.text == "http"
    assert cert and key


def test_a_running_caddy_is_attached_to_and_left_running(
    tmp_path: Path, table: RouteTable, loop: LoopThread
) -> None:
    require_binaries()
    first = CaddyRouter(table, options(tmp_path / "first"))
    loop.run(first.start("127.0.0.1", first.port))
    try:
        second_table = RouteTable()
        second = CaddyRouter(second_table, options(tmp_path / "second", admin=first.options.admin))
        with instance("attached") as one:
            second_table.set_backend("shop-app", one)
            loop.run(second.start("127.0.0.1", second.port))
            assert get(second, "shop-app.apps.test").text == "attached"
            loop.run(second.close())
        # The Caddy it attached to is still there (the first router started it).
        assert httpx.get(f"http://{first.options.admin}/config/", timeout=2).status_code == 200
    finally:
        loop.run(first.close())
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{first.options.admin}/config/", timeout=1)


@contextmanager
def ask_server(allowed: set[str]) -> Iterator[str]:
    """Stands in for dockyard's ``/internal/tls/ask``: 200 for ``allowed`` names only."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.partition("domain=")[2]
            asked.append(name)
            self.send_response(200 if name in allowed else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ask"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
def test_each_acme_challenge_is_validated_for_real_by_pebble(
    tmp_path: Path, table: RouteTable, challenge: str, loop: LoopThread
) -> None:
    """With only one challenge type allowed, Pebble validates that one against Caddy's
    port (HTTP for http-01, HTTPS for tls-alpn-01) and the certificate it issues is served."""
    from tests.acme_stack import acme_stack

    name = "alpn.example.test" if challenge == "tls-alpn-01" else "http.example.test"
    with (
        acme_stack(tmp_path / "acme") as stack,
        ask_server({name}) as ask_url,
        instance("tls") as one,
    ):
        stack.add_host(name)
        table.set_backend("shop-app", one)
        table.set_hosts(aliases={name: "shop-app"})
        router = CaddyRouter(
            table,
            CaddyOptions(
                admin=f"127.0.0.1:{free_port()}",
                binary="caddy",
                apps_domain="apps.test",
                http_port=stack.http_port,
                https_port=stack.https_port,
                acme_ca=stack.directory_url,
                acme_ca_root=str(stack.ca_root_file),
                acme_email="",
                ask_url=ask_url,
                storage_dir=tmp_path / "caddy",
                acme_challenges=frozenset({challenge}),
            ),
        )
        loop.run(router.start("127.0.0.1", stack.http_port))
        try:
            trusted = ssl.create_default_context(cadata=stack.issuing_roots())
            with httpx.Client(verify=trusted, timeout=30) as client:
                response = client.get(
                    f"https://127.0.0.1:{stack.https_port}/",
                    headers={"Host": name},
                    extensions={"sni_hostname": name},
                )
            assert response.text == "tls"
        finally:
            loop.run(router.close())
    caddy_log = (tmp_path / "caddy" / "caddy.log").read_text()
    assert f'"challenge_type":"{challenge}"' in caddy_log
    assert "certificate obtained successfully" in caddy_log


def test_a_caddy_that_dies_is_started_again_with_the_routes(
    caddy: tuple[CaddyRouter, list[tuple[str, str]]], table: RouteTable
) -> None:
    router, _ = caddy
    with instance("back") as one:
        table.set_backend("shop-app", one)
        wait_for(
            lambda: get(router, "shop-app.apps.test").status_code == 200,
            timeout=1,
            interval=0.02,
            what="the route",
        )
        process = router._process
        assert process is not None
        process.kill()
        process.wait()

        def answers() -> bool:
            try:
                return get(router, "shop-app.apps.test").text == "back"
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout=10, interval=0.1, what="caddy to be back with the routes")
        assert router._process is not process
