"""The source_url / buildpack URL fetcher: the server-side request forgery boundary.

Real HTTP servers on 127.0.0.1 random ports stand in for the internet; host names under
``.invalid`` never resolve, so a test that reaches a server through one proves the
connection went to the address the injected resolver returned, not to a second lookup.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from dockyard.errors import FetchError
from dockyard.pipeline import fetch
from dockyard.pipeline.fetch import clone_git, fetch_to_file, redact

Route = Callable[[BaseHTTPRequestHandler], None]

BIG_BODY = os.urandom(3 * 1024 * 1024 + 17)
GENEROUS = 64 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.hits.append((self.path, self.headers.get("Host", "")))
        route = self.server.routes.get(urlsplit(self.path).path)
        if route is None:
            self.send_error(404)
            return
        # The fetcher hangs up on purpose when a cap or the time limit is hit.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: list[tuple[str, str]] = []
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def allow(self) -> frozenset[tuple[str, int]]:
        return frozenset({("127.0.0.1", self.port)})


@contextlib.contextmanager
def _serve(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        if isinstance(server, _Server):
            server.stopping.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    instance = _Server()
    with _serve(instance):
        yield instance


@pytest.fixture
def dest(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "out").mkdir()
    return tmp_path / "out" / "source.tar.gz"


def body(data: bytes, *, status: int = 200, content_length: bool = True) -> Route:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        if content_length:
            handler.send_header("Content-Length", str(len(data)))
        else:
            # Close-delimited body: the only way to learn the size is to read it.
            handler.close_connection = True
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(data)

    return respond


def redirect(location: str, status: int = 302) -> Route:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return respond


def resolving_to(*addresses: str) -> Callable[[str, int], list[str]]:
    def resolver(host: str, port: int) -> list[str]:
        resolver.calls.append((host, port))  # type: ignore[attr-defined]
        return list(addresses)

    resolver.calls = []  # type: ignore[attr-defined]
    return resolver


def never_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} must be refused without a lookup")


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the fetcher opens any connection: refusals happen before that."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a connection was opened to {args[0]!r}")

    monkeypatch.setattr(fetch.socket, "create_connection", refuse)


def leftovers(dest: pathlib.Path) -> list[str]:
    return sorted(path.name for path in dest.parent.iterdir())


# --------------------------------------------------------------------------- success


def test_allowed_loopback_fetch_is_byte_for_byte(server: _Server, dest: pathlib.Path) -> None:
    server.routes["/app.tar.gz"] = body(BIG_BODY)

    written = fetch_to_file(
        server.url("/app.tar.gz"), dest, allow=server.allow, max_bytes=GENEROUS, timeout=10
    )

    assert written == len(BIG_BODY)
    assert dest.read_bytes() == BIG_BODY
    assert leftovers(dest) == [dest.name]


def test_connects_to_the_checked_address_without_a_second_lookup(
    server: _Server, dest: pathlib.Path
) -> None:
    server.routes["/app.tar.gz"] = body(b"archive")
    resolver = resolving_to("127.0.0.1")
    host = "archive.dockyard.invalid"  # never resolves: only the pinned address works

    fetch_to_file(
        server.url("/app.tar.gz", host=host),
        dest,
        allow=frozenset({(host, server.port)}),
        max_bytes=GENEROUS,
        timeout=5,
        resolver=resolver,
    )

    assert dest.read_bytes() == b"archive"
    assert resolver.calls == [(host, server.port)]  # type: ignore[attr-defined]
    assert server.hits == [("/app.tar.gz", f"{host}:{server.port}")]


def test_close_delimited_and_exact_size_bodies(server: _Server, dest: pathlib.Path) -> None:
    server.routes["/stream"] = body(b"x" * 1000, content_length=False)

    written = fetch_to_file(
        server.url("/stream"), dest, allow=server.allow, max_bytes=1000, timeout=5
    )

    assert written == 1000


def test_a_failed_fetch_leaves_an_existing_dest_alone(server: _Server, dest: pathlib.Path) -> None:
    dest.write_bytes(b"previous")

    with pytest.raises(FetchError):
        fetch_to_file(server.url("/missing"), dest, allow=server.allow, max_bytes=10, timeout=5)

    assert dest.read_bytes() == b"previous"
    assert leftovers(dest) == [dest.name]


# --------------------------------------------------------------------------- refusals


def test_the_same_server_without_allow_list_is_refused_before_connecting(
    server: _Server, dest: pathlib.Path
) -> None:
    server.routes["/app.tar.gz"] = body(b"archive")

    with pytest.raises(FetchError):
        fetch_to_file(server.url("/app.tar.gz"), dest, max_bytes=GENEROUS, timeout=5)

    assert server.hits == []
    assert leftovers(dest) == []


def test_loopback_on_the_default_port_is_refused(dest: pathlib.Path) -> None:
    resolver = resolving_to("127.0.0.1")

    with pytest.raises(FetchError):
        fetch_to_file(
            "http://localhost/app.tar.gz", dest, max_bytes=10, timeout=5, resolver=resolver
        )

    assert resolver.calls == [("localhost", 80)]  # type: ignore[attr-defined]


BLOCKED_ADDRESSES = [
    "127.0.0.1",
    "127.5.6.7",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.100.100.200",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%1",
    "fc00::1",
    "fd00:ec2::254",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "100::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::ffff:0:7f00:1",
    "::127.0.0.1",
    "::a9fe:a9fe",
    "64:ff9b::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::1",
    "2002:c0a8:101::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
]


@pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
@pytest.mark.usefixtures("no_connections")
def test_every_non_public_address_class_is_refused(address: str, dest: pathlib.Path) -> None:
    resolver = resolving_to(address)

    with pytest.raises(FetchError):
        fetch_to_file(
            "https://archive.example.com/app.tar.gz",
            dest,
            max_bytes=10,
            timeout=1,
            resolver=resolver,
        )

    assert resolver.calls == [("archive.example.com", 443)]  # type: ignore[attr-defined]
    assert leftovers(dest) == []


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses_pass_the_check(address: str) -> None:
    assert fetch._refusal_reason(fetch.ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254"])
@pytest.mark.usefixtures("no_connections")
def test_allow_list_never_opens_link_local_metadata(address: str, dest: pathlib.Path) -> None:
    with pytest.raises(FetchError):
        fetch_to_file(
            "http://metadata.internal/latest/meta-data/",
            dest,
            allow=frozenset({("metadata.internal", 80)}),
            max_bytes=10,
            timeout=1,
            resolver=resolving_to(address),
        )
    with pytest.raises(FetchError):
        host = address if ":" not in address else f"[{address}]"
        fetch_to_file(
            f"http://{host}/latest/meta-data/",
            dest,
            allow=frozenset({(address, 80)}),
            max_bytes=10,
            timeout=1,
            resolver=never_resolve,
        )


@pytest.mark.usefixtures("no_connections")
def test_one_bad_address_among_good_ones_is_enough_to_refuse(dest: pathlib.Path) -> None:
    with pytest.raises(FetchError):
        fetch_to_file(
            "https://archive.example.com/app.tar.gz",
            dest,
            max_bytes=10,
            timeout=1,
            resolver=resolving_to("8.8.8.8", "127.0.0.1"),
        )


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0177.0.0.1", "0x7f.1", "0x7f000001", "127.1", "017700000001", "0x7F.0.0.1"],
)
def test_numeric_host_spellings_are_refused_as_loopback(
    host: str, server: _Server, dest: pathlib.Path
) -> None:
    server.routes["/app.tar.gz"] = body(b"archive")
    # Even with the real address allow-listed: only the exact host spelling is allowed.
    for url in (f"http://{host}/app.tar.gz", f"http://{host}:{server.port}/app.tar.gz"):
        for resolver in (never_resolve, None):
            with pytest.raises(FetchError):
                fetch_to_file(
                    url, dest, allow=server.allow, max_bytes=10, timeout=2, resolver=resolver
                )
    assert server.hits == []


def test_numeric_spelling_is_read_as_the_address_it_spells() -> None:
    assert str(fetch._literal_address("0x7f.1")) == "127.0.0.1"
    assert str(fetch._literal_address("2130706433")) == "127.0.0.1"
    assert fetch._literal_address("cafe.example") is None


@pytest.mark.parametrize(
    "url",
    [
        "https://archive.example.com./app.tar.gz",
        "ftp://archive.example.com/app.tar.gz",
        "file:///etc/passwd",
        "gopher://archive.example.com/",
        "https://user:secret@archive.example.com/app.tar.gz",
        "https://user@archive.example.com/app.tar.gz",
        "https://archive.example.com\\@127.0.0.1/app.tar.gz",
        "https://archive.example.com/a\\b",
        "https://archive.example.com:8443/app.tar.gz",
        "http://archive.example.com:443/app.tar.gz",
        "https://archive.example.com:99999/app.tar.gz",
        "https://archive.example.com/app tar.gz",
        "https://archive.example.com/app\r\nX-Injected: 1",
        "https://archive.exa\tmple.com/app.tar.gz",
        "https://[fe80::1%25eth0]/app.tar.gz",
        "https://[::1/app.tar.gz",
        "https:///app.tar.gz",
        "https://archive.example.1/app.tar.gz",
        "https://archivé.example.com/app.tar.gz",
        "",
    ],
)
def test_malformed_or_forbidden_urls_are_refused_without_a_lookup(
    url: str, dest: pathlib.Path
) -> None:
    with pytest.raises(FetchError):
        fetch_to_file(url, dest, max_bytes=10, timeout=1, resolver=never_resolve)
    assert leftovers(dest) == []


def test_explicit_default_port_is_fine(server: _Server, dest: pathlib.Path) -> None:
    # Port 443 written out is still the default port: refused here only for the address.
    resolver = resolving_to("127.0.0.1")
    with pytest.raises(FetchError):
        fetch_to_file(
            "https://archive.example.com:443/a", dest, max_bytes=10, timeout=1, resolver=resolver
        )
    assert resolver.calls == [("archive.example.com", 443)]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- redirects


def test_redirects_are_followed_and_rechecked(server: _Server, dest: pathlib.Path) -> None:
    server.routes["/app.tar.gz"] = body(b"archive")
    server.routes["/start"] = redirect("/middle", 301)
    server.routes["/middle"] = redirect(server.url("/app.tar.gz"), 307)

    fetch_to_file(server.url("/start"), dest, allow=server.allow, max_bytes=100, timeout=5)

    assert dest.read_bytes() == b"archive"
    assert [path for path, _ in server.hits] == ["/start", "/middle", "/app.tar.gz"]


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{other}/app.tar.gz",
        "http://localhost:{other}/app.tar.gz",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:{port}/app.tar.gz",
        "http://2130706433:{port}/app.tar.gz",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1:{port}/app.tar.gz",
    ],
)
def test_redirect_to_a_blocked_target_is_refused(
    target: str, server: _Server, dest: pathlib.Path
) -> None:
    other = _Server()
    other.routes["/app.tar.gz"] = body(b"internal")
    with _serve(other):
        location = target.format(other=other.port, port=server.port)
        server.routes["/start"] = redirect(location)

        with pytest.raises(FetchError):
            fetch_to_file(
                server.url("/start"),
                dest,
                allow=server.allow,
                max_bytes=100,
                timeout=5,
                resolver=resolving_to("127.0.0.1"),
            )

        assert other.hits == []
        assert leftovers(dest) == []


def _redirect_chain(server: _Server, length: int) -> str:
    for step in range(length):
        server.routes[f"/hop{step}"] = redirect(f"/hop{step + 1}")
    server.routes[f"/hop{length}"] = body(b"archive")
    return server.url("/hop0")


def test_five_redirects_are_followed(server: _Server, dest: pathlib.Path) -> None:
    url = _redirect_chain(server, fetch.MAX_REDIRECTS)

    fetch_to_file(url, dest, allow=server.allow, max_bytes=100, timeout=5)

    assert dest.read_bytes() == b"archive"


def test_six_redirects_are_refused(server: _Server, dest: pathlib.Path) -> None:
    url = _redirect_chain(server, fetch.MAX_REDIRECTS + 1)

    with pytest.raises(FetchError):
        fetch_to_file(url, dest, allow=server.allow, max_bytes=100, timeout=5)

    assert len(server.hits) == fetch.MAX_REDIRECTS + 1
    assert leftovers(dest) == []


def test_redirect_loop_is_refused(server: _Server, dest: pathlib.Path) -> None:
    server.routes["/loop"] = redirect("/loop")

    with pytest.raises(FetchError):
        fetch_to_file(server.url("/loop"), dest, allow=server.allow, max_bytes=100, timeout=5)


# --------------------------------------------------------------------------- caps and statuses


@pytest.mark.parametrize("status", [201, 204, 206, 304, 400, 403, 404, 500, 503])
def test_any_status_but_200_fails(status: int, server: _Server, dest: pathlib.Path) -> None:
    server.routes["/app.tar.gz"] = body(
        b"" if status in (204, 304) else b"error page", status=status
    )

    with pytest.raises(FetchError):
        fetch_to_file(server.url("/app.tar.gz"), dest, allow=server.allow, max_bytes=100, timeout=5)

    assert leftovers(dest) == []


def test_redirect_without_location_fails(server: _Server, dest: pathlib.Path) -> None:
    server.routes["/app.tar.gz"] = body(b"", status=302)

    with pytest.raises(FetchError):
        fetch_to_file(server.url("/app.tar.gz"), dest, allow=server.allow, max_bytes=100, timeout=5)


def test_content_length_over_the_cap_fails_up_front(server: _Server, dest: pathlib.Path) -> None:
    server.routes["/app.tar.gz"] = body(BIG_BODY)

    with pytest.raises(FetchError):
        fetch_to_file(
            server.url("/app.tar.gz"), dest, allow=server.allow, max_bytes=1024, timeout=5
        )

    assert leftovers(dest) == []


def test_body_without_length_over_the_cap_fails(server: _Server, dest: pathlib.Path) -> None:
    server.routes["/app.tar.gz"] = body(BIG_BODY, content_length=False)

    with pytest.raises(FetchError):
        fetch_to_file(
            server.url("/app.tar.gz"), dest, allow=server.allow, max_bytes=100_000, timeout=5
        )

    assert leftovers(dest) == []


def test_body_shorter_than_its_content_length_fails(server: _Server, dest: pathlib.Path) -> None:
    def truncated(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"only this")
        handler.close_connection = True

    server.routes["/app.tar.gz"] = truncated

    with pytest.raises(FetchError):
        fetch_to_file(
            server.url("/app.tar.gz"), dest, allow=server.allow, max_bytes=10_000, timeout=5
        )

    assert leftovers(dest) == []


def _trickle(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    stopping = handler.server.stopping  # type: ignore[attr-defined]
    while not stopping.wait(0.02):
        handler.wfile.write(b"x")
        handler.wfile.flush()


def _slow_headers(handler: BaseHTTPRequestHandler) -> None:
    stopping = handler.server.stopping  # type: ignore[attr-defined]
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    while not stopping.wait(0.02):
        handler.wfile.write(b"X-Slow: y\r\n")
        handler.wfile.flush()


@pytest.mark.parametrize("route", [_trickle, _slow_headers], ids=["body", "headers"])
def test_a_slow_server_hits_the_total_time_cap(
    route: Route, server: _Server, dest: pathlib.Path
) -> None:
    server.routes["/app.tar.gz"] = route
    started = time.monotonic()

    with pytest.raises(FetchError):
        fetch_to_file(
            server.url("/app.tar.gz"), dest, allow=server.allow, max_bytes=10**6, timeout=0.5
        )

    assert time.monotonic() - started < 2
    assert leftovers(dest) == []


def test_a_hanging_resolver_hits_the_time_cap(dest: pathlib.Path) -> None:
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(5)
        return ["8.8.8.8"]

    started = time.monotonic()
    try:
        with pytest.raises(FetchError):
            fetch_to_file(
                "https://archive.example.com/a", dest, max_bytes=10, timeout=0.3, resolver=hanging
            )
    finally:
        release.set()
    assert time.monotonic() - started < 2


def test_proxy_environment_variables_are_ignored(
    server: _Server, dest: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _Server()
    with _serve(proxy):
        for name in (
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        server.routes["/app.tar.gz"] = body(b"direct")

        fetch_to_file(server.url("/app.tar.gz"), dest, allow=server.allow, max_bytes=100, timeout=5)

        assert dest.read_bytes() == b"direct"
        assert proxy.hits == []


# --------------------------------------------------------------------------- messages and logs


def test_blocked_and_failed_fetches_say_the_same_thing(
    server: _Server, dest: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.routes["/app.tar.gz"] = body(b"nope", status=404)
    url = server.url("/app.tar.gz?token=s3cr3t#frag")
    caplog.set_level(logging.INFO, logger=fetch.__name__)

    with pytest.raises(FetchError) as blocked:
        fetch_to_file(url, dest, max_bytes=100, timeout=5)
    with pytest.raises(FetchError) as failed:
        fetch_to_file(url, dest, allow=server.allow, max_bytes=100, timeout=5)

    assert blocked.value.message == failed.value.message
    assert blocked.value.message.startswith(
        f"The archive could not be downloaded from {server.url('/app.tar.gz')}: "
    )
    assert "not allow-listed" in caplog.text  # the reason goes to the log
    assert "HTTP 404" in caplog.text
    for text in (blocked.value.message, caplog.text):
        assert "s3cr3t" not in text
        assert "frag" not in text
    assert server.hits[0][0] == "/app.tar.gz?token=s3cr3t"  # the query is still sent


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("https://u:p@example.com/a.tar.gz?token=x#y", "https://example.com/a.tar.gz"),
        (
            "https://example.com:8443/a/b.tgz?X-Amz-Signature=abc",
            "https://example.com:8443/a/b.tgz",
        ),
        ("http://[::1]:8000/a", "http://[::1]:8000/a"),
        ("https://github.com/heroku/buildpack.git#v1.2", "https://github.com/heroku/buildpack.git"),
        # urlsplit drops tabs and newlines; what is left cannot break a log line.
        ("https://example.com/a\r\nb", "https://example.com/ab"),
        ("https://example.com/a b", "https://example.com/a%20b"),
        ("https://[::1/a", "<unparsable URL>"),
        ("not a url?x=1", "not%20a%20url"),
    ],
)
def test_redact(url: str, redacted: str) -> None:
    assert redact(url) == redacted


# --------------------------------------------------------------------------- https


def _certificate(directory: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_server(tmp_path: pathlib.Path) -> Iterator[tuple[_Server, pathlib.Path]]:
    cert, key = _certificate(tmp_path, "archive.dockyard.invalid")
    instance = _Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    instance.socket = context.wrap_socket(instance.socket, server_side=True)
    instance.routes["/app.tar.gz"] = body(b"over tls")
    with _serve(instance):
        yield instance, cert


def test_https_verifies_the_certificate_against_the_host_name(
    https_server: tuple[_Server, pathlib.Path], dest: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert = https_server

    def fetch_as(host: str) -> None:
        fetch_to_file(
            f"https://{host}:{server.port}/app.tar.gz",
            dest,
            allow=frozenset({(host, server.port)}),
            max_bytes=100,
            timeout=5,
            resolver=resolving_to("127.0.0.1"),
        )

    # The system CA bundle does not know the test certificate.
    with pytest.raises(FetchError):
        fetch_as("archive.dockyard.invalid")

    monkeypatch.setattr(fetch, "_ssl_context", lambda: ssl.create_default_context(cafile=cert))
    fetch_as("archive.dockyard.invalid")
    assert dest.read_bytes() == b"over tls"

    # Same address, same trusted certificate, another name: verification is by name.
    with pytest.raises(FetchError):
        fetch_as("other.dockyard.invalid")


def test_https_never_redirects_down_to_http(
    https_server: tuple[_Server, pathlib.Path],
    server: _Server,
    dest: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls, cert = https_server
    host = "archive.dockyard.invalid"
    tls.routes["/down"] = redirect(server.url("/app.tar.gz", host=host))
    server.routes["/app.tar.gz"] = body(b"plain")
    monkeypatch.setattr(fetch, "_ssl_context", lambda: ssl.create_default_context(cafile=cert))

    with pytest.raises(FetchError):
        fetch_to_file(
            f"https://{host}:{tls.port}/down",
            dest,
            allow=frozenset({(host, tls.port), (host, server.port)}),
            max_bytes=100,
            timeout=5,
            resolver=resolving_to("127.0.0.1"),
        )

    assert [path for path, _ in tls.hits] == ["/down"]
    assert server.hits == []


# --------------------------------------------------------------------------- git


def _git(*args: str, cwd: pathlib.Path) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)
    return done.stdout.decode().strip()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A bare repository over dumb HTTP: v1 is tagged, main has moved on to version 2."""
    root = tmp_path_factory.mktemp("git")
    work = root / "work"
    work.mkdir()
    _git("init", "-q", "-b", "main", cwd=work)
    (work / "version").write_text("1\n")
    _git("add", "version", cwd=work)
    _git("commit", "-q", "-m", "one", cwd=work)
    _git("tag", "v1", cwd=work)
    first_commit = _git("rev-parse", "HEAD", cwd=work)
    (work / "version").write_text("2\n")
    _git("commit", "-q", "-am", "two", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(root / "served" / "buildpack.git"), cwd=root)
    _git("update-server-info", cwd=root / "served" / "buildpack.git")
    files = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(root / "served"))
    )
    files.daemon_threads = True
    with _serve(files):
        yield int(files.server_address[1]), first_commit


GIT_HOST = "buildpacks.dockyard.invalid"


def _clone(port: int, dest: pathlib.Path, suffix: str = "", **kwargs: object) -> None:
    clone_git(
        f"http://{GIT_HOST}:{port}/buildpack.git{suffix}",
        dest,
        allow=frozenset({(GIT_HOST, port)}),
        timeout=15,
        resolver=resolving_to("127.0.0.1"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_git_clone_is_pinned_to_the_checked_address(
    git_server: tuple[int, str], tmp_path: pathlib.Path
) -> None:
    port, _ = git_server
    # The .invalid host never resolves: git reached the server through curloptResolve.
    _clone(port, tmp_path / "buildpack")

    assert (tmp_path / "buildpack" / "version").read_text() == "2\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["buildpack"]


def test_git_clone_host_case_does_not_defeat_pinning(
    git_server: tuple[int, str], tmp_path: pathlib.Path
) -> None:
    port, _ = git_server
    clone_git(
        f"http://{GIT_HOST.upper()}:{port}/buildpack.git",
        tmp_path / "buildpack",
        allow=frozenset({(GIT_HOST, port)}),
        timeout=15,
        resolver=resolving_to("127.0.0.1"),
    )

    assert (tmp_path / "buildpack" / "version").read_text() == "2\n"


@pytest.mark.parametrize("how", ["fragment", "argument", "commit"])
def test_git_clone_checks_out_the_ref(
    how: str, git_server: tuple[int, str], tmp_path: pathlib.Path
) -> None:
    port, first_commit = git_server
    dest = tmp_path / "buildpack"
    if how == "fragment":
        _clone(port, dest, suffix="#v1")
    elif how == "argument":
        _clone(port, dest, ref="v1")
    else:
        _clone(port, dest, ref=first_commit)

    assert (dest / "version").read_text() == "1\n"


def test_git_clone_of_a_missing_ref_fails_cleanly(
    git_server: tuple[int, str], tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = git_server
    caplog.set_level(logging.INFO, logger=fetch.__name__)

    with pytest.raises(FetchError, match="with the ref 'v9'") as failed:
        _clone(port, tmp_path / "buildpack", suffix="?token=s3cr3t#v9")

    assert list(tmp_path.iterdir()) == []
    assert "git exited with status" in caplog.text
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in failed.value.message


def test_git_clone_of_a_slow_server_hits_the_time_cap(
    server: _Server, tmp_path: pathlib.Path
) -> None:
    server.routes["/slow.git/info/refs"] = _slow_headers
    started = time.monotonic()

    with pytest.raises(FetchError):
        clone_git(server.url("/slow.git"), tmp_path / "buildpack", allow=server.allow, timeout=0.5)

    assert time.monotonic() - started < 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/x", "-b", "a..b", "v1 v2", "v1\n"])
def test_git_ref_cannot_be_an_option_or_garbage(
    ref: str, git_server: tuple[int, str], tmp_path: pathlib.Path
) -> None:
    port, _ = git_server

    with pytest.raises(FetchError):
        _clone(port, tmp_path / "buildpack", ref=ref)

    assert list(tmp_path.iterdir()) == []


def test_git_clone_of_a_blocked_address_is_refused(
    git_server: tuple[int, str], tmp_path: pathlib.Path
) -> None:
    port, _ = git_server

    with pytest.raises(FetchError, match="could not be cloned"):
        clone_git(f"http://127.0.0.1:{port}/buildpack.git", tmp_path / "buildpack", timeout=5)
    with pytest.raises(FetchError):
        clone_git(
            "https://github.example/buildpack.git",
            tmp_path / "buildpack",
            timeout=5,
            resolver=resolving_to("169.254.169.254"),
        )
    with pytest.raises(FetchError):
        clone_git("ssh://git@github.com/x/y.git", tmp_path / "buildpack", timeout=5)

    assert list(tmp_path.iterdir()) == []


def test_git_does_not_follow_redirects(
    git_server: tuple[int, str], server: _Server, tmp_path: pathlib.Path
) -> None:
    port, _ = git_server
    server.routes["/moved.git/info/refs"] = redirect(
        f"http://127.0.0.1:{port}/buildpack.git/info/refs", 301
    )

    with pytest.raises(FetchError):
        clone_git(server.url("/moved.git"), tmp_path / "buildpack", allow=server.allow, timeout=5)

    assert [path for path, _ in server.hits][:1] == ["/moved.git/info/refs?service=git-upload-pack"]
