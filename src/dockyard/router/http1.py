"""HTTP/1.1 message heads, parsed by llhttp (httptools), with dockyard's rules on top.

The router finds where a head ends itself (client.py, upstream.py: CRLF CRLF, within the
size limit) and hands the whole head to a fresh llhttp parser, which checks the syntax:
token names, no whitespace before a colon, no folded lines, no bare CR or LF, a valid
method, URL and status, one well-formed Content-Length, a Transfer-Encoding that ends in
chunked and never next to a Content-Length. The rules below are dockyard's own: HTTP/1.0
or 1.1 only, exactly one Host, hop-by-hop headers dropped, the forwarding headers set.

Requests come from the internet, so their heads are checked the way request smuggling
needs, and the backend receives a head rebuilt from the validated fields: it can never
disagree with the router on where a body ends. Responses come from the app; the router
only reads what it needs to find where each one ends (status, Content-Length,
Transfer-Encoding, Connection) and forwards the head as the app sent it.

Bodies are not llhttp's job here: the router forwards them byte for byte as they stream
past (framing.py), and llhttp cannot say where in a piece of data a message ended.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from enum import Enum

import httptools

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than horizontal tab; CR and LF are among them, so a value that
# passes cannot end a line early for a more lenient parser downstream.
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9a-fA-F]{1,15}")
_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}
_EMPTY_LINE = b"\r\n"  # RFC 9112 2.2: empty lines before a request are ignored

# Hop-by-hop headers belong to one connection and are never forwarded (RFC 9110 7.6.1);
# the forwarding headers are set by the router itself because it is the front door.
_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
    }
)


# Request headers the router reads or replaces; every other line is forwarded untouched.
_NOTED = _DROPPED | {b"host", b"content-length", b"transfer-encoding", b"x-request-id"}


class BadMessage(Exception):
    """A head that cannot be forwarded safely; the message says why, for the 400 page."""


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes
    lines: list[bytes]  # validated end-to-end header lines, forwarded unchanged
    host: str
    content_length: int  # 0 when there is no body or when chunked
    chunked: bool
    keep_alive: bool
    upgrade: bytes | None  # the Upgrade value when the client asks to switch protocols
    forwarded_for: bytes | None
    has_request_id: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0


class Framing(Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"


@dataclass(slots=True)
class ResponseHead:
    status: int
    framing: Framing
    content_length: int
    close: bool  # the backend will close after this response
    raw: bytes


def parse_request(raw: bytes) -> RequestHead:
    """Parse a request head ending in CRLF CRLF (as read off the socket)."""
    scan = _RequestScan()
    parser = httptools.HttpRequestParser(scan)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass  # Upgrade or CONNECT: the head is complete, what follows is not HTTP
    except httptools.HttpParserError as exc:
        raise BadMessage(_reason(exc)) from None
    version = _VERSIONS.get(parser.get_http_version())
    if version is None:
        raise BadMessage("the HTTP version is not 1.0 or 1.1")
    method = parser.get_method()
    # llhttp lets extra spaces pass between the parts of the request line; a parser
    # downstream could read such a line differently, so only the plain form is taken.
    request_line = method + b" " + scan.target + b" " + version + b"\r\n"
    start = len(raw) - len(raw.lstrip(b"\r\n")) if raw[0] in _EMPTY_LINE else 0
    if not raw.startswith(request_line, start):
        raise BadMessage("the request line is malformed")
    if scan.hosts > 1:
        raise BadMessage("there is more than one Host header")
    if not scan.host:
        raise BadMessage("there is no Host header")
    content_length, chunked = _request_framing(scan.lengths, scan.codings)
    kept = scan.kept
    connection = scan.connection
    if connection and (extra := set(connection) - {b"close", b"keep-alive", b"upgrade", b""}):
        # Headers the client named in Connection are hop-by-hop too (RFC 9110 7.6.1).
        kept = [line for line in kept if line.partition(b":")[0].lower() not in extra]
    upgrade = scan.upgrade if b"upgrade" in connection else None
    return RequestHead(
        method=method,
        target=scan.target,
        version=version,
        lines=kept,
        host=scan.host.decode("latin-1"),
        content_length=content_length,
        chunked=chunked,
        keep_alive=version == b"HTTP/1.1" and b"close" not in connection,
        upgrade=upgrade or None,
        forwarded_for=scan.forwarded_for,
        has_request_id=scan.has_request_id,
    )


def _reason(exc: Exception) -> str:
    """llhttp's reason, as the end of a sentence ("Invalid header token" → "invalid ...")."""
    text = str(exc).replace("`", "") or "the head is malformed"
    return text[0].lower() + text[1:]


class _RequestScan:
    """llhttp's callbacks for a request head: what its framing, routing and forwarding
    headers say, sorted in one pass; every other header is kept to forward as it came."""

    __slots__ = (
        "codings",
        "connection",
        "forwarded_for",
        "has_request_id",
        "host",
        "hosts",
        "kept",
        "lengths",
        "target",
        "upgrade",
    )

    def __init__(self) -> None:
        self.target = b""
        self.kept: list[bytes] = []
        self.host: bytes | None = None
        self.hosts = 0  # checked after parsing: a callback's exception would lose its words
        self.lengths: set[bytes] = set()
        self.codings: list[bytes] = []
        self.connection: list[bytes] = []
        self.upgrade: bytes | None = None
        self.forwarded_for: bytes | None = None
        self.has_request_id = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower not in _NOTED:
            self.kept.append(name + b": " + value)
            return
        value = value.rstrip(b" \t")  # llhttp drops the leading whitespace only
        if lower in _DROPPED:
            self._hop_by_hop(lower, value)
            return
        if lower == b"host":
            self.hosts += 1
            self.host = value
        elif lower == b"content-length":
            self.lengths.add(value)
        elif lower == b"transfer-encoding":
            self.codings.extend(t.strip().lower() for t in value.split(b","))
        else:
            self.has_request_id = True
        self.kept.append(name + b": " + value)

    def _hop_by_hop(self, name: bytes, value: bytes) -> None:
        if name == b"connection":
            self.connection.extend(t.strip().lower() for t in value.split(b","))
        elif name == b"upgrade":
            self.upgrade = value
        elif name == b"x-forwarded-for":
            ff = self.forwarded_for
            self.forwarded_for = value if ff is None else ff + b", " + value


def _request_framing(lengths: set[bytes], codings: list[bytes]) -> tuple[int, bool]:
    if codings:
        if lengths:
            raise BadMessage("both Content-Length and Transfer-Encoding are set")
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise BadMessage("the Transfer-Encoding does not end in chunked")
        return 0, True
    if not lengths:
        return 0, False
    if len(lengths) != 1:
        raise BadMessage("Content-Length headers disagree")
    (length,) = lengths
    if _DIGITS.fullmatch(length) is None:
        raise BadMessage("the Content-Length is not a number")
    return int(length), False


def forward_head(
    req: RequestHead,
    *,
    client_ip: bytes,
    port: bytes,
    close: bool,
    request_id: bool = True,
    proto: bytes = b"http",
) -> bytes:
    """The head sent to the backend: validated lines plus the forwarding headers."""
    parts = [req.method + b" " + req.target + b" " + req.version, *req.lines]
    if req.upgrade is not None:
        parts.append(b"Connection: upgrade")
        parts.append(b"Upgrade: " + req.upgrade)
    elif close:
        parts.append(b"Connection: close")
    if req.forwarded_for is None:
        parts.append(b"X-Forwarded-For: " + client_ip)
    else:
        parts.append(b"X-Forwarded-For: " + req.forwarded_for + b", " + client_ip)
    parts.append(b"X-Forwarded-Proto: " + proto)
    parts.append(b"X-Forwarded-Host: " + req.host.encode("latin-1"))
    parts.append(b"X-Forwarded-Port: " + port)
    if request_id and not req.has_request_id:
        parts.append(b"X-Request-Id: " + _request_ids.next())
    parts.append(b"\r\n")
    return b"\r\n".join(parts)


class _RequestIds:
    """Unique request ids: a random per-process prefix and a counter.

    Ids only need to be unique, not secret; this saves a getrandom syscall per request.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def next(self) -> bytes:
        return f"{self._prefix}{next(self._count):016x}".encode()


_request_ids = _RequestIds()


def parse_response(raw: bytes, *, method: bytes) -> ResponseHead:
    """Parse a response head ending in CRLF CRLF; raises ``BadMessage`` if unusable."""
    scan = _ResponseScan()
    parser = httptools.HttpResponseParser(scan)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError as exc:
        # llhttp stops after the head of a 101 that has no Connection: upgrade; the head
        # itself was fine, and a 101 has no body to frame.
        if not (scan.complete and parser.get_status_code() == 101):
            raise BadMessage(_reason(exc)) from None
    version = parser.get_http_version()
    if version not in _VERSIONS:
        raise BadMessage("the HTTP version is not 1.0 or 1.1")
    status = parser.get_status_code()
    close = scan.close if scan.close is not None else version == "1.0"
    return ResponseHead(
        status, *_response_framing(status, method, scan.length, scan.coding, close), raw
    )


class _ResponseScan:
    """llhttp's callbacks for a response head: only what decides where it ends."""

    __slots__ = ("close", "coding", "complete", "length")

    def __init__(self) -> None:
        self.length: bytes | None = None
        self.coding: bytes | None = None
        self.close: bool | None = None  # None: the version's default
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length":
            self.length = value.rstrip(b" \t")
        elif lower == b"transfer-encoding":
            self.coding = value.rstrip(b" \t").lower()
        elif lower == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"close" in tokens:
                self.close = True
            elif b"keep-alive" in tokens and self.close is None:
                self.close = False

    def on_headers_complete(self) -> None:
        self.complete = True


def _response_framing(
    status: int, method: bytes, length: bytes | None, coding: bytes | None, close: bool
) -> tuple[Framing, int, bool]:
    """(framing, content length, backend closes after) per RFC 9112 6.3."""
    if method == b"HEAD" or status < 200 or status in (204, 304):
        return Framing.NONE, 0, close
    if coding is not None:
        # Transfer-Encoding overrides Content-Length; a non-chunked coding can only end
        # when the connection does, and a message with both leaves the connection suspect.
        if coding.endswith(b"chunked"):
            return Framing.CHUNKED, 0, close or length is not None
        return Framing.UNTIL_CLOSE, 0, True
    if length is not None:
        return Framing.LENGTH, int(length), close
    return Framing.UNTIL_CLOSE, 0, True


def with_connection_close(raw: bytes) -> bytes:
    """The response head ``raw`` telling the client this connection ends after it."""
    lines = raw[:-4].split(b"\r\n")
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.partition(b":")[0].lower() != b"connection"]
    kept.append(b"Connection: close\r\n\r\n")
    return b"\r\n".join(kept)


def chunk_size(line: bytes) -> int:
    """The size in a chunk-size line (``1a;ext=1\\r\\n``); extensions are kept as sent."""
    if _CTL.search(line, 0, len(line) - 2) is not None:
        raise BadMessage("a chunk size line contains control characters")
    digits = line[:-2].partition(b";")[0].rstrip(b" \t")
    if _HEX.fullmatch(digits) is None:
        raise BadMessage("a chunk size is not a hexadecimal number")
    return int(digits, 16)


def check_trailer(line: bytes) -> None:
    """A trailer line (or the final empty line) after the last chunk."""
    if line == b"\r\n":
        return
    name, colon, value = line[:-2].partition(b":")
    if not colon or _TOKEN.fullmatch(name) is None or _CTL.search(value) is not None:
        raise BadMessage("a trailer line is malformed")
