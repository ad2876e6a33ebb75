"""HTTP/1.1 message heads: strict parsing of requests, framing-only parsing of responses.

Requests come from the internet, so their heads are checked the way request smuggling
needs: one Content-Length or one chunked Transfer-Encoding (never both), no folded lines,
no bare CR or LF, no whitespace before a colon. The backend then receives a head rebuilt
from validated lines, so it can never disagree with the router on where a body ends.

Responses come from the app; the router only reads what it needs to find where each one
ends (status, Content-Length, Transfer-Encoding, Connection) and forwards the head as is.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from enum import Enum

_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP/1\.[01])")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than horizontal tab; CR and LF are among them, so a value that
# passes cannot end a line early for a more lenient parser downstream.
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_STATUS = re.compile(rb"[0-9]{3}(?: |\r\n)")
# Only the headers that decide where a response ends (matched in the lowercased head).
_FRAMING_FIELDS = re.compile(rb"\r\n(content-length|transfer-encoding|connection):[ \t]*([^\r\n]*)")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9a-fA-F]{1,15}")

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
    raw = raw.lstrip(b"\r\n")  # RFC 9112 2.2: ignore empty lines before a request
    line_end = raw.find(b"\r\n")
    match = _REQUEST_LINE.fullmatch(raw, 0, line_end)
    if match is None:
        raise BadMessage("the request line is malformed")
    # One C-level match checks every header line (token name, colon, no control
    # characters, CRLF endings), so the loop below only has to sort them.
    if _HEADER_LINES.fullmatch(raw, line_end + 2, len(raw) - 2) is None:
        raise BadMessage("a header line is malformed")
    method, target, version = match.groups()
    scan = _HeaderScan()
    kept = scan.kept
    for line in raw[line_end + 2 : -4].split(b"\r\n"):
        name = line[: line.index(b":")].lower()
        if name in _NOTED:
            scan.note(name, line)
        else:
            kept.append(line)
    if not scan.host:
        raise BadMessage("there is no Host header")
    content_length, chunked = _request_framing(scan.lengths, scan.codings)
    connection = scan.connection
    if connection and (extra := set(connection) - {b"close", b"keep-alive", b"upgrade", b""}):
        # Headers the client named in Connection are hop-by-hop too (RFC 9110 7.6.1).
        kept = [line for line in kept if line.partition(b":")[0].lower() not in extra]
    upgrade = scan.upgrade if b"upgrade" in connection else None
    return RequestHead(
        method=method,
        target=target,
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


class _HeaderScan:
    """What a request's framing, routing and forwarding headers say, in one pass."""

    __slots__ = (
        "codings",
        "connection",
        "forwarded_for",
        "has_request_id",
        "host",
        "kept",
        "lengths",
        "upgrade",
    )

    def __init__(self) -> None:
        self.kept: list[bytes] = []
        self.host: bytes | None = None
        self.lengths: set[bytes] = set()
        self.codings: list[bytes] = []
        self.connection: list[bytes] = []
        self.upgrade: bytes | None = None
        self.forwarded_for: bytes | None = None
        self.has_request_id = False

    def note(self, name: bytes, line: bytes) -> None:
        value = line[len(name) + 1 :].strip(b" \t")
        if name in _DROPPED:
            self._hop_by_hop(name, value)
            return
        if name == b"host":
            if self.host is not None:
                raise BadMessage("there is more than one Host header")
            self.host = value
        elif name == b"content-length":
            self.lengths.add(value)
        elif name == b"transfer-encoding":
            self.codings.extend(t.strip().lower() for t in value.split(b","))
        else:
            self.has_request_id = True
        self.kept.append(line)

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
    req: RequestHead, *, client_ip: bytes, port: bytes, close: bool, request_id: bool = True
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
    parts.append(b"X-Forwarded-Proto: http")
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
    if not raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) or _STATUS.match(raw, 9) is None:
        raise BadMessage("the status line is malformed")
    status = int(raw[9:12])
    close = raw[7] == 0x30  # HTTP/1.0: closes unless it says keep-alive
    length: bytes | None = None
    coding: bytes | None = None
    for name, value in _FRAMING_FIELDS.findall(raw.lower()):
        value = value.rstrip(b" \t")
        if name == b"content-length":
            if _DIGITS.fullmatch(value) is None or (length is not None and value != length):
                raise BadMessage("the Content-Length is not a single number")
            length = value
        elif name == b"transfer-encoding":
            coding = value
        else:
            tokens = {t.strip() for t in value.split(b",")}
            close = b"close" in tokens or (close and b"keep-alive" not in tokens)
    if _bare_line_ends(raw):
        # A client reading lone CR or LF as a line end would frame this response differently.
        raise BadMessage("the response head has a bare CR or LF")
    return ResponseHead(status, *_response_framing(status, method, length, coding, close), raw)


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


def _bare_line_ends(raw: bytes) -> bool:
    pairs = raw.count(b"\r\n")
    return raw.count(b"\n") != pairs or raw.count(b"\r") != pairs


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
