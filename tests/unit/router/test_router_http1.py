"""Request and response heads, and incremental body framing: pure, no sockets."""

from __future__ import annotations

import pytest

from dockyard.router.framing import ChunkedBody, LengthBody
from dockyard.router.http1 import (
    BadMessage,
    Framing,
    forward_head,
    parse_request,
    parse_response,
    with_connection_close,
)


def test_a_request_head_is_forwarded_without_hop_by_hop_headers() -> None:
    req = parse_request(
        b"GET /x?y=1 HTTP/1.1\r\nHost: web.localhost\r\nConnection: keep-alive, X-Hop\r\n"
        b"X-Hop: secret\r\nKeep-Alive: timeout=5\r\nAccept: */*\r\n\r\n"
    )
    head = forward_head(req, client_ip=b"10.0.0.1", port=b"8080", close=False)
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /x?y=1 HTTP/1.1"
    assert b"Host: web.localhost" in lines
    assert b"Accept: */*" in lines
    assert not any(
        line.lower().startswith((b"x-hop", b"keep-alive", b"connection")) for line in lines
    )
    assert b"X-Forwarded-For: 10.0.0.1" in lines
    assert head.endswith(b"\r\n\r\n")
    assert req.keep_alive and not req.has_body


def test_close_http10_and_upgrade_requests() -> None:
    closing = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert not closing.keep_alive
    assert b"Connection: close" in forward_head(closing, client_ip=b"i", port=b"1", close=True)
    assert not parse_request(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").keep_alive
    upgrade = parse_request(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert upgrade.upgrade == b"websocket"
    head = forward_head(upgrade, client_ip=b"i", port=b"1", close=False)
    assert b"Connection: upgrade\r\nUpgrade: websocket" in head
    # An Upgrade header that Connection does not name is just dropped.
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n").upgrade is None


def test_request_body_framing() -> None:
    sized = parse_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n")
    assert (sized.content_length, sized.chunked, sized.has_body) == (12, False, True)
    chunked = parse_request(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    )
    assert chunked.chunked and chunked.has_body


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n",
        # Even the same length twice (RFC 9110 8.6 allows either; llhttp refuses it).
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
        b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
)
def test_requests_a_backend_could_read_differently_are_refused(raw: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_request(raw)


@pytest.mark.parametrize(
    ("raw", "method", "framing", "length", "close"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"GET", Framing.LENGTH, 5, False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"HEAD", Framing.NONE, 0, False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET", Framing.NONE, 0, False),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", b"GET", Framing.NONE, 0, False),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET",
            Framing.CHUNKED,
            0,
            False,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", b"GET", Framing.UNTIL_CLOSE, 0, True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET",
            Framing.UNTIL_CLOSE,
            0,
            True,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            b"GET",
            Framing.LENGTH,
            1,
            True,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", b"GET", Framing.LENGTH, 1, True),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            b"GET",
            Framing.LENGTH,
            1,
            False,
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"GET",
            Framing.NONE,
            0,
            False,
        ),
    ],
)
def test_response_framing(
    raw: bytes, method: bytes, framing: Framing, length: int, close: bool
) -> None:
    resp = parse_response(raw, method=method)
    assert (resp.framing, resp.content_length, resp.close) == (framing, length, close)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\n",
        # RFC 9112 6.3: a message with both "ought to be handled as an error".
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
    ],
)
def test_unframeable_responses_are_refused(raw: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_response(raw, method=b"GET")


def test_with_connection_close_replaces_the_connection_header() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    assert with_connection_close(raw) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


def test_length_body_takes_only_its_bytes() -> None:
    body = LengthBody(5)
    assert body.feed(b"abc") == 3 and not body.done
    assert body.feed(b"deNEXT") == 2 and body.done


CHUNKED = b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: yes\r\n\r\n"


@pytest.mark.parametrize("piece", [1, 2, 7, len(CHUNKED)])
def test_chunked_body_finds_its_end_however_it_is_split(piece: int) -> None:
    body = ChunkedBody()
    data = CHUNKED + b"GET / HTTP/1.1\r\n"
    taken = 0
    for start in range(0, len(data), piece):
        if body.done:
            break
        taken += body.feed(data[start : start + piece])
    assert body.done
    assert taken == len(CHUNKED)


@pytest.mark.parametrize(
    "raw",
    [
        b"zz\r\n",
        b"3\nabc\r\n",
        b"3\r\nabcd\r\n",
        b"3 \x01\r\n",
        b"0\r\nBad Trailer\r\n",
        b"1" * 20 + b"\r\n",
    ],
)
def test_malformed_chunked_bodies_are_refused(raw: bytes) -> None:
    with pytest.raises(BadMessage):
        ChunkedBody().feed(raw)
